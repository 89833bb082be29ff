"""The dataset's README.md: what it is (free text from the catalog entry), and facts read from the products
(layers, counts, sizes, columns, null shares, H3 settings and cell areas, provenance), map thumbnails, and
DuckDB example queries built from the real column names and real values.

Pure: takes facts and local paths, writes local files; knows nothing of Dagster or storage.

Memory: `thumbnail` streams the geometry column in batches of at most `max_vertices` (estimated from the
footers) and renders each batch into the Agg canvas before reading the next, so every feature is drawn and
no more than one batch is in memory. `column_profile` takes null shares from the Parquet footers (all rows)
and example values from the first `SAMPLE_ROWS` rows.
"""

from __future__ import annotations

import math
import re
from datetime import date, datetime
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from pathlib import Path

import h3
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import shapely

from cng_assets.transforms.facts import DatasetFacts, FileFacts, LayerFacts
from cng_assets.transforms.layers import DOMAIN_KEY_PREFIX

VERSION = "1"  # bump when the README or thumbnails change
SAMPLE_ROWS = 10_000  # rows read for example values
EXAMPLES = 3  # example values per column
FID, GEOMETRY, BBOX = "_cng_fid", "geometry", "bbox"
OWN_COLUMNS = {FID, GEOMETRY, BBOX}
HIVE = "hive_types = {'h0': 'UBIGINT'}"
WKB_BYTES_PER_VERTEX = 16  # 2D
DPI = 100
BACKGROUND, FILL, EDGE, POINT = "#ffffff", "#6baed6", "#08519c", "#d94801"
PRODUCTS = (("geoparquet", "GeoParquet"), ("pmtiles", "PMTiles"), ("hex", "H3 cells"), ("thumbnail", "map"))


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

Profile = dict[str, tuple[list, float | None]]  # column -> (example values, null share)


def column_profile(path: str | Path, columns: list[str] | None = None) -> Profile:
    """For each column (all when `columns` is None): up to EXAMPLES example values and the share of nulls.

    `path` is a Parquet file or a folder of them (a hex layer: its files in name order). Null shares count all
    rows, from the footers' statistics (from the sample for a column chunk without them). Example values come
    from the first SAMPLE_ROWS rows: the first value of every column is from one reference row (the first row
    with the most non-null values, preferring a feature narrower than 90° when there is a `bbox`), so
    first values can be combined in one query; the others are the most frequent in the sample. The geometry
    column's examples are its geometry types (from the GeoParquet metadata).
    """
    files = _parquet_files(Path(path))
    if not files:
        return {}
    schema = pq.read_schema(files[0])
    names = list(schema.names) if columns is None else list(columns)
    unknown = [c for c in names if c not in schema.names]
    if unknown:
        raise ValueError(f"{path}: no columns {unknown} (it has {schema.names})")
    nulls, rows, missing = _footer_nulls(files, names)
    readable = [c for c in names if c != GEOMETRY and not pa.types.is_binary(schema.field(c).type)
                and not pa.types.is_large_binary(schema.field(c).type)]
    sample = _sample(files, readable)
    ref = _reference_row(sample) if sample is not None and sample.num_rows else None
    out: Profile = {}
    for c in names:
        if c == GEOMETRY:
            examples = _geometry_types(files[0])
        elif c in readable and ref is not None:
            examples = _examples(sample.column(c), ref)
        else:
            examples = []
        if c in missing and sample is not None and sample.num_rows and c in readable:
            share = sample.column(c).null_count / sample.num_rows
        elif c in missing or not rows:
            share = None
        else:
            share = nulls[c] / rows
        out[c] = (examples, share)
    return out


def profile_products(facts: DatasetFacts, root: str | Path) -> dict[str, Profile]:
    """column_profile of every GeoParquet, table and hex product of `facts`, keyed by the product's key."""
    root = Path(root)
    return {f.key: column_profile(root / f.key.rstrip("/"))
            for x in [*facts.layers, *facts.tables] for kind, f in x.files.items() if kind in ("geoparquet", "table", "hex")}


def _parquet_files(path: Path) -> list[Path]:
    return sorted(path.rglob("*.parquet")) if path.is_dir() else [path]


def _footer_nulls(files: list[Path], names: list[str]) -> tuple[dict[str, int], int, set[str]]:
    nulls, rows, missing = dict.fromkeys(names, 0), 0, set()
    wanted = set(names)
    for f in files:
        md = pq.read_metadata(f)
        rows += md.num_rows
        for i in range(md.num_row_groups):
            rg = md.row_group(i)
            seen = set()
            for j in range(rg.num_columns):
                col = rg.column(j)
                top = col.path_in_schema.split(".")[0]
                if top not in wanted or top in seen:
                    continue  # a struct counts by its first leaf
                seen.add(top)
                stats = col.statistics
                if stats is None or not stats.has_null_count:
                    missing.add(top)
                else:
                    nulls[top] += stats.null_count
    return nulls, rows, missing


