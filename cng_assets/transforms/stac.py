"""STAC 1.1.0 metadata for a dataset's products, made from `DatasetFacts` with pystac. Pure: facts in, JSON files
in a local folder out (no Dagster, no storage).

- One Item per spatial layer: the layer's footprint and bbox, the catalog's datetime (or start/end) and where that
  came from (`cng:datetime_source`: catalog, cli, source last-modified, processing time), `table:columns`,
  `table:row_count` and `table:primary_geometry` of its GeoParquet, `proj:code`, and one asset per product of the
  layer (GeoParquet, PMTiles, H3 hex folder, thumbnail), each with media type, roles, `file:size` and, for single
  files, `file:checksum` (sha2-256 multihash).
- One Collection per dataset: extent, licence, providers, keywords, citation/DOI, a `preview` link to the map
  page, its Items, `table:tables` (every table it holds), and the non-spatial tables (source tables and FileGDB coded-value domains) as
  Collection-level assets: they belong to the dataset rather than to one layer (a domain can serve several
  layers and tables), they have no footprint to search by, and repeating them on every Item would make each
  layer look as if it had its own copy. Columns that use a domain name its asset in their description.
- One Item per raster layer: its COG asset, `proj:code`/`proj:shape`/`proj:transform` and the raster extension's
  bands (data type, nodata, resolution).
- One root Catalog that links every dataset's Collection.

Footprint: the layer's bbox as a polygon (a point or line when the bbox is degenerate; a MultiPolygon of two boxes
when the bbox crosses the antimeridian, i.e. xmin > xmax as GeoParquet allows). It is the extent, not the shape
of the features: a layer whose features were split at ±180° has a bbox from -180 to 180 and so a footprint that
spans the globe, which is true of its extent though coarse. Coordinates are clamped to ±180/±90 (the bbox of a
reprojected layer can overshoot by float noise).

Licence: STAC 1.1 wants an SPDX identifier or "other". A catalog licence that starts with a known SPDX id
("CC-BY-4.0 (GreenInfo Network, ...)") gives that id and a `license` link to its SPDX page; anything else ("USGS
public domain", "proprietary") gives "other", and the catalog's words go into the Collection description (the
catalog has no licence URL to link to). The full catalog text is kept in the description whenever it says more
than the id.

Citation and DOI: the scientific extension's schema is not among the schemas this project validates against
offline, so the citation goes into the description and the DOI into a `cite-as` link (https://doi.org/...).
"""

from __future__ import annotations

import math
import os
import re
from datetime import datetime
from pathlib import Path
from urllib.parse import urlparse

import pystac
from pystac.extensions.file import FileExtension
from pystac.extensions.projection import ProjectionExtension
from pystac.extensions.table import Column, TableExtension

from cng_assets.catalog import Dataset, utc
from cng_assets.transforms import layout
from cng_assets.transforms.columns import rename_note
from cng_assets.transforms.facts import DatasetFacts, FileFacts, LayerFacts, RasterFacts, union_bbox, with_href_base
from cng_assets.transforms.hex import readers
from cng_assets.transforms.layers import DOMAIN_KEY_PREFIX

VERSION = "5"  # bump when the STAC output changes

PROCESSING_SCHEMA = "https://stac-extensions.github.io/processing/v1.2.0/schema.json"  # no pystac class for it
# STAC 1.1 moved bands into common metadata (`bands`, `data_type`, `nodata`); raster v2 adds `raster:*` fields to
# them. pystac's RasterExtension still writes v1's `raster:bands`, so these are written as plain fields.
RASTER_SCHEMA = "https://stac-extensions.github.io/raster/v2.0.0/schema.json"
CRS = "EPSG:4326"  # every GeoParquet product is lon/lat
PMTILES_CRS = "EPSG:3857"  # PMTiles archives are Web Mercator tile pyramids
DATETIME_SOURCE = "cng:datetime_source"  # where the Item's time came from (catalog.FROM_*)

# SPDX ids that data catalogs use, keyed by lower case; a licence text starting with one of these maps to it.
SPDX_IDS = {x.lower(): x for x in (
    "CC0-1.0", "CC-BY-4.0", "CC-BY-3.0", "CC-BY-SA-4.0", "CC-BY-SA-3.0", "CC-BY-NC-4.0", "CC-BY-NC-SA-4.0",
    "CC-BY-ND-4.0", "CC-BY-NC-ND-4.0", "ODbL-1.0", "ODC-By-1.0", "PDDL-1.0", "OGL-UK-3.0", "OGL-Canada-2.0",
    "etalab-2.0", "DL-DE-BY-2.0", "DL-DE-ZERO-2.0", "CDLA-Permissive-2.0", "MIT", "Apache-2.0")}
