"""Map thumbnails: a PNG of a GeoParquet layer, drawn batch by batch so memory stays bounded."""

from __future__ import annotations

import math
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import shapely

from cng_assets.transforms.describe.common import BBOX, GEOMETRY
from cng_assets.transforms.product_files import ProductFiles, as_files

WKB_BYTES_PER_VERTEX = 16  # 2D
DPI = 100
BACKGROUND, FILL, EDGE, POINT = "#ffffff", "#6baed6", "#08519c", "#d94801"


# ---------------------------------------------------------------------------------------------------- thumbnail

def thumbnail(geoparquet: str | Path, out_png: str | Path, *, width_px: int = 800,
              max_vertices: int = 500_000) -> Path:
    """A PNG map of a GeoParquet layer, `width_px` wide, lon/lat (equirectangular, scaled by the cosine of the
    middle latitude), extent from the data. A layer whose data sit on both sides of the antimeridian with a
    wide empty gap elsewhere (Alaska and Guam, Fiji and New Zealand) is drawn across ±180° instead of world-wide.

    Bounded memory: the geometry column is read in batches of about `max_vertices` vertices (estimated from the
    footers' uncompressed sizes), each simplified to half a pixel and drawn into the canvas, then dropped.
    Parts smaller than a pixel are drawn as 3-pixel squares so small features stay visible.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.image import imsave

    pf = pq.ParquetFile(geoparquet, pre_buffer=False)
    (x0, y0, x1, y1), cut = _frame(pf, max_vertices)
    height_px, (x0, y0, x1, y1) = _canvas(x0, y0, x1, y1, width_px)
    fig = Figure(figsize=(width_px / DPI, height_px / DPI), dpi=DPI, facecolor=BACKGROUND)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_axis_off()
    ax.set_autoscale_on(False)
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    canvas.draw()  # the background; batches are then drawn on top with draw_artist (no re-render)
    pixel = (x1 - x0) / width_px
    for geoms in _geometry_batches(pf, max_vertices):
        for artist in _artists(geoms, pixel, cut, ax):
            ax.add_artist(artist)
            ax.draw_artist(artist)
            artist.remove()
    out_png = Path(out_png)
    imsave(out_png, np.asarray(canvas.buffer_rgba()).copy(), format="png")
    return out_png


def small_png(png: str | Path | BinaryIO, width_px: int = 240, colours: int = 32) -> bytes:
    """A few-KB copy of a map PNG (downscaled, palette colours): small enough to inline in an event log."""
    import io

    from PIL import Image

    with Image.open(png) as im:
        im = im.convert("RGB")
        im.thumbnail((width_px, width_px * 4))
        buf = io.BytesIO()
        im.quantize(colours).save(buf, format="png", optimize=True)
    return buf.getvalue()


def inline_pngs(markdown: str, root: str | Path | ProductFiles) -> str:
    """Markdown whose relative PNG images (files under `root`) are small inline copies: a preview that shows its
    maps where relative links cannot resolve (the Dagster UI)."""
    import base64
    import re

    files = as_files(root)

    def inline(m: re.Match) -> str:
        key = m.group(2)
        if key not in files.sizes:
            return m.group(0)
        with files.open(key) as png:
            return f"![{m.group(1)}](data:image/png;base64,{base64.b64encode(small_png(png)).decode()})"

    return re.sub(r"!\[([^\]]*)\]\(([^):\s]+\.png)\)", inline, markdown)


def _bbox_batches(pf: pq.ParquetFile, max_vertices: int):
    """(n, 4) arrays of feature bounds: from the `bbox` covering column, or from the geometry if there is none."""
    if BBOX in pf.schema_arrow.names:
        for batch in pf.iter_batches(batch_size=65_536, columns=[BBOX]):
            s = batch.column(0)
            yield np.column_stack([pc.struct_field(s, k).to_numpy(zero_copy_only=False).astype(float)
                                   for k in ("xmin", "ymin", "xmax", "ymax")])
    else:
        for geoms in _geometry_batches(pf, max_vertices):
            yield shapely.bounds(geoms)


def _frame(pf: pq.ParquetFile, max_vertices: int = 500_000) -> tuple[tuple[float, float, float, float], float | None]:
    """The data's lon/lat extent and, for data on both sides of ±180° with a wider gap elsewhere, the longitude
    west of which parts are moved east by 360° (None: no move). Reads only the bbox column."""
    lo, hi = np.array([np.inf, np.inf]), np.array([-np.inf, -np.inf])
    steps = np.zeros(361, np.int64)  # 1° longitude bins touched by features narrower than 180° (split ones are wider)
    for b in _bbox_batches(pf, max_vertices):
        b = b[np.isfinite(b).all(axis=1)]
        if not len(b):
            continue
        lo, hi = np.minimum(lo, b[:, :2].min(axis=0)), np.maximum(hi, b[:, 2:].max(axis=0))
        narrow = b[(b[:, 2] - b[:, 0]) <= 180]
        np.add.at(steps, np.clip(np.floor(narrow[:, 0] + 180), 0, 359).astype(int), 1)
        np.add.at(steps, np.clip(np.floor(narrow[:, 2] + 180), 0, 359).astype(int) + 1, -1)
    if not np.isfinite(lo).all():  # no features
        return (-180.0, -90.0, 180.0, 90.0), None
    occupied = np.cumsum(steps)[:360] > 0
    cut = None
    if hi[0] - lo[0] > 180 and occupied.any():
        first, last = np.flatnonzero(occupied)[[0, -1]]
        edge_gap = first + (359 - last)
        start, length = _largest_gap(occupied[first:last + 1])
        if length > max(edge_gap, 20):
            cut = -180.0 + first + start + length / 2
    if cut is None:
        return (float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])), None
    xlo, xhi = np.inf, -np.inf
    for b in _bbox_batches(pf, max_vertices):  # the extent after the move (cheap: the bbox column again)
        b = b[np.isfinite(b).all(axis=1)]
        middle = (b[:, 0] + b[:, 2]) / 2
        shift = np.where(middle < cut, 360.0, 0.0)
        narrow = (b[:, 2] - b[:, 0]) <= 180
        if narrow.any():
            xlo, xhi = min(xlo, (b[narrow, 0] + shift[narrow]).min()), max(xhi, (b[narrow, 2] + shift[narrow]).max())
    return (float(xlo), float(lo[1]), float(xhi), float(hi[1])), cut


def _largest_gap(occupied: np.ndarray) -> tuple[int, int]:
    """(start, length) of the longest run of False."""
    padded = np.concatenate([[True], occupied, [True]]).astype(np.int8)
    edges = np.diff(padded)
    starts, ends = np.flatnonzero(edges == -1), np.flatnonzero(edges == 1)
    if not len(starts):
        return 0, 0
    i = int(np.argmax(ends - starts))
    return int(starts[i]), int(ends[i] - starts[i])


def _canvas(x0: float, y0: float, x1: float, y1: float, width_px: int) -> tuple[int, tuple[float, float, float, float]]:
    """Image height and the padded extent, keeping lon/lat proportions (cos of the middle latitude)."""
    dx, dy = max(x1 - x0, 0.01), max(y1 - y0, 0.01)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    dx, dy = dx * 1.04, dy * 1.04
    k = max(math.cos(math.radians(cy)), 0.2)  # degrees of longitude per degree of latitude on screen
    ratio = dy / (dx * k)
    low, high = 0.25, 1.25
    if ratio > high:  # tall: widen
        dx = dy / (high * k)
    elif ratio < low:  # a thin band: heighten
        dy = low * dx * k
    height_px = max(1, round(width_px * min(max(ratio, low), high)))
    return height_px, (cx - dx / 2, cy - dy / 2, cx + dx / 2, cy + dy / 2)


def _geometry_batches(pf: pq.ParquetFile, max_vertices: int):
    """Geometry arrays of at most ~max_vertices vertices (rows per batch from the largest bytes-per-row of any row
    group, so a row group of big polygons is read in small batches)."""
    md = pf.metadata
    leaf = next((j for j in range(md.num_columns) if md.schema.column(j).path == GEOMETRY), None)
    per_row = 1.0
    for i in range(md.num_row_groups):
        rg = md.row_group(i)
        if rg.num_rows and leaf is not None:
            per_row = max(per_row, rg.column(leaf).total_uncompressed_size / rg.num_rows)
    rows = int(min(65_536, max(1, max_vertices * WKB_BYTES_PER_VERTEX // per_row)))
    for batch in pf.iter_batches(batch_size=rows, columns=[GEOMETRY]):
        geoms = shapely.from_wkb(batch.column(0).to_numpy(zero_copy_only=False))
        yield geoms[~(shapely.is_missing(geoms) | shapely.is_empty(geoms))]


def _artists(geoms: np.ndarray, pixel: float, cut: float | None, ax) -> list:
    from matplotlib.lines import Line2D
    from matplotlib.patches import PathPatch
    from matplotlib.path import Path as MplPath

    parts = shapely.get_parts(geoms)
    if not len(parts):
        return []
    if cut is not None:
        b = shapely.bounds(parts)
        move = (b[:, 0] + b[:, 2]) / 2 < cut
        parts[move] = shapely.transform(parts[move], lambda c: c + np.array([360.0, 0.0]))
    kinds = shapely.get_type_id(parts)
    points = parts[kinds == 0]
    rest = parts[kinds != 0]
    b = shapely.bounds(rest)
    tiny = ((b[:, 2] - b[:, 0]) < pixel) & ((b[:, 3] - b[:, 1]) < pixel)
    dots = np.column_stack([(b[tiny, 0] + b[tiny, 2]) / 2, (b[tiny, 1] + b[tiny, 3]) / 2])
    shapes = shapely.simplify(rest[~tiny], pixel / 2, preserve_topology=False)
    shapes = shapes[~shapely.is_empty(shapes)]
    kinds = shapely.get_type_id(shapes)
    out = []
    polygons = shapes[kinds == 3]
    if len(polygons):
        polygons = shapely.orient_polygons(polygons)  # counter-clockwise shells: holes stay holes (nonzero fill)
        _, coords, (rings, _) = shapely.to_ragged_array(polygons)
        out.append(PathPatch(_path(MplPath, coords, rings, closed=True), facecolor=FILL, edgecolor=EDGE,
                             linewidth=0.3, transform=ax.transData))
    lines = shapes[(kinds == 1) | (kinds == 2)]
    if len(lines):
        counts = shapely.get_num_coordinates(lines)
        starts = np.concatenate([[0], np.cumsum(counts)])
        out.append(PathPatch(_path(MplPath, shapely.get_coordinates(lines), starts, closed=False), fill=False,
                             edgecolor=EDGE, linewidth=0.8, transform=ax.transData))
    if len(dots):
        out.append(Line2D(dots[:, 0], dots[:, 1], linestyle="none", marker="s", markersize=3 * 72 / DPI,
                          markeredgewidth=0, color=EDGE, transform=ax.transData))
    if len(points):
        xy = shapely.get_coordinates(points)
        out.append(Line2D(xy[:, 0], xy[:, 1], linestyle="none", marker="o", markersize=3, markeredgewidth=0.3,
                          markeredgecolor="white", color=POINT, transform=ax.transData))
    return out


def _path(MplPath, coords: np.ndarray, starts: np.ndarray, *, closed: bool):
    codes = np.full(len(coords), MplPath.LINETO, dtype=MplPath.code_type)
    codes[starts[:-1][starts[:-1] < len(coords)]] = MplPath.MOVETO
    if closed:
        codes[starts[1:] - 1] = MplPath.CLOSEPOLY
    return MplPath(coords[:, :2], codes)


# ------------------------------------------------------------------------------------------------------ profiles



