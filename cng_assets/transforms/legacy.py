"""Find the conventions of products made outside the pipeline, from Parquet footers and TIFF headers only (cheap
on S3: a few range requests per file, no full download).

Conventions detected: H3 ids as strings instead of uint64; flat hex files instead of `h0=` partitions; missing
parent columns; rows lacking the fine columns or columns mixing resolutions (chunks re-run at a coarser
resolution); GeoParquet without `geo` metadata or without a `bbox` covering column; swapped lat/lon; GeoTIFFs
that are not Cloud-Optimized.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import BinaryIO

import h3
import pyarrow as pa
import pyarrow.parquet as pq
import shapely

H3_COLUMN = re.compile(r"^(h3_?|h)(\d{1,2})$|^h3$|^h3_?index$|^hex(_?id)?$", re.IGNORECASE)
HIVE = re.compile(r"^[A-Za-z0-9_]+=[^/]*$")
HEX, GEO, TABLE, RASTER = "hex", "geoparquet", "table", "raster"


@dataclass
class Product:
    key: str  # a file, or for hex files a folder
    kind: str
    files: list[str]
    findings: list[str] = field(default_factory=list)
    details: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)


def _h3_columns(schema: pa.Schema) -> list[str]:
    return [f.name for f in schema if H3_COLUMN.match(f.name)]


def _declared_resolution(name: str) -> int | None:
    m = re.search(r"(\d{1,2})$", name)
    return int(m.group(1)) if m and int(m.group(1)) <= 15 else None


def _cell_resolution(value) -> int | None:
    try:
        cell = value if isinstance(value, str) else h3.int_to_str(int(value))
        return h3.get_resolution(cell) if h3.is_valid_cell(cell) else None
    except (ValueError, TypeError, OverflowError):
        return None


def _kind(schema: pa.Schema, meta: dict) -> str:
    if b"geo" in meta or "geometry" in schema.names or "geom" in schema.names:
        return GEO
    return HEX if _h3_columns(schema) else TABLE


def product_root(key: str) -> str:
    """A hex file's product: the folder above its first `name=value` segment, else its own folder."""
    parts = key.split("/")
    for i, p in enumerate(parts[:-1]):
        if HIVE.match(p):
            return "/".join(parts[:i])
    return "/".join(parts[:-1])


def inspect(keys: Iterable[str], open_file: Callable[[str], BinaryIO], gdal_path: Callable[[str], str],
            gdal_options: dict | None = None, expected: tuple[int, ...] = (10, 9, 8, 0)) -> list[Product]:
    """Every product under `keys` with its findings. Parquet is read through `open_file`, TIFFs through GDAL
    (`gdal_path`, with `gdal_options` such as an S3 endpoint). `expected`: the resolution and parents a hex
    product should carry (the catalog's, or the default)."""
    hex_files: dict[str, list[tuple[str, pq.FileMetaData]]] = {}
    products = []
    for key in sorted(keys):
        low = key.lower()
        if low.endswith((".tif", ".tiff")):
            products.append(inspect_tiff(key, gdal_path(key), gdal_options or {}))
            continue
        if not low.endswith(".parquet"):
            continue
        with open_file(key) as f:
            meta = pq.ParquetFile(f).metadata
            kind = _kind(meta.schema.to_arrow_schema(), meta.metadata or {})
            if kind == HEX:
                hex_files.setdefault(product_root(key), []).append((key, meta))
            elif kind == GEO:
                products.append(inspect_geoparquet(key, f, meta))
    products += [inspect_hex(root, files, expected) for root, files in hex_files.items()]
    return sorted(products, key=lambda p: p.key)