def _sample(files: list[Path], columns: list[str]) -> pa.Table | None:
    if not columns:
        return None
    batches, n = [], 0
    for f in files:
        for batch in pq.ParquetFile(f).iter_batches(batch_size=min(SAMPLE_ROWS, 8192), columns=columns):
            if batches and batch.schema != batches[0].schema:
                break  # a file typed differently (e.g. an all-null column): the sample stops before it
            batches.append(batch.slice(0, SAMPLE_ROWS - n))
            n += batches[-1].num_rows
            if n >= SAMPLE_ROWS:
                break
        if n >= SAMPLE_ROWS:
            break
    return pa.Table.from_batches(batches) if batches else None


def _reference_row(sample: pa.Table) -> int:
    valid = np.zeros(sample.num_rows, np.int64)
    for col in sample.columns:
        valid += col.is_valid().to_numpy(zero_copy_only=False).astype(np.int64)
    best = valid == valid.max()
    if BBOX in sample.column_names:
        b = sample.column(BBOX).combine_chunks()
        width = (pc.struct_field(b, "xmax").to_numpy(zero_copy_only=False)
                 - pc.struct_field(b, "xmin").to_numpy(zero_copy_only=False))
        if (best & (width <= 90)).any():
            best &= width <= 90
    return int(np.flatnonzero(best)[0])


def _examples(col: pa.ChunkedArray, ref: int) -> list:
    out = [] if not col[ref].is_valid else [col[ref].as_py()]
    t = col.type
    try:
        if pa.types.is_nested(t) or pa.types.is_dictionary(t):
            raise pa.ArrowNotImplementedError("no value_counts")
        counts = pc.value_counts(col.drop_null())
        order = np.argsort(-counts.field("counts").to_numpy(), kind="stable")
        candidates = counts.field("values").take(pa.array(order[: EXAMPLES + 1])).to_pylist() if len(order) else []
    except (pa.ArrowNotImplementedError, pa.ArrowTypeError):
        candidates = col.drop_null().slice(0, 1000).to_pylist()
    for v in candidates:
        if len(out) >= EXAMPLES:
            break
        if v not in out:
            out.append(v)
    return out


def _geometry_types(path: Path) -> list:
    import json

    geo = pq.read_metadata(path).metadata or {}
    try:
        return list(json.loads(geo[b"geo"])["columns"][GEOMETRY]["geometry_types"])
    except (KeyError, ValueError, TypeError):
        return []


# ------------------------------------------------------------------------------------------------------ queries

_RESERVED: set[str] | None = None


def _reserved() -> set[str]:
    global _RESERVED
    if _RESERVED is None:
        import duckdb

        con = duckdb.connect()
        try:
            _RESERVED = {r[0] for r in con.execute(
                "SELECT keyword_name FROM duckdb_keywords() WHERE keyword_category = 'reserved'").fetchall()}
        finally:
            con.close()
    return _RESERVED


def _ident(name: str) -> str:
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) and name.lower() not in _reserved():
        return name
    return '"' + name.replace('"', '""') + '"'


def _str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _literal(v) -> str | None:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float) and math.isfinite(v):
        return repr(v)
    if isinstance(v, str):
        return _str(v)
    return None


def _read(base: str, key: str) -> str:
    return f"read_parquet({_str(base + key)})"


def _read_hex(base: str, key: str) -> str:
    return f"read_parquet({_str(base + key + '*/*.parquet')}, {HIVE})"


def _type_is_text(t: str) -> bool:
    return t in ("string", "large_string", "utf8", "large_utf8") or t.startswith("dictionary<values=string")


def _domain_join(col: str, col_type: str, alias_t: str, alias_d: str) -> str:
    c = f"{alias_t}.{_ident(col)}"
    if _type_is_text(col_type):
        return f"{alias_d}.code = {c}"
    if re.fullmatch(r"u?int(8|16|32|64)", col_type):
        return f"TRY_CAST({alias_d}.code AS BIGINT) = {c}"
    if col_type in ("double", "float", "halffloat") or col_type.startswith("decimal"):
        return f"TRY_CAST({alias_d}.code AS DOUBLE) = {c}"
    return f"{alias_d}.code = CAST({c} AS VARCHAR)"


def _domain_tables(facts: DatasetFacts) -> dict[str, LayerFacts]:
    """Coded-value domain name -> its table's facts."""
    return {t.name: t for t in facts.tables if t.slug.startswith(DOMAIN_KEY_PREFIX) and "table" in t.files}


