"""What the pipeline knows about a dataset's products, read from the products themselves (footers, schemas,
listings), so that STAC and the docs describe facts, not hopes. Pure: takes a local folder or ProductFiles, and reads
footers, headers and listings only (on S3, by range request), never a product's data: a single file's checksum is the
one the storage recorded when it was published.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from cng_assets.catalog import Dataset
from cng_assets.transforms import columns, layout
from cng_assets.transforms.layers import DOMAIN_KEY_PREFIX, Inventory
from cng_assets.transforms.product_files import ProductFiles, as_files
from cng_assets.transforms.raster.info import H3_RESOLUTION_SOURCE

MEDIA_TYPES = {
    "geoparquet": "application/vnd.apache.parquet",
    "parquet": "application/vnd.apache.parquet",
    "pmtiles": "application/vnd.pmtiles",
    "png": "image/png",
    "cog": "image/tiff; application=geotiff; profile=cloud-optimized",
    "zarr": "application/vnd+zarr",
    "markdown": "text/markdown",
    "html": "text/html",
}


@dataclass
class FileFacts:
    key: str  # relative to the dataset prefix, e.g. "countries.parquet", "hex/countries/" (a folder)
    href: str  # href_base + key
    media_type: str
    roles: list[str]
    size: int  # bytes (a folder: all its files)
    checksum: str | None  # multihash (sha2-256, hex) of a single file; None for folders
    title: str


@dataclass
class ColumnFacts:
    name: str
    type: str  # Arrow type as text
    description: str | None = None
    domain: str | None = None  # FileGDB coded-value domain name, when the source field has one
    source_name: str | None = None  # the source's name of a column renamed (columns.output_names)


@dataclass
class HexFacts:
    resolution: int
    parents: list[int]
    containment: str
    rows: int
    h0_partitions: int
    columns: list[str]  # as hive readers see them, e.g. ["h10", "h9", "h8", "h0"] (h0 from the folder names)
    first_h0: int | None = None  # the first h0= folder's cell (for the read recipes)


@dataclass
class LayerFacts:
    slug: str
    name: str  # as in the source
    kind: str  # polygon | other | table
    geometry_type: str | None
    source_features: int
    rows: int  # rows in the main product (GeoParquet or table)
    bbox: list[float] | None  # lon/lat
    columns: list[ColumnFacts]
    files: dict[str, FileFacts] = field(default_factory=dict)  # geoparquet | pmtiles | hex | table | thumbnail
    hex: HexFacts | None = None


@dataclass
class RasterFacts:
    """A raster layer's COG, read back from the file."""

    slug: str
    name: str
    bbox: list[float]  # lon/lat
    crs: str | None  # e.g. "EPSG:32618"
    shape: list[int]  # [rows, columns]
    transform: list[float]  # the affine's first six coefficients, as STAC's proj:transform
    resolution: float  # in CRS units
    bands: list[dict]  # data_type, nodata per band
    files: dict[str, FileFacts] = field(default_factory=dict)  # cog, geozarr, hex
    hex_columns: list[str] = field(default_factory=list)  # e.g. h6, h5, b1_mean, b1_count, h0 (as in HexFacts)
    hex_first_h0: int | None = None
    hex_resolution_source: str | None = None  # "pixel size" or "catalog", from the files (older products: None)
    crs_wkt2: str | None = None  # the CRS in full when it has no EPSG code


@dataclass
class DatasetFacts:
    dataset: Dataset
    layers: list[LayerFacts]  # spatial layers
    tables: list[LayerFacts]  # non-spatial layers and coded-value domains
    created: str  # ISO 8601, UTC
    code_versions: dict[str, str] = field(default_factory=dict)
    rasters: list[RasterFacts] = field(default_factory=list)
    href_base: str = ""  # what the hrefs start with: a public URL ending in '/', or '' (relative)

    def has_map(self) -> bool:
        """Whether the dataset gets a map page (layout.MAP): some layer has vector tiles to draw."""
        return any("pmtiles" in x.files for x in self.layers)

    def layer(self, slug: str) -> LayerFacts:
        return next(x for x in [*self.layers, *self.tables] if x.slug == slug)


def with_href_base(facts: DatasetFacts, base: str) -> DatasetFacts:
    """The same facts with every file's href `base` + its key."""
    def files(d: dict[str, FileFacts]) -> dict[str, FileFacts]:
        return {k: dataclasses.replace(f, href=base + f.key) for k, f in d.items()}

    return dataclasses.replace(
        facts, href_base=base, layers=[dataclasses.replace(x, files=files(x.files)) for x in facts.layers],
        tables=[dataclasses.replace(x, files=files(x.files)) for x in facts.tables],
        rasters=[dataclasses.replace(r, files=files(r.files)) for r in facts.rasters])