SPDX_ALIASES = {"cc0": "CC0-1.0", "odbl": "ODbL-1.0", "pddl": "PDDL-1.0"}


def stac_license(text: str) -> tuple[str, str | None]:
    """The STAC `license` value for a catalog's free-text licence, and the text to keep in the description (None when
    the id says it all). 'CC-BY-4.0 (GreenInfo Network)' -> ('CC-BY-4.0', 'CC-BY-4.0 (GreenInfo Network)');
    'CC BY 4.0' -> ('CC-BY-4.0', 'CC BY 4.0'); 'USGS public domain' -> ('other', 'USGS public domain')."""
    text = " ".join(text.split())
    head = re.split(r"[(,;]", text, maxsplit=1)[0].strip()  # the part before any parenthesis or comma
    for candidate in (head.split(" ")[0] if head else "", head.replace(" ", "-")):
        key = candidate.lower()
        spdx = SPDX_IDS.get(key) or SPDX_ALIASES.get(key)
        if spdx:
            return spdx, None if text == spdx else text
    return "other", text or None


def footprint(bbox: list[float] | None) -> tuple[dict | None, list[float] | None]:
    """(GeoJSON geometry, STAC bbox) for a lon/lat bbox; (None, None) when the layer has no extent."""
    if not bbox:
        return None, None
    if len(bbox) == 6:  # 3D bbox: the footprint is 2D
        bbox = [bbox[0], bbox[1], bbox[3], bbox[4]]
    xmin, ymin, xmax, ymax = bbox
    xmin, xmax = (max(-180.0, min(180.0, float(v))) for v in (xmin, xmax))
    ymin, ymax = (max(-90.0, min(90.0, float(v))) for v in (ymin, ymax))
    if ymin > ymax:
        raise ValueError(f"bbox {bbox} has ymin > ymax")

    def ring(x0, x1):
        return [[x0, ymin], [x1, ymin], [x1, ymax], [x0, ymax], [x0, ymin]]

    if xmin > xmax:  # crosses the antimeridian (GeoParquet and STAC both write such a bbox with xmin > xmax)
        geometry = {"type": "MultiPolygon", "coordinates": [[ring(xmin, 180.0)], [ring(-180.0, xmax)]]}
    elif xmin == xmax and ymin == ymax:
        geometry = {"type": "Point", "coordinates": [xmin, ymin]}
    elif xmin == xmax or ymin == ymax:
        geometry = {"type": "LineString", "coordinates": [[xmin, ymin], [xmax, ymax]]}
    else:
        geometry = {"type": "Polygon", "coordinates": [ring(xmin, xmax)]}
    return geometry, [xmin, ymin, xmax, ymax]


def _when(ds: Dataset) -> tuple[datetime | None, datetime | None, datetime | None]:
    """(datetime, start, end), checked when the catalog loaded; STAC needs a datetime or both ends of a range."""
    if ds.datetime_source is None:
        raise ValueError(f"dataset {ds.name} has no time yet: pass it through defs.sources.with_default_datetime")
    return tuple(utc(t) if t else None for t in (ds.datetime, ds.start_datetime, ds.end_datetime))


def _check_hrefs(facts: DatasetFacts) -> None:
    for x in [*facts.layers, *facts.tables, *facts.rasters]:
        for f in x.files.values():
            if not (urlparse(f.href).scheme or f.href.startswith("/")):
                raise ValueError(f"asset href {f.href!r} is relative: a Collection in memory has no place to be relative "
                                 "to (write_dataset_stac makes hrefs relative to where it writes them)")


def _asset(f: FileFacts, description: str | None = None) -> pystac.Asset:
    return pystac.Asset(href=f.href, title=f.title, description=description, media_type=f.media_type, roles=list(f.roles))


def _add_asset(owner: pystac.Item | pystac.Collection, key: str, asset: pystac.Asset, f: FileFacts) -> pystac.Asset:
    owner.add_asset(key, asset)
    file = FileExtension.ext(asset, add_if_missing=True)
    file.size = f.size
    if f.checksum is not None:  # folders (the hex product) have no single checksum
        file.checksum = f.checksum
    return asset


def _then(description: str | None, note: str) -> str:
    return f"{description.rstrip('.')}. {note}" if description else note


def _columns(x: LayerFacts, domain_assets: dict[str, str]) -> list[Column]:
    out = []
    for c in x.columns:
        props = {"name": c.name, "type": c.type}
        description = c.description
        if c.domain:
            key = domain_assets.get(c.domain)
            note = (f"Coded values: FileGDB domain `{c.domain}`"
                    + (f", in the Collection asset `{key}` (code, label)." if key else "."))
            description = _then(description, note)
        if c.source_name:
            description = _then(description, rename_note(c.source_name))
        if description:
            props["description"] = description
        out.append(Column(props))
    return out