def _first(profile: Profile, col: str):
    examples = profile.get(col, ([], None))[0]
    return examples[0] if examples else None


def _filter_column(x: LayerFacts, profile: Profile, domains: dict[str, LayerFacts]) -> str | None:
    """A text or coded column with a value in the reference row: coded first, then documented ones."""
    usable = []
    for i, c in enumerate(x.columns):
        if c.name in OWN_COLUMNS or not (_type_is_text(c.type) or (c.domain in domains)):
            continue
        value = _first(profile, c.name)
        if profile and (_literal(value) is None or (isinstance(value, str) and not value.strip())):
            continue
        usable.append((c.domain not in domains, not c.description, i, c.name))
    return min(usable)[3] if usable else None


def _shown_columns(x: LayerFacts, first: str | None, available: list[str] | None = None, n: int = 3) -> list[str]:
    names = [c.name for c in x.columns if c.name not in OWN_COLUMNS and c.name != first
             and (available is None or c.name in available)]
    documented = [c.name for c in x.columns if c.description and c.name in names]
    chosen = (documented + [c for c in names if c not in documented])[:n]
    return ([first] if first else []) + [c for c in names if c in chosen]


def _window(profile: Profile, layer_bbox: list[float] | None) -> tuple[list[str], bool, Decimal] | None:
    """A lon/lat window around the reference feature's bbox (else the layer's: the bool says which), rounded
    outward in decimal arithmetic so that the rounded literals never cut into the box; a point gets one step
    around it."""
    ref = _first(profile, BBOX)
    if isinstance(ref, dict) and all(isinstance(ref.get(k), (int, float)) for k in ("xmin", "ymin", "xmax", "ymax")):
        b, feature = [ref["xmin"], ref["ymin"], ref["xmax"], ref["ymax"]], True
    elif layer_bbox:
        b, feature = list(layer_bbox[:4]), False
    else:
        return None
    step = Decimal("0.1") if max(b[2] - b[0], b[3] - b[1]) >= 1 else Decimal("0.01")
    lo = [Decimal(repr(float(v))).quantize(step, rounding=ROUND_FLOOR) for v in b[:2]]
    hi = [Decimal(repr(float(v))).quantize(step, rounding=ROUND_CEILING) for v in b[2:]]
    for i in (0, 1):
        if lo[i] == hi[i]:
            lo[i], hi[i] = lo[i] - step, hi[i] + step
    lo = [max(lo[0], Decimal(-180)), max(lo[1], Decimal(-90))]
    hi = [min(hi[0], Decimal(180)), min(hi[1], Decimal(90))]
    return [str(v) for v in (*lo, *hi)], feature, step


def _label(x: LayerFacts, profile: Profile, first: str | None) -> str:
    """The reference feature's text values, e.g. "name 'Chile', continent 'South America'"."""
    names = [c.name for c in x.columns if c.name not in OWN_COLUMNS and _type_is_text(c.type)]
    names = sorted(names, key=lambda n: (n != first, "name" not in n.lower(), names.index(n)))
    parts = [f"{n} {_first(profile, n)!r}" for n in names
             if isinstance(_first(profile, n), str) and _first(profile, n).strip()][:2]
    return ", ".join(parts)


def _area_km2(res: int) -> float:
    return h3.average_hexagon_area(res, unit="km^2")


