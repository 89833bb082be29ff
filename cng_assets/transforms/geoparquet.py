"""Spatial layer -> GeoParquet 1.1: streamed from GDAL in batches, cleaned, then sorted along a Hilbert curve.

Memory stays bounded: batches go to an unsorted scratch file, DuckDB sorts it (spilling to disk if it must) and
streams it, in order, to pyarrow's writer: ZSTD, the `geo` metadata, and row groups of about ROW_GROUP_BYTES
uncompressed (few rows of huge polygons, many of points). DuckDB's own COPY cannot size them so: its ROW_GROUP_SIZE
rounds up to multiples of 2048 rows, and its ROW_GROUP_SIZE_BYTES refuses to run while insertion order (here the
Hilbert order) is preserved.
"""

from __future__ import annotations

import json
import tempfile
import warnings
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pyogrio
import shapely

from cng_assets.errors import CngInputError, no_crs
from cng_assets.transforms import columns, sources
from cng_assets.transforms.cpus import usable_cpus
from cng_assets.transforms.extent import check_extent
from cng_assets.transforms.geometry import WGS84, CleanCounts, clean, parse_wkb, to_wgs84
from cng_assets.transforms.hilbert import hilbert_keys
from cng_assets.transforms.sql import ident

VERSION = "5"  # bump when the product changes: products made before become stale (5: poles, ±180, holes kept)
GEOPARQUET_VERSION = "1.1.0"
FID, GEOMETRY, BBOX = columns.FID, columns.GEOMETRY, columns.BBOX
ROW_GROUP_BYTES = 64 << 20  # uncompressed bytes a row group aims at
# bounds on rows per row group: as few as one feature of many MB (a floor of 1,024 rows would let 1,024 such
# features make one group of GBs), and a cap so that points still make several groups a file at scale
ROW_GROUP_ROWS = (1, 1_000_000)
BBOX_TYPE = pa.struct([(k, pa.float64()) for k in ("xmin", "ymin", "xmax", "ymax")])


@dataclass
class GeoParquetStats:
    features_read: int = 0
    rows_written: int = 0
    curved_linearised: int = 0
    counts: CleanCounts = field(default_factory=CleanCounts)
    dropped_features: list[tuple[int, str]] = field(default_factory=list)  # (_cng_fid, why) of the first 1000
    bbox: list[float] | None = None
    geometry_types: list[str] = field(default_factory=list)
    source_crs: str | None = None
    renamed_columns: dict[str, str] = field(default_factory=dict)

    @property
    def dropped_fids(self) -> list[int]:
        return [fid for fid, _ in self.dropped_features]

    @property
    def dropped(self) -> int:
        c = self.counts
        return c.dropped_null_or_empty + c.dropped_unrepairable + c.dropped_other_geometry_types

    def to_dict(self) -> dict:
        return {**asdict(self), "dropped": self.dropped, "dropped_fids": self.dropped_fids}


@dataclass
class _Converted:
    table: pa.Table
    counts: CleanCounts
    curved: int
    dropped: list[tuple[int, str]]  # (_cng_fid, why), the first 1000
    bounds: np.ndarray  # xmin, ymin, xmax, ymax of the kept rows, lon/lat (NO_BOUNDS when none)
    source_bounds: np.ndarray  # the same of every feature read, in the source CRS
    types: set[int]


def _convert_batch(batch: pa.RecordBatch, first_fid: int, *, path: str, layer: str, meta: dict, kind: str,
                   geometry_type: str | None, transformer, names: dict[str, str], hilbert: str) -> _Converted:
    fids = np.arange(first_fid, first_fid + batch.num_rows, dtype=np.int64)
    # GDAL's FID comes first (return_fids) and may share its name with a field (a GeoJSON `id` property): by position
    gdal_fids, batch = batch.column(0), batch.select(range(1, batch.num_columns))
    geoms, curved = parse_wkb(batch.column(meta["geometry_name"] or "wkb_geometry").to_numpy(zero_copy_only=False))
    if len(curved):  # GDAL linearises curves on its non-Arrow path; re-read just those features
        src_fids = gdal_fids.to_numpy()[curved]
        geoms[curved] = pyogrio.read_dataframe(path, layer=layer, fids=src_fids, columns=[],
                                               **sources.open_options(path)).geometry.values
    source_bounds = _total_bounds(geoms)
    counts, reasons = CleanCounts(), np.empty(len(geoms), dtype=object)
    cleaned = clean(geoms, kind=kind, geometry_type=geometry_type, transformer=transformer, counts=counts,
                    reasons=reasons)
    keep = ~shapely.is_missing(cleaned)
    kept = cleaned[keep]
    return _Converted(table=_output_batch(batch, names, hilbert, fids[keep], kept, keep), counts=counts,
                      curved=len(curved), dropped=list(zip(fids[~keep][:1000].tolist(), reasons[~keep][:1000])),
                      bounds=_total_bounds(kept),
                      source_bounds=source_bounds, types=set(shapely.get_type_id(kept).tolist()))