def _file(files: ProductFiles, key: str, href_base: str, kind: str, roles: list[str], title: str) -> FileFacts | None:
    found = files.files(key)
    if not found:  # (a layer with no features has no hex): nothing a reader could open
        return None
    if key not in found:  # a folder
        return FileFacts(key, href_base + key, MEDIA_TYPES[kind], roles, sum(found.values()), None, title)
    return FileFacts(key, href_base + key, MEDIA_TYPES[kind], roles, found[key], files.checksum(key), title)


def _columns(files: ProductFiles, key: str, ds: Dataset, domains: dict[str, str]) -> list[ColumnFacts]:
    return column_facts(pq.read_schema(files.footer(key)), ds, domains)


def column_facts(schema: pa.Schema, ds: Dataset, domains: dict[str, str]) -> list[ColumnFacts]:
    """Each column of a written product with its description: the catalog's, else ours for our own columns."""
    own = {"_cng_fid": "Row id: the feature's 1-based position in the source layer",
           "geometry": "Geometry (WKB, EPSG:4326 lon/lat)", "bbox": "Bounding box of the geometry (covering column)"}
    renamed = json.loads((schema.metadata or {}).get(columns.METADATA_KEY.encode(), b"{}"))
    source = {out: src for src, out in renamed.items()}
    out = []
    for f in schema:
        name = source.get(f.name, f.name)  # the catalog and the domains know a column by its source name
        out.append(ColumnFacts(f.name, "WKB" if f.name == "geometry" else str(f.type),
                               ds.columns.get(name) or own.get(f.name), domains.get(name), source.get(f.name)))
    return out


def hex_files(files: ProductFiles, key: str) -> list[str]:
    """A hex folder's `h0=<cell>/*.parquet` files, in name order."""
    return sorted(k for k in files.files(key) if re.fullmatch(r"h0=[^/]+/[^/]+\.parquet", k[len(key.rstrip("/")) + 1:]))


def _hex_columns(schema: pa.Schema) -> list[str]:
    """A hex file's columns as a hive reader sees them: its own, then h0 from the folder name (a product older than
    hex VERSION 4 also holds h0 in its files)."""
    return schema.names if layout.HEX_PARTITION in schema.names else [*schema.names, layout.HEX_PARTITION]


def _hex(files: ProductFiles, slug: str, ds: Dataset, rows: int | None = None) -> HexFacts | None:
    """Resolution and columns as written in the first file (the catalog may have changed since); `rows` as recorded
    when the folder was written, else from every file's footer."""
    keys = hex_files(files, layout.hex(slug))
    if not keys:
        return None
    cols = [c for c in _hex_columns(pq.read_schema(files.footer(keys[0]))) if re.fullmatch(r"h\d+", c)]
    if rows is None:
        rows = sum(pq.read_metadata(files.footer(k)).num_rows for k in keys)
    resolutions = [int(c[1:]) for c in cols]
    return HexFacts(resolutions[0], resolutions[1:], ds.h3.containment, rows, len({Path(k).parent.name for k in keys}),
                    cols, layout.hex_folder_cell(Path(keys[0])))