def example_queries(facts: DatasetFacts, base: str, profiles: dict[str, Profile] | None = None) -> list[tuple[str, str]]:
    """(title, SQL) pairs for DuckDB, reading products from `base` + key (a URL prefix or a folder ending in '/',
    or '' for paths relative to the dataset folder). Literals (attribute values, a window, a feature id, a cell)
    come from `profiles` (profile_products); without them, scalar subqueries pick real values instead."""
    profiles = profiles or {}
    domains = _domain_tables(facts)
    queries: list[tuple[str, str]] = []
    for x in facts.layers:
        gp = x.files.get("geoparquet")
        if gp is None or not x.rows:
            continue
        prof = profiles.get(gp.key, {})
        src = _read(base, gp.key)
        col = _filter_column(x, prof, domains)
        shown = _shown_columns(x, col)
        types = {c.name: c.type for c in x.columns}
        where, notes = [], []
        if col is not None:
            value = _literal(_first(prof, col)) if prof else None
            if value is None:
                value = f"(SELECT {_ident(col)} FROM {src} WHERE {_ident(col)} IS NOT NULL LIMIT 1)"
            where.append(f"{_ident(col)} = {value}")
        window = _window(prof, x.bbox)
        fid = _first(prof, FID)
        label = _label(x, prof, col)
        if window is not None:
            (w0, s0, e0, n0), feature, step = window
            where += [f"bbox.xmin <= {e0} AND bbox.xmax >= {w0}", f"bbox.ymin <= {n0} AND bbox.ymax >= {s0}"]
            if feature and isinstance(fid, int):
                notes.append(f"-- window ({w0}, {s0}) to ({e0}, {n0}): around the bounding box of _cng_fid {fid}"
                             + (f" ({label})" if label else "") + f", rounded outward to {step}°")
            else:
                notes.append(f"-- window ({w0}, {s0}) to ({e0}, {n0}): the layer's bounding box, rounded outward")
            notes.append("-- bbox tests are coarse (boxes, not shapes); row groups whose bbox statistics miss the "
                         "window are skipped")
        about = f"{col} = {_literal(_first(prof, col))}" if col and prof and _literal(_first(prof, col)) else ""
        title = f"{x.name}: features" + (f" with {about}" if about else "") + " in a lon/lat window (`bbox` column)"
        queries.append((title, "\n".join([
            *notes,
            f"SELECT {', '.join(_ident(c) for c in [FID, *shown])}",
            f"FROM {src}",
            *([f"WHERE {where[0]}"] + [f"  AND {w}" for w in where[1:]] if where else []),
            f"ORDER BY {FID}",
            "LIMIT 100",
        ])))
        queries += _domain_queries(x, gp, base, domains, types)
        if x.hex is not None and "hex" in x.files:
            queries += _hex_queries(x, base, profiles, col, fid, prof, domains, types, facts.dataset.h3.attributes)
    for t in facts.tables:
        if t.slug.startswith(DOMAIN_KEY_PREFIX) or "table" not in t.files or not t.rows:
            continue
        queries.append((f"{t.name}: the first rows of the table",
                        f"SELECT *\nFROM {_read(base, t.files['table'].key)}\nLIMIT 10"))
        queries += _domain_queries(t, t.files["table"], base, domains, {c.name: c.type for c in t.columns})
    return queries


def _domain_queries(x: LayerFacts, f: FileFacts, base: str, domains: dict[str, LayerFacts],
                    types: dict[str, str]) -> list[tuple[str, str]]:
    coded = [c for c in x.columns if c.domain in domains and domains[c.domain].rows][:3]
    if not coded:
        return []
    select = [f"t.{FID}"] if any(c.name == FID for c in x.columns) else []
    joins = []
    for i, c in enumerate(coded, 1):
        select += [f"t.{_ident(c.name)}", f"d{i}.label AS {_ident(c.name + '_label')}"]
        joins.append(f"LEFT JOIN {_read(base, domains[c.domain].files['table'].key)} AS d{i}\n"
                     f"  ON {_domain_join(c.name, types[c.name], 't', f'd{i}')}")
    names = ", ".join(c.name for c in coded)
    return [(f"{x.name}: labels of the coded columns {names} (FileGDB coded-value domains)",
             "\n".join(["SELECT " + ",\n       ".join(select), f"FROM {_read(base, f.key)} AS t", *joins, "LIMIT 10"]))]