def inspect_hex(root: str, files: list[tuple[str, pq.FileMetaData]], expected: tuple[int, ...]) -> Product:
    p = Product(root, HEX, [k for k, _ in files])
    columns: dict[str, set[str]] = {}  # column -> arrow types seen
    nulls: dict[str, int] = {}
    resolutions: dict[str, set[int]] = {}
    rows = 0
    for _, meta in files:
        schema = meta.schema.to_arrow_schema()
        rows += meta.num_rows
        for name in _h3_columns(schema):
            columns.setdefault(name, set()).add(str(schema.field(name).type))
            idx = schema.get_field_index(name)
            for rg in range(meta.num_row_groups):
                stats = meta.row_group(rg).column(idx).statistics
                if stats is None:
                    continue
                nulls[name] = nulls.get(name, 0) + (stats.null_count or 0)
                if stats.has_min_max:
                    for v in (stats.min, stats.max):
                        r = _cell_resolution(v)
                        if r is not None:
                            resolutions.setdefault(name, set()).add(r)
    p.details = {"rows": rows, "files": len(files), "columns": {k: sorted(v) for k, v in columns.items()},
                 "null_cells": nulls, "resolutions": {k: sorted(v) for k, v in resolutions.items()}}
    if any(t in ("string", "large_string") for types in columns.values() for t in types):
        p.findings.append("H3 ids stored as strings, not uint64")
    if any(t in ("int64", "int32") for types in columns.values() for t in types):
        p.findings.append("H3 ids stored as signed integers, not uint64")
    in_h0 = [any(HIVE.match(seg) and seg.startswith("h0=") for seg in k.split("/")[:-1]) for k, _ in files]
    if not any(in_h0):
        p.findings.append("flat hex files, not h0= partitioned")
    have = {r for name in columns if (r := _declared_resolution(name)) is not None}
    if all(in_h0):  # h0 in the folder names (the pipeline's layout) stands for an h0 column (older products had both)
        have.add(0)
    missing = [f"h{r}" for r in expected if r not in have]
    if missing:
        p.findings.append(f"missing columns {', '.join(missing)} (expected h{expected[0]} with parents {list(expected[1:])})")
    lacking = sorted(name for name, n in nulls.items() if n)
    if lacking:
        p.findings.append(f"rows lacking {', '.join(lacking)} (chunks re-run at a coarser resolution)")
    mixed = sorted(name for name, rs in resolutions.items() if len(rs) > 1 or (
        _declared_resolution(name) is not None and rs and rs != {_declared_resolution(name)}))
    if mixed:
        p.findings.append(f"mixed resolutions in {', '.join(mixed)}")
    return p


def inspect_geoparquet(key: str, f: BinaryIO, meta: pq.FileMetaData) -> Product:
    p = Product(key, GEO, [key])
    schema = meta.schema.to_arrow_schema()
    geo = json.loads(meta.metadata[b"geo"]) if meta.metadata and b"geo" in meta.metadata else None
    p.details = {"rows": meta.num_rows, "geo_version": geo.get("version") if geo else None}
    if geo is None:
        p.findings.append("GeoParquet without geo metadata")
    column = geo["primary_column"] if geo else ("geometry" if "geometry" in schema.names else "geom")
    if "bbox" not in schema.names:
        p.findings.append("no bbox covering column")
    bounds = (geo or {}).get("columns", {}).get(column, {}).get("bbox")
    if not bounds and meta.num_row_groups:  # read one row group's geometries: enough to see swapped axes
        f.seek(0)
        sample = pq.ParquetFile(f).read_row_group(0, columns=[column]).column(0).to_pylist()[:1000]
        geoms = shapely.from_wkb([g for g in sample if g is not None])
        bounds = list(shapely.total_bounds(geoms)) if len(geoms) else None
    if bounds and _swapped(bounds):
        p.findings.append(f"swapped lat/lon (bbox {[round(b, 3) for b in bounds]})")
    return p


def _swapped(b: list[float]) -> bool:
    """Longitudes within ±90 while 'latitudes' leave ±90: the axes are lat, lon."""
    xmin, ymin, xmax, ymax = b[:4]
    return -90 <= xmin <= xmax <= 90 and (ymin < -90 or ymax > 90) and -180 <= ymin and ymax <= 180


def inspect_tiff(key: str, path: str, gdal_options: dict) -> Product:
    import rasterio

    p = Product(key, RASTER, [key])
    with rasterio.Env(**gdal_options), rasterio.open(path) as src:
        structure = src.tags(ns="IMAGE_STRUCTURE")
        tiled = bool(src.profile.get("tiled"))
        overviews = src.overviews(1)
        p.details = {"size": [src.width, src.height], "blocks": list(src.block_shapes[0]), "overviews": overviews,
                     "layout": structure.get("LAYOUT"), "compression": structure.get("COMPRESSION"), "crs": str(src.crs)}
        problems = []
        if not tiled:
            problems.append("striped, not tiled")
        if not overviews and max(src.width, src.height) > 512:
            problems.append("no overviews")
        if structure.get("LAYOUT") != "COG":
            problems.append("not laid out as a COG")
    if problems:
        p.findings.append("not a Cloud-Optimized GeoTIFF: " + ", ".join(problems))
    return p