def _hex_asset(item: pystac.Item, x: LayerFacts, f: FileFacts, ds: Dataset) -> None:
    h = x.hex
    asset = _asset(f, description=None)
    _add_asset(item, "hex", asset, f)
    if h is None:  # the folder exists but its facts are unknown: describe only the files
        asset.description = "H3 cells of every feature, one folder per resolution-0 cell (`h0=<cell>`)."
        return
    cols = [Column({"name": "_cng_fid", "type": "int64", "description": "Row id of the feature in the layer's GeoParquet"})]
    for name in h.columns:
        r = int(name[1:])
        what = f"H3 cell at resolution {r}" + (" (the cell itself)" if r == h.resolution else " (parent)")
        if name == "h0":
            what += "; the partition folder name h0=<cell>, not stored in the files (hive readers add it)"
        cols.append(Column({"name": name, "type": "uint64", "description": what}))
    attributes = {"all": ", followed by the layer's attribute columns", "none": ""}.get(
        ds.h3.attributes if isinstance(ds.h3.attributes, str) else "",
        f", followed by the attribute columns {', '.join(ds.h3.attributes)}")
    asset.description = (
        f"H3 cells (resolution {h.resolution}, parents {', '.join(map(str, h.parents))}, containment `{h.containment}`) "
        f"of every feature{attributes}, in {h.h0_partitions} hive partitions "
        f"`h0=<cell>/part-*.parquet`, rows sorted by cell; file:size is the total of the folder. Read it through the "
        f"S3 API or from a copy (plain HTTP cannot list a folder). {readers.H0_TYPES} DuckDB: "
        f"`read_parquet('<folder>/*/*.parquet', {readers.DUCKDB_HIVE_TYPES})`; pandas or pyarrow: "
        f"`partitioning={readers.PYARROW_PARTITIONING}`; polars: `scan_parquet('<folder>/**/*.parquet', "
        f"hive_partitioning=True, hive_schema={readers.POLARS_HIVE_SCHEMA})`.")
    table = TableExtension.ext(asset, add_if_missing=True)
    table.columns = cols
    table.row_count = h.rows  # the partitioning is in the description and h0's column: storage options are for storage


def layer_item(facts: DatasetFacts, x: LayerFacts, domain_assets: dict[str, str] | None = None) -> pystac.Item:
    """The Item of one spatial layer."""
    ds = facts.dataset
    when, start, end = _when(ds)
    geometry, bbox = footprint(x.bbox)
    dropped = x.source_features - x.rows
    kind = (x.geometry_type or "").split(" ")[0]  # "MultiPolygon Z" in the source; the products are 2D
    description = (f"{x.name}: {x.rows:,} {kind + ' ' if kind else ''}features"
                   + (f" ({dropped:,} of {x.source_features:,} source features dropped: null, empty or unrepairable "
                      "geometry)" if dropped > 0 else "")
                   + f", from {ds.title}. GeoParquet 1.1 in EPSG:4326 (lon/lat).")
    item = pystac.Item(id=x.slug, geometry=geometry, bbox=bbox, datetime=when, start_datetime=start,
                       end_datetime=end, properties={"title": x.name, "description": description,
                                                     "created": facts.created, DATETIME_SOURCE: ds.datetime_source})
    if facts.code_versions:
        item.stac_extensions.append(PROCESSING_SCHEMA)
        item.properties["processing:software"] = dict(facts.code_versions)

    table = TableExtension.ext(item, add_if_missing=True)
    table.columns = _columns(x, domain_assets or {})
    table.row_count = x.rows
    if any(c.name == "geometry" for c in x.columns):
        table.primary_geometry = "geometry"
    ProjectionExtension.ext(item, add_if_missing=True).code = CRS

    for key, f in x.files.items():
        if key == "hex":
            _hex_asset(item, x, f, ds)
        elif key == "pmtiles":
            asset = _add_asset(item, key, _asset(f, "Vector tiles of the layer (PMTiles v3 archive)."), f)
            ProjectionExtension.ext(asset).code = PMTILES_CRS
        elif key == "geoparquet":
            _add_asset(item, key, _asset(f, "The layer's features: GeoParquet 1.1, EPSG:4326, bbox covering column, "
                                            "row groups in Hilbert order. Columns: table:columns."), f)
        else:  # thumbnail and anything later
            _add_asset(item, key, _asset(f), f)
    return item