def _hex_queries(x: LayerFacts, base: str, profiles: dict[str, Profile], col: str | None, fid, prof: Profile,
                 domains: dict[str, LayerFacts], types: dict[str, str], setting: str | list[str]) -> list[tuple[str, str]]:
    hx, key = x.hex, x.files["hex"].key
    hprof = profiles.get(key, {})
    src = _read_hex(base, key)
    cell = f"h{hx.resolution}"
    attributes = _hex_attributes(x, hprof, setting)
    area = _area_km2(hx.resolution)
    digits = max(1, math.ceil(-math.log10(area)) + 1)
    out = []
    # cells and area per attribute value (join-free: hex rows carry the attributes)
    group = col if col in attributes else next((c for c in attributes if _type_is_text(types.get(c, ""))), None)
    area_note = (f"-- {area:.6g} km² is the average area of a resolution-{hx.resolution} cell; cells of overlapping "
                 "features count once per group")
    if group is not None:
        column = next(c for c in x.columns if c.name == group)
        if column.domain in domains and domains[column.domain].rows:
            d = domains[column.domain].files["table"].key
            sql = "\n".join([
                area_note,
                f"SELECT h.{_ident(group)}, d.label, count(DISTINCT h.{cell}) AS cells,",
                f"       round(count(DISTINCT h.{cell}) * {area:.6g}, {digits}) AS approx_km2",
                f"FROM {src} AS h",
                f"LEFT JOIN {_read(base, d)} AS d ON {_domain_join(group, types[group], 'h', 'd')}",
                "GROUP BY ALL",
                "ORDER BY cells DESC",
            ])
        else:
            sql = "\n".join([
                area_note,
                f"SELECT {_ident(group)}, count(DISTINCT {cell}) AS cells,",
                f"       round(count(DISTINCT {cell}) * {area:.6g}, {digits}) AS approx_km2",
                f"FROM {src}",
                f"GROUP BY {_ident(group)}",
                "ORDER BY cells DESC",
            ])
        out.append((f"{x.name}: H3 cells and approximate area per {group}", sql))
    else:
        out.append((f"{x.name}: the features with the most H3 cells", "\n".join([
            area_note.split(";")[0],
            f"SELECT {FID}, count(*) AS cells, round(count(*) * {area:.6g}, {digits}) AS approx_km2",
            f"FROM {src}",
            f"GROUP BY {FID}",
            "ORDER BY cells DESC",
            "LIMIT 10",
        ])))
    # the cells of one feature
    if isinstance(fid, int):
        label = _label(x, prof, col)
        note = [f"-- _cng_fid {fid}: {label}"] if label else []
        fid_sql = str(fid)
    else:
        note, fid_sql = [], f"(SELECT min({FID}) FROM {_read(base, x.files['geoparquet'].key)})"
    out.append((f"{x.name}: the H3 cells of one feature", "\n".join([
        *note,
        f"SELECT {', '.join(_ident(c) for c in hx.columns)}",
        f"FROM {src}",
        f"WHERE {FID} = {fid_sql}",
        f"ORDER BY {cell}",
    ])))
    # which features cover a place's cell
    shown = _shown_columns(x, None, attributes)
    value = _first(hprof, cell)
    if isinstance(value, int):
        h0 = h3.str_to_int(h3.cell_to_parent(h3.int_to_str(value), 0))  # the h0= folder (a column only if 0 is a parent)
        lat, lng = h3.cell_to_latlng(h3.int_to_str(value))
        note = [f"-- {value} (H3 {h3.int_to_str(value)}): the resolution-{hx.resolution} cell whose centre is "
                f"{abs(lat):.4f}°{'N' if lat >= 0 else 'S'}, {abs(lng):.4f}°{'E' if lng >= 0 else 'W'}",
                f"-- h0 = {h0}, its resolution-0 parent: DuckDB reads only that h0= folder"]
        where = f"WHERE h0 = {h0} AND {cell} = {value}"
    else:
        note, where = [], f"WHERE {cell} = (SELECT min({cell}) FROM {src})"
    out.append((f"{x.name}: which features cover a place (its resolution-{hx.resolution} cell)", "\n".join([
        *note,
        f"SELECT {', '.join(_ident(c) for c in [FID, *shown])}",
        f"FROM {src}",
        where,
    ])))
    return out


def _hex_attributes(x: LayerFacts, hprof: Profile, setting: str | list[str]) -> list[str]:
    """Attribute columns in the hex files: from their schema when profiled, else from the catalog's setting."""
    if hprof:
        cells = set(x.hex.columns) | {FID} if x.hex else {FID}
        return [c for c in hprof if c not in cells]
    names = [c.name for c in x.columns if c.name not in OWN_COLUMNS]
    return names if setting == "all" else [] if setting == "none" else [c for c in names if c in setting]


# ------------------------------------------------------------------------------------------------------- README

def dataset_readme(facts: DatasetFacts, profiles: dict[str, Profile] | None, run_id: str | None) -> str:
    """The dataset's README.md. Free text (title, description, citation, column descriptions) comes from the
    catalog entry; everything else from `facts` and `profiles` (profile_products). Links are the facts' hrefs
    (relative when the facts were gathered with href_base ''), and so are the paths in the example queries."""
    ds, profiles = facts.dataset, profiles or {}
    base = _href_base(facts)
    domains = _domain_tables(facts)
    md: list[str] = [f"# {ds.title}", ""]
    if ds.description.strip():
        md += [" ".join(ds.description.split()), ""]
    md += _about(facts)
    md += _layers_table(facts, domains, profiles)
    for x in facts.layers:
        md += _layer_section(x, profiles, domains, ds.h3.attributes)
    plain = [t for t in facts.tables if not t.slug.startswith(DOMAIN_KEY_PREFIX)]
    for t in plain:
        md += _table_section(t, profiles, domains)
    if domains:
        md += _domains_section(facts, domains)
    if any(x.hex for x in facts.layers):
        md += _h3_section(facts)
    md += _queries_section(facts, base, profiles)
    md += _provenance(facts, run_id)
    return "\n".join(md).rstrip() + "\n"


def _href_base(facts: DatasetFacts) -> str:
    for x in [*facts.layers, *facts.tables]:
        for f in x.files.values():
            if f.href.endswith(f.key):
                return f.href[: len(f.href) - len(f.key)]
    return ""