NO_BOUNDS = np.array([np.inf, np.inf, -np.inf, -np.inf])


def _total_bounds(geoms: np.ndarray) -> np.ndarray:
    """xmin, ymin, xmax, ymax over the geometries, None and empty ones left out (NO_BOUNDS when none is left)."""
    b = shapely.bounds(geoms)
    b = b[~np.isnan(b).any(axis=1)]
    return np.concatenate([b[:, :2].min(0), b[:, 2:].max(0)]) if len(b) else NO_BOUNDS


def _union_bounds(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.concatenate([np.minimum(a[:2], b[:2]), np.maximum(a[2:], b[2:])])


def write_geoparquet(path: str, layer: str, out_path: str | Path, *, kind: str, crs: str | None = None,
                     batch_size: int = 10_000, scratch_dir: str | None = None, memory_limit: str = "1GB",
                     workers: int | None = None, row_group_bytes: int = ROW_GROUP_BYTES) -> GeoParquetStats:
    """Convert one spatial layer of `path` (a GDAL path) to GeoParquet at `out_path` (a local file).

    `crs` is used only when the source declares none. `_cng_fid` is the feature's 1-based position in the
    source layer, so it stays stable when cleaning rules change; dropped features leave gaps. Batches are
    cleaned on `workers` threads (GEOS and PROJ release the GIL), at most `workers + 1` batches in memory.
    """
    info = sources.read_info(path, layer)
    src_crs = info["crs"] or crs
    if src_crs is None:
        raise no_crs("layer", "EPSG:4269", layer)
    stats = GeoParquetStats(source_crs=src_crs)
    names = columns.output_names([str(f) for f in info["fields"]])
    stats.renamed_columns = columns.renamed(names)
    # the Hilbert key only sorts the scratch file: any name no output column has (case-insensitively) will do
    hilbert = columns.unused("_hilbert", {n.casefold() for n in [*names.values(), *columns.RESERVED]})
    types: set[int] = set()
    bounds = source_bounds = NO_BOUNDS
    workers = workers or usable_cpus()

    with tempfile.TemporaryDirectory(prefix="cng-geoparquet-", dir=scratch_dir) as tmp:
        unsorted = Path(tmp) / "unsorted.parquet"
        writer = None

        def consume(done: _Converted) -> None:
            nonlocal writer, bounds, source_bounds
            stats.counts.add(done.counts)
            stats.curved_linearised += done.curved
            stats.dropped_features.extend(done.dropped[: max(0, 1000 - len(stats.dropped_features))])
            bounds, source_bounds = _union_bounds(bounds, done.bounds), _union_bounds(source_bounds, done.source_bounds)
            types.update(done.types)
            if writer is None:
                writer = pq.ParquetWriter(unsorted, done.table.schema, compression="lz4")
            writer.write_table(done.table)

        with warnings.catch_warnings(), ThreadPoolExecutor(workers) as pool:
            warnings.simplefilter("ignore", UserWarning)
            with sources.open_records(path, layer, info, batch_size=batch_size, return_fids=True) as (meta, reader):
                convert = partial(_convert_batch, path=path, layer=layer, meta=meta, kind=kind,
                                  geometry_type=info["geometry_type"], transformer=to_wgs84(src_crs), names=names,
                                  hilbert=hilbert)
                pending: deque = deque()
                for batch in reader:
                    pending.append(pool.submit(convert, batch, stats.features_read + 1))
                    stats.features_read += batch.num_rows
                    if len(pending) > workers:
                        consume(pending.popleft().result())
                while pending:
                    consume(pending.popleft().result())
        if writer is None:  # a layer with no features at all: write its schema only
            writer = pq.ParquetWriter(unsorted, _empty_schema(info, names, hilbert))
        writer.close()

        if np.isfinite(source_bounds).all():  # before any count: coordinates the CRS cannot hold are no product
            check_extent(src_crs, source_bounds.tolist(), layer)
        stats.rows_written = stats.features_read - stats.dropped
        if stats.features_read and not stats.rows_written:
            raise CngInputError(
                f"all {stats.features_read} features have null, empty or unrepairable geometry, or geometry of "
                f"another type than the layer's {kind} ({stats.counts.dropped_null_or_empty} null/empty, "
                f"{stats.counts.dropped_unrepairable} unrepairable, {stats.counts.dropped_other_geometry_types} "
                f"other types)",
                layer=layer, hint="check the source layer, or leave it out with `exclude:` in the catalog entry")
        stats.geometry_types = sorted(_TYPE_NAMES[t] for t in types)
        stats.bbox = bounds.tolist() if np.isfinite(bounds).all() else None
        rows = row_group_rows(unsorted, hilbert, row_group_bytes)
        _sort_and_write(unsorted, Path(out_path), _footer(stats), hilbert, tmp, memory_limit, rows)
    return stats


_TYPE_NAMES = {0: "Point", 1: "LineString", 3: "Polygon", 4: "MultiPoint", 5: "MultiLineString", 6: "MultiPolygon",
               7: "GeometryCollection"}


def _output_batch(batch: pa.RecordBatch, names: dict[str, str], hilbert: str, fids: np.ndarray, geoms: np.ndarray,
                  keep: np.ndarray) -> pa.Table:
    b = shapely.bounds(geoms) if len(geoms) else np.empty((0, 4))
    centre_x, centre_y = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    mask = pa.array(keep)
    cols = {FID: pa.array(fids, pa.int64())}
    cols.update({names[f]: batch.column(f).filter(mask) for f in names})
    cols[GEOMETRY] = pa.array(shapely.to_wkb(geoms, output_dimension=2, flavor="iso"), pa.binary())
    cols[BBOX] = pa.StructArray.from_arrays([pa.array(b[:, i], pa.float64()) for i in range(4)],
                                            fields=list(BBOX_TYPE))
    cols[hilbert] = pa.array(hilbert_keys(centre_x, centre_y), pa.uint64())
    return pa.table(cols)


def _empty_schema(info: dict, names: dict[str, str], hilbert: str) -> pa.Schema:
    arrow_types = {"int32": pa.int32(), "int64": pa.int64(), "float64": pa.float64(), "float32": pa.float32(),
                   "bool": pa.bool_(), "datetime64[ms]": pa.timestamp("ms")}
    fields = [(FID, pa.int64())]
    fields += [(names[str(f)], arrow_types.get(str(t), pa.string())) for f, t in zip(info["fields"], info["dtypes"])]
    fields += [(GEOMETRY, pa.binary()), (BBOX, BBOX_TYPE), (hilbert, pa.uint64())]
    return pa.schema(fields)


def _geo_metadata(stats: GeoParquetStats) -> dict:
    column = {
        "encoding": "WKB",
        "geometry_types": stats.geometry_types,
        "crs": json.loads(WGS84.to_json()),
        "edges": "planar",
        "covering": {"bbox": {k: [BBOX, k] for k in ("xmin", "ymin", "xmax", "ymax")}},
    }
    if stats.geometry_types and set(stats.geometry_types) <= {"Polygon", "MultiPolygon"}:
        column["orientation"] = "counterclockwise"
    if stats.bbox:
        column["bbox"] = stats.bbox
    return {"version": GEOPARQUET_VERSION, "primary_column": GEOMETRY, "columns": {GEOMETRY: column}}


def _footer(stats: GeoParquetStats) -> dict[str, str]:
    """Footer key-values: `geo`, and the source columns renamed (JSON), so readers can map them back."""
    return {"geo": json.dumps(_geo_metadata(stats), separators=(",", ":")),
            columns.METADATA_KEY: json.dumps(stats.renamed_columns, ensure_ascii=False)}


def row_group_rows(scratch: Path, skip: str, target: int) -> int:
    """Rows per row group for about `target` uncompressed bytes, from the scratch file's average row (its footer:
    no data read), the `skip` column (the sort key, not in the product) left out."""
    meta = pq.read_metadata(scratch)
    size = sum(meta.row_group(i).column(j).total_uncompressed_size for i in range(meta.num_row_groups)
               for j in range(meta.num_columns) if meta.schema.column(j).path.split(".")[0] != skip)
    return int(np.clip(target * meta.num_rows // max(size, 1), *ROW_GROUP_ROWS))


def _sort_and_write(unsorted: Path, out: Path, footer: dict[str, str], hilbert: str, tmp: str,
                    memory_limit: str, rows: int) -> None:
    con = duckdb.connect(config={"memory_limit": memory_limit, "temp_directory": str(Path(tmp) / "spill"),
                                 "threads": 2, "preserve_insertion_order": True})
    try:  # the path as a parameter: no text built from it
        reader = con.execute(f"SELECT * EXCLUDE ({ident(hilbert)}) FROM read_parquet($unsorted) "
                             f"ORDER BY {ident(hilbert)}, {ident(FID)}", {"unsorted": str(unsorted)}
                             ).to_arrow_reader(rows)
        schema = reader.schema
        with pq.ParquetWriter(out, schema, compression="zstd", store_schema=False,
                              use_dictionary=[n for n in schema.names if n not in (FID, GEOMETRY, BBOX)]) as writer:
            writer.add_key_value_metadata(footer)
            pending: list[pa.RecordBatch] = []
            for batch in reader:  # whole row groups of `rows` rows, whatever size DuckDB's batches are
                pending.append(batch)
                if sum(b.num_rows for b in pending) >= rows:
                    table = pa.Table.from_batches(pending, schema)
                    full = table.num_rows - table.num_rows % rows
                    writer.write_table(table.slice(0, full), row_group_size=rows)
                    pending = table.slice(full).to_batches()
            if pending:
                writer.write_table(pa.Table.from_batches(pending, schema), row_group_size=rows)
    finally:
        con.close()