def raster_item(facts: DatasetFacts, r: RasterFacts) -> pystac.Item:
    """The Item of one raster layer: its COG, with the projection and raster extensions."""
    ds = facts.dataset
    when, start, end = _when(ds)
    geometry, bbox = footprint(r.bbox)
    item = pystac.Item(id=r.slug, geometry=geometry, bbox=bbox, datetime=when, start_datetime=start, end_datetime=end,
                       properties={"title": r.name, "created": facts.created, DATETIME_SOURCE: ds.datetime_source,
                                   "description": f"{r.name}: a {r.shape[1]} x {r.shape[0]} raster of {len(r.bands)} "
                                                  f"band(s) from {ds.title}, as a Cloud-Optimized GeoTIFF."})
    proj = ProjectionExtension.ext(item, add_if_missing=True)
    proj.code, proj.shape, proj.transform = r.crs, r.shape, r.transform
    if r.crs_wkt2:  # a CRS without an EPSG code is described in full
        proj.wkt2 = r.crs_wkt2
    about = {"cog": "Cloud-Optimized GeoTIFF: tiled, overviews, lossless compression.",
             "geozarr": ("GeoZarr (Zarr v3, sharded): one group per resolution level, listed in the root's `multiscales`; "
                         "`proj:`/`spatial:` conventions and a CF grid mapping with the CRS."),
             "hex": "Per band statistics of the pixels in each H3 cell, h0-partitioned like the vector hex. "
                    + readers.H0_TYPES}
    if "hex" in r.files and r.hex_columns:  # which resolution, and whether the pixel size or the catalog chose it
        item.properties["cng:h3_resolution"] = int(r.hex_columns[0][1:])
        if r.hex_resolution_source:
            item.properties["cng:h3_resolution_source"] = r.hex_resolution_source
    for key, f in r.files.items():
        asset = _add_asset(item, key, _asset(f, about.get(key)), f)
        if key in ("cog", "geozarr"):
            asset.extra_fields["bands"] = [_band(i, b, r.resolution) for i, b in enumerate(r.bands)]
            if RASTER_SCHEMA not in item.stac_extensions:
                item.stac_extensions.append(RASTER_SCHEMA)
    return item


def _band(i: int, band: dict, resolution: float) -> dict:
    out = {"name": f"b{i + 1}", "data_type": band["data_type"], "raster:spatial_resolution": resolution}
    nodata = band.get("nodata")
    if nodata is not None:  # STAC spells the non-finite values out; JSON has no NaN
        out["nodata"] = "nan" if math.isnan(nodata) else ("inf" if nodata > 0 else "-inf") if math.isinf(nodata) else nodata
    return out


def _providers(ds: Dataset) -> list[pystac.Provider]:  # their roles are STAC's, checked when the catalog loaded
    return [pystac.Provider(name=p.name, roles=list(p.roles) or None, url=p.url) for p in ds.providers]