def _size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def _cell(text: str) -> str:
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").replace("\r", " ")


def _code(text: str) -> str:
    return "`" + str(text).replace("`", "'") + "`"


def _value(v) -> str:
    if v is None:
        return "null"
    if isinstance(v, float):
        return str(int(v)) if v.is_integer() and abs(v) < 1e15 else f"{v:.6g}"
    if isinstance(v, dict):
        return "(" + ", ".join(_value(x) for x in v.values()) + ")"
    if isinstance(v, (datetime, date)):
        return v.isoformat()
    if isinstance(v, Decimal):
        return str(v)
    if isinstance(v, bytes):
        return "(binary)"
    text = str(v)
    if not text.strip():
        return repr(text)
    return text if len(text) <= 40 else text[:39] + "…"


def _share(s: float | None) -> str:
    if s is None:
        return "—"
    if s == 0:
        return "0%"
    if s == 1:
        return "100%"
    return "<0.1%" if s < 0.001 else ">99.9%" if s > 0.999 else f"{100 * s:.1f}%"


def _link(f: FileFacts | None, text: str) -> str:
    return "" if f is None else f"[{text}]({f.href}) ({_size(f.size)})"


def _about(facts: DatasetFacts) -> list[str]:
    ds = facts.dataset
    rows = [("Source", _code(ds.source)), ("Licence", ds.license)]
    if ds.citation:
        rows.append(("Citation", " ".join(ds.citation.split())))
    if ds.doi:
        rows.append(("DOI", f"[{ds.doi}](https://doi.org/{ds.doi})"))
    when = ds.datetime or (f"{ds.start_datetime or '…'} to {ds.end_datetime or '…'}"
                           if ds.start_datetime or ds.end_datetime else None)
    if when:
        rows.append(("Time", when))
    if ds.providers:
        rows.append(("Providers", "; ".join(
            (f"[{p.name}]({p.url})" if p.url else p.name) + (f" ({', '.join(p.roles)})" if p.roles else "")
            for p in ds.providers)))
    if ds.keywords:
        rows.append(("Keywords", ", ".join(ds.keywords)))
    rows.append(("Catalog entry", f"{_code(ds.name)}: the title, description, licence, citation, providers, "
                                  "keywords and column descriptions here come from it; edit them there and "
                                  "regenerate this file"))
    md = ["| | |", "|---|---|", *[f"| {k} | {_cell(v)} |" for k, v in rows], ""]
    if facts.layers:
        md += ["Spatial layers are GeoParquet 1.1 in EPSG:4326 (lon/lat), 2D, with a `_cng_fid` row id (the "
               "feature's 1-based position in the source layer) and a `bbox` covering column, in Hilbert order.", ""]
    return md


def _geometry(x: LayerFacts, profiles: dict[str, Profile]) -> str:
    gp = x.files.get("geoparquet")
    types = profiles.get(gp.key, {}).get(GEOMETRY, ([], None))[0] if gp else []
    return ", ".join(types) if types else (x.geometry_type or "")


def _features(x: LayerFacts) -> str:
    if x.rows == x.source_features:
        return f"{x.rows:,}"
    return (f"{x.rows:,} (of {x.source_features:,} in the source: {x.source_features - x.rows:,} dropped for null, "
            "empty or unrepairable geometry)")


def _layers_table(facts: DatasetFacts, domains: dict[str, LayerFacts], profiles: dict[str, Profile]) -> list[str]:
    md = ["## Layers", ""]
    if facts.layers:
        md += ["| layer | slug | features | geometry | products |", "|---|---|---|---|---|"]
        for x in facts.layers:
            links = [_link(x.files.get(k), t) for k, t in PRODUCTS]
            md.append(f"| {_cell(x.name)} | {_code(x.slug)} | {_features(x)} | {_cell(_geometry(x, profiles))} | "
                      f"{' · '.join(x for x in links if x)} |")
        md.append("")
    plain = [t for t in facts.tables if not t.slug.startswith(DOMAIN_KEY_PREFIX)]
    if plain:
        md += ["Non-spatial tables:", "", "| table | slug | rows | columns | product |", "|---|---|---|---|---|"]
        for t in plain:
            md.append(f"| {_cell(t.name)} | {_code(t.slug)} | {t.rows:,} | {len(t.columns)} | "
                      f"{_link(t.files.get('table'), 'Parquet')} |")
        md.append("")
    if domains:
        md += [f"{len(domains)} FileGDB coded-value domains are lookup tables (`code`, `label`): see "
               "[Coded-value domains](#coded-value-domains).", ""]
    return md