def gather(ds: Dataset, root: Path | ProductFiles, inventory: Inventory, href_base: str = "",
           code_versions: dict[str, str] | None = None, hex_rows: dict[str, int] | None = None) -> DatasetFacts:
    """Facts about every product of `ds` found under `root` (the dataset's prefix folder, or its ProductFiles).
    `href_base` is what hrefs start with (a public URL ending in '/', or '' for paths relative to the dataset folder);
    `hex_rows` the rows of layers' hex folders as recorded when they were written (the others: from the footers)."""
    root = as_files(root)
    layers, tables = [], []
    rasters = []
    for x in inventory.layers:
        if x.kind == "raster":
            cog = _file(root, layout.cog(x.slug), href_base, "cog", ["data"], f"{x.name} (Cloud-Optimized GeoTIFF)")
            if cog is not None:
                zarr = _file(root, layout.geozarr(x.slug) + "/", href_base, "zarr", ["data"], f"{x.name} (GeoZarr)")
                hexed = _file(root, layout.hex(x.slug) + "/", href_base, "parquet", ["data"],
                              f"{x.name} (H3 cell statistics, h0-partitioned)")
                r = _raster(root.gdal_path(layout.cog(x.slug)), x.slug, x.name, {"cog": cog, "geozarr": zarr, "hex": hexed},
                            root.gdal_options)
                first = next(iter(hex_files(root, layout.hex(x.slug))), None)
                if hexed is not None and first is not None:
                    schema = pq.read_schema(root.footer(first))
                    r.hex_columns, r.hex_first_h0 = _hex_columns(schema), layout.hex_folder_cell(Path(first))
                    source = (schema.metadata or {}).get(H3_RESOLUTION_SOURCE)
                    r.hex_resolution_source = source.decode() if source else None
                rasters.append(r)
            continue
        if x.kind == "table":
            key = layout.table(x.slug)
            f = _file(root, key, href_base, "parquet", ["data"], f"{x.name} (table)")
            if f is None:
                continue
            tables.append(LayerFacts(x.slug, x.name, x.kind, None, x.features, pq.read_metadata(root.footer(key)).num_rows,
                                     None, _columns(root, key, ds, x.domains), {"table": f}))
            continue
        key = layout.geoparquet(x.slug)
        gp = _file(root, key, href_base, "geoparquet", ["data"], f"{x.name} (GeoParquet)")
        if gp is None:
            continue
        footer = pq.read_metadata(root.footer(key))
        geo = json.loads(footer.metadata[b"geo"])
        files = {"geoparquet": gp}
        for name, k, kind, roles, title in (
                ("pmtiles", layout.pmtiles(x.slug), "pmtiles", ["visual"], f"{x.name} (PMTiles vector tiles)"),
                ("hex", layout.hex(x.slug) + "/", "parquet", ["data"], f"{x.name} (H3 cells, h0-partitioned)"),
                ("thumbnail", layout.thumbnail(x.slug), "png", ["thumbnail"], f"{x.name} (map)")):
            f = _file(root, k, href_base, kind, roles, title)
            if f is not None:
                files[name] = f
        types = geo["columns"]["geometry"].get("geometry_types") or [x.geometry_type]  # the product's, 2D
        layers.append(LayerFacts(x.slug, x.name, x.kind, ", ".join(types), x.features,
                                 footer.num_rows, geo["columns"]["geometry"].get("bbox"),
                                 _columns(root, key, ds, x.domains), files, _hex(root, x.slug, ds, (hex_rows or {}).get(x.slug))))
    for d in inventory.domains:
        key = layout.table(DOMAIN_KEY_PREFIX + d.slug)
        f = _file(root, key, href_base, "parquet", ["data"], f"{d.name} (coded-value domain)")
        if f is not None:
            tables.append(LayerFacts(DOMAIN_KEY_PREFIX + d.slug, d.name, "table", None, len(d.codes), len(d.codes),
                                     None, _columns(root, key, ds, {}), {"table": f}))
    return DatasetFacts(ds, layers, tables, datetime.now(timezone.utc).isoformat(timespec="seconds"),
                        dict(code_versions or {}), rasters, href_base)


def union_bbox(bboxes: list[list[float]]) -> list[float]:
    """The lon/lat box around `bboxes`; the whole world when there are none."""
    if not bboxes:
        return [-180.0, -90.0, 180.0, 90.0]  # STAC requires a spatial extent; no layer has one (all empty)
    if any(b[0] > b[2] for b in bboxes):  # one crosses the antimeridian: keep the full width, honestly
        xmin, xmax = -180.0, 180.0
    else:
        xmin, xmax = min(b[0] for b in bboxes), max(b[2] for b in bboxes)
    return [xmin, min(b[1] for b in bboxes), xmax, max(b[3] for b in bboxes)]


def _raster(path: str | Path, slug: str, name: str, files: dict[str, FileFacts | None],
            gdal_options: dict[str, str] | None = None) -> RasterFacts:
    """From the COG's header, read by GDAL in place (/vsis3/ on S3: range requests)."""
    import rasterio
    from rasterio.warp import transform_bounds

    from cng_assets.transforms.raster.info import crs_code_or_wkt2

    with rasterio.Env(**(gdal_options or {})), rasterio.open(path) as r:
        bbox = list(transform_bounds(r.crs, "EPSG:4326", *r.bounds, densify_pts=21)) if r.crs else list(r.bounds)
        code, wkt2 = crs_code_or_wkt2(r.crs)
        bands = [{"data_type": dt, **({"nodata": r.nodata} if r.nodata is not None else {})} for dt in r.dtypes]
        return RasterFacts(slug, name, bbox, code, [r.height, r.width],
                           list(r.transform)[:6], abs(r.transform.a), bands, {k: f for k, f in files.items() if f},
                           crs_wkt2=wkt2)