def dataset_collection(facts: DatasetFacts) -> pystac.Collection:
    """The dataset's Collection, with one Item per spatial layer and the non-spatial tables as Collection assets.
    Asset hrefs are the facts' hrefs (absolute: a public base URL, or local paths)."""
    _check_hrefs(facts)
    ds = facts.dataset
    when, start, end = _when(ds)
    license_id, license_text = stac_license(ds.license)
    domain_assets = {t.name: t.slug for t in facts.tables if t.slug.startswith(DOMAIN_KEY_PREFIX)}
    items = [layer_item(facts, x, domain_assets) for x in facts.layers] + [raster_item(facts, r) for r in facts.rasters]

    paragraphs = [(ds.description or "").strip() or ds.title]
    if license_text:
        paragraphs.append(f"Licence: {license_text}")
    if ds.citation:
        paragraphs.append(f"Citation: {' '.join(ds.citation.split())}")
    if ds.doi and (not ds.citation or ds.doi not in ds.citation):
        paragraphs.append(f"DOI: https://doi.org/{ds.doi}")
    extent = pystac.Extent(pystac.SpatialExtent([union_bbox([i.bbox for i in items if i.bbox])]),
                           pystac.TemporalExtent([[start or when, end or when]]))
    col = pystac.Collection(id=ds.name, title=ds.title, description="\n\n".join(paragraphs), extent=extent,
                            license=license_id, keywords=list(ds.keywords) or None, providers=_providers(ds) or None,
                            catalog_type=pystac.CatalogType.SELF_CONTAINED)
    col.extra_fields[DATETIME_SOURCE] = ds.datetime_source
    if license_id != "other":
        col.add_link(pystac.Link("license", f"https://spdx.org/licenses/{license_id}.html", pystac.MediaType.HTML,
                                 title=license_id))
    if facts.has_map():  # written by the docs beside the products, from the same facts
        col.add_link(pystac.Link("preview", facts.href_base + layout.MAP, pystac.MediaType.HTML,
                                 title="Map: every spatial layer's vector tiles (MapLibre GL JS, PMTiles)"))
    if ds.doi:
        col.add_link(pystac.Link("cite-as", f"https://doi.org/{ds.doi}", pystac.MediaType.HTML, title=f"DOI {ds.doi}"))

    TableExtension.ext(col, add_if_missing=True)
    # pystac's `tables` setter writes the table:v1.0 mapping; table v1.2.0 wants a list of Table objects.
    col.extra_fields["table:tables"] = (
        [{"name": x.slug, "description": f"{x.name}: spatial layer, the Item `{x.slug}`"} for x in facts.layers]
        + [{"name": t.slug, "description": f"{t.name}: " + ("coded-value domain" if t.slug.startswith(DOMAIN_KEY_PREFIX)
                                                            else "non-spatial table") + f", the Collection asset `{t.slug}`"}
           for t in facts.tables])
    for t in facts.tables:
        f = t.files["table"]
        if t.slug.startswith(DOMAIN_KEY_PREFIX):
            users = [f"{x.slug}.{c.name}" for x in [*facts.layers, *facts.tables] for c in x.columns if c.domain == t.name]
            about = (f"FileGDB coded-value domain `{t.name}`: one row per code with its label."
                     + (f" Used by {', '.join(users)}." if users else ""))
        else:
            about = f"Non-spatial table `{t.name}` of the source, as Parquet."
        asset = _add_asset(col, t.slug, _asset(f, about), f)
        table = TableExtension.ext(asset, add_if_missing=True)
        table.columns = _columns(t, domain_assets)
        table.row_count = t.rows

    for item in items:
        col.add_item(item)
    return col


def write_dataset_stac(facts: DatasetFacts, out_dir: str | Path) -> list[Path]:
    """Write `collection.json` and one Item per spatial layer (`<slug>/<slug>.json`) under `out_dir` (the dataset
    folder's `stac/`, or a staging copy of it), with relative links only (a self-contained catalog: upload the
    folder as is). Asset hrefs are the facts' public URLs or, for facts gathered with href_base '', relative to
    each file, so the dataset folder works wherever it is copied. Returns the files written, the Collection
    first. Write into a fresh (staging) folder: files of layers that no longer exist are not removed."""
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    relative = not facts.href_base
    if relative:  # absolute paths under the folder `out` stands in, made relative once every file has its place
        facts = with_href_base(facts, out.parent.as_posix() + "/")
    col = dataset_collection(facts)
    col.normalize_hrefs(str(out))
    if relative:
        _relative_hrefs(col)
    col.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
    return [Path(col.self_href), *(Path(i.self_href) for i in col.get_items())]


def _relative_hrefs(col: pystac.Collection) -> None:
    """Asset hrefs and the preview link (local paths) made relative to the file that holds them (pystac makes only
    the catalog's own links relative, and not the assets of a Collection)."""
    for owner in [col, *col.get_items()]:
        here = os.path.dirname(owner.get_self_href())
        for asset in owner.assets.values():
            asset.href = os.path.relpath(asset.href, here)
        for link in owner.links:
            if link.rel == "preview":
                link.target = os.path.relpath(link.href, here)


def root_catalog(collection_hrefs: dict[str, str], out_path: str | Path, *, id: str = "cng-assets",
                 title: str = "Cloud-native geospatial assets",
                 description: str = "Cloud-native products (GeoParquet, PMTiles, H3 hex, Parquet tables) of "
                                    "geospatial datasets, one Collection per dataset.") -> Path:
    """Write the root `catalog.json` at `out_path`, linking each dataset's Collection (name -> href: absolute, or
    relative to the catalog's folder). Returns the path written."""
    out = Path(out_path).resolve()
    if out.suffix != ".json":
        out = out / "catalog.json"
    cat = pystac.Catalog(id=id, description=description, title=title, catalog_type=pystac.CatalogType.SELF_CONTAINED)
    for name in sorted(collection_hrefs):
        cat.add_link(pystac.Link(pystac.RelType.CHILD, collection_hrefs[name], pystac.MediaType.JSON, title=name))
    out.parent.mkdir(parents=True, exist_ok=True)
    cat.set_self_href(str(out))
    cat.save_object(include_self_link=False)
    return out


__all__ = ["VERSION", "dataset_collection", "footprint", "layer_item", "root_catalog", "stac_license",
           "write_dataset_stac"]