def _dictionary(x: LayerFacts, profile: Profile, domains: dict[str, LayerFacts]) -> list[str]:
    md = ["| column | type | description | examples | nulls |", "|---|---|---|---|---|"]
    for c in x.columns:
        desc = c.description or ""
        if c.domain:
            d = domains.get(c.domain)
            where = f"[{c.domain}]({d.files['table'].href}), {d.rows:,} codes" if d else _code(c.domain)
            desc = (desc + " " if desc else "") + f"Coded values: domain {where}."
        examples, share = profile.get(c.name, ([], None))
        ex = ", ".join(_code(_value(v)) for v in examples)
        md.append(f"| {_code(c.name)} | {_cell(_code(c.type))} | {_cell(desc) or '—'} | {_cell(ex) or '—'} | "
                  f"{_share(share) if profile else '—'} |")
    return md


def _sample_note(rows: int, profile: Profile, spatial: bool) -> str:
    if not profile:
        return "Not profiled: no example values or null shares."
    if rows > SAMPLE_ROWS:
        where = "; the file is in Hilbert order, so they come from one region" if spatial else ""
        return (f"Examples: from the first {SAMPLE_ROWS:,} of {rows:,} rows (a sample{where}). "
                "Nulls: share of all rows, from the Parquet footers.")
    if not rows:
        return "No rows."
    return f"Examples: from all {rows:,} rows. Nulls: share of all rows, from the Parquet footers."


def _layer_section(x: LayerFacts, profiles: dict[str, Profile], domains: dict[str, LayerFacts],
                   setting: str | list[str]) -> list[str]:
    gp = x.files.get("geoparquet")
    prof = profiles.get(gp.key, {}) if gp else {}
    md = [f"## {x.name}", ""]
    if "thumbnail" in x.files:
        md += [f"![Map of {x.name}]({x.files['thumbnail'].href})", ""]
    facts_line = [f"{_code(x.slug)}", f"{_features(x)} feature{'' if x.rows == 1 else 's'}",
                  _geometry(x, profiles) or "no geometry type"]
    if x.bbox:
        w, s, e, n = x.bbox[:4]
        facts_line.append(f"extent {w:.4f}, {s:.4f} to {e:.4f}, {n:.4f} (lon, lat)")
    md += [" · ".join(facts_line), ""]
    md += [f"Products: {' · '.join(_link(x.files[k], t) for k, t in PRODUCTS if k in x.files)}", ""]
    md += _dictionary(x, prof, domains) + ["", _sample_note(x.rows, prof, True), ""]
    if x.hex and "hex" in x.files:
        hx, f = x.hex, x.files["hex"]
        attrs = _hex_attributes(x, profiles.get(f.key, {}), setting)
        md += [f"H3 cells: {_link(f, _code(f.key))}: {hx.rows:,} rows (one per feature and cell) in "
               f"{hx.h0_partitions:,} `h0=` partitions, resolution {hx.resolution}; columns "
               f"{', '.join(_code(c) for c in [FID, *hx.columns])}"
               + (f", then the attributes {', '.join(_code(a) for a in attrs)}." if attrs else
                  "; no attributes (join the GeoParquet on `_cng_fid`)."), ""]
    return md


def _table_section(t: LayerFacts, profiles: dict[str, Profile], domains: dict[str, LayerFacts]) -> list[str]:
    f = t.files.get("table")
    prof = profiles.get(f.key, {}) if f else {}
    return [f"## {t.name} (table)", "", f"{_code(t.slug)} · {t.rows:,} rows · {_link(f, 'Parquet')}", "",
            *_dictionary(t, prof, domains), "", _sample_note(t.rows, prof, False), ""]


def _domains_section(facts: DatasetFacts, domains: dict[str, LayerFacts]) -> list[str]:
    used: dict[str, list[str]] = {}
    for x in [*facts.layers, *facts.tables]:
        for c in x.columns:
            if c.domain:
                used.setdefault(c.domain, []).append(f"{x.slug}.{c.name}")
    md = ["## Coded-value domains", "",
          "FileGDB coded-value domains, each a Parquet table of `code` (text) and `label`. Join a coded column to "
          "`code` (cast the code to the column's type).", "",
          "| domain | codes | used by | product |", "|---|---|---|---|"]
    for name, d in sorted(domains.items(), key=lambda kv: kv[0].lower()):
        md.append(f"| {_cell(name)} | {d.rows:,} | {', '.join(_code(u) for u in used.get(name, [])) or '—'} | "
                  f"{_link(d.files['table'], 'Parquet')} |")
    return md + [""]


def _area(res: int) -> str:
    m2 = h3.average_hexagon_area(res, unit="m^2")
    return f"{m2:,.1f} m² ({m2 / 1e6:,.4f} km²)" if m2 < 1e8 else f"{m2:,.0f} m² ({m2 / 1e6:,.1f} km²)"


def _h3_section(facts: DatasetFacts) -> list[str]:
    s = facts.dataset.h3
    res = [s.resolution, *s.parents]
    if s.containment == "center":
        rule = ("**Containment: centre.** A cell belongs to a feature when the cell's centre is inside the feature "
                "(H3's standard rule, the same cells as h3-py's `polygon_to_cells`). **Small parts:** a polygon part "
                "that contains no cell centre still gets one cell, the cell of a point on its surface, unless that "
                "cell's centre is inside another part of the same feature (which then already has it). So every "
                "feature and every part has at least one cell, and a feature smaller than a cell counts as a whole "
                "cell.")
    else:
        rule = ("**Containment: overlap.** A cell belongs to a feature when the cell's hexagon touches the feature, "
                "so every feature has at least one cell and cell counts overstate areas along the edges.")
    md = ["## H3 grid", "", rule, "",
          f"Each hex row is one (feature, cell) pair: `_cng_fid`, the cell `h{s.resolution}`, its parents "
          f"{', '.join(_code(f'h{p}') for p in s.parents)}, then the layer's attributes chosen by "
          f"the catalog's `h3.attributes` ({_cell(_attributes(s.attributes))}). A cell shared by "
          "overlapping features appears once per feature: count `DISTINCT` cells for areas. Cell ids are H3 "
          "indexes as unsigned 64-bit integers (UBIGINT); `h3.int_to_str` gives the usual hex-string form.", "",
          "Files: `hex/<layer>/h0=<resolution-0 cell>/part-<first cell>.parquet`, sorted by cell inside each "
          "folder. Read them with `read_parquet('hex/<layer>/*/*.parquet', hive_types = {'h0': 'UBIGINT'})`: "
          "DuckDB would otherwise type the `h0=` folder names as BIGINT; a filter on `h0` then reads only that "
          "folder.", "",
          "| resolution | column | average cell area | average edge length |", "|---|---|---|---|"]
    for r in res:
        md.append(f"| {r} | `h{r}` | {_area(r)} | {h3.average_hexagon_edge_length(r, unit='m'):,.1f} m |")
    md += ["", "Areas are H3's averages at each resolution (`h3.average_hexagon_area`); real cells vary with "
           "their position on the grid.", ""]
    return md


def _queries_section(facts: DatasetFacts, base: str, profiles: dict[str, Profile]) -> list[str]:
    queries = example_queries(facts, base, profiles)
    if not queries:
        return []
    md = ["## Example queries (DuckDB)", ""]
    if base.startswith(("http://", "https://")):
        md += [f"The queries read the products from `{base}`. DuckDB reads single files over HTTPS with range "
               "requests (only the columns and row groups a query needs). It cannot list a folder over plain HTTPS, "
               "so the hex queries (`hex/<layer>/*/*.parquet`) need a local copy of the folder or a path DuckDB "
               "can list, such as an `s3://` path through the host's S3 API.", ""]
    elif not base:
        md += ["Paths are relative to this folder: run DuckDB from here.", ""]
    else:
        md += [f"The queries read the products from `{base}`.", ""]
    if any(x.hex for x in facts.layers):
        res = facts.dataset.h3.resolution
        md += ["To query the cell of another place, compute its id in Python with h3:", "", "```python",
               "import h3",
               f"cell = h3.latlng_to_cell(lat, lng, {res})",
               f"print(h3.str_to_int(cell), h3.str_to_int(h3.cell_to_parent(cell, 0)))  # h{res}, h0",
               "```", ""]
    for title, sql in queries:
        md += [f"### {title}", "", "```sql", sql, "```", ""]
    return md


def _attributes(setting: str | list[str]) -> str:
    return setting if isinstance(setting, str) else ", ".join(setting)


def _provenance(facts: DatasetFacts, run_id: str | None) -> list[str]:
    versions = {**facts.code_versions, "describe": VERSION}
    s = facts.dataset.h3
    return ["## Provenance", "", "| | |", "|---|---|",
            f"| Generated | {facts.created} |",
            f"| Run | {_code(run_id) if run_id else '— (not made in a pipeline run)'} |",
            f"| Code versions | {', '.join(f'{k} {_code(v)}' for k, v in sorted(versions.items()))} |",
            f"| H3 settings | resolution {s.resolution}, parents {', '.join(map(str, s.parents))}, "
            f"{s.containment} containment, attributes {_cell(_attributes(s.attributes))} |",
            f"| Catalog entry | {_code(facts.dataset.name)} |",
            ""]
