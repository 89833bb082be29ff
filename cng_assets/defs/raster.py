"""Raster layers of a dataset: source[layer] -> cog (a Cloud-Optimized GeoTIFF, checked as one) -> geozarr, and
cog[layer] -> raster_hex_chunk (per chunk of rows x layer, the same chunk dimension and pool as vector hex) ->
raster_hex (per layer, `hex/<layer>/h0=<cell>/`, the same uint64 ids as vector hex so the two join).
Chunks read the COG, not the source: tiled, so each band of rows is a few range requests, and already in the
CRS the catalog asked for."""

import json
from contextlib import ExitStack
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import rasterio

from cng_assets.catalog import Dataset, H3Settings
from cng_assets.defs import products
from cng_assets.defs.automation import AFTER_CHUNKS
from cng_assets.defs.hex import CHUNK_POOL
from cng_assets.defs.partitions import by_layer, chunk_partitions, raster_partitions
from cng_assets.defs.pods import op_tags
from cng_assets.defs.sources import source_dep
from cng_assets.defs.stored import stored
from cng_assets.storage import ProductStorage
from cng_assets.transforms import layout
from cng_assets.transforms.hex.consolidate import HexCheck, parents_check
from cng_assets.transforms.hex.fill import HexSettings
from cng_assets.transforms.legacy import inspect_tiff
from cng_assets.transforms.raster import cog, geozarr
from cng_assets.transforms.raster import hex as raster_hex
from cng_assets.transforms.raster.info import row_chunks
from cng_assets.transforms.verify import raster as raster_checks


def raster_layer(storage: ProductStorage, ds: Dataset, slug: str):
    with products.input_errors(ds, slug):
        return products.discover(storage, ds).layer(slug)


def chunk_rows(ds: Dataset, height: int, width: int) -> list[tuple[int, int]]:
    return row_chunks(height, width, ds.h3.max_chunks, ds.raster.target_pixels_per_chunk)


def _cog_shape(storage: ProductStorage, ds: Dataset, slug: str) -> tuple[str, int, int]:
    """GDAL path, height and width of the layer's COG."""
    key = products.key(ds, layout.cog(slug))
    if not storage.exists(ds.bucket, key):
        raise dg.Failure(f"{ds.name}/{slug}: no COG yet", metadata={"what to do": f"materialize cog[{slug}] first"})
    path = storage.gdal_path(ds.bucket, key)
    with rasterio.Env(**storage.gdal_options()), rasterio.open(path) as r:
        return path, r.height, r.width


def hex_resolution(ds: Dataset, cog_path: str) -> tuple[HexSettings, str]:
    """A raster's hex settings and where the resolution came from: the catalog's `raster.resolution` when it names
    one (refused above the cell budget), else the pixel size's (the finest whose average cell is at least a pixel).
    Parents: the two above and 0."""
    if ds.raster.resolution is not None:
        res, source = ds.raster.resolution, "catalog"
        raster_hex.check_cell_budget(cog_path, res, ds.h3.max_cells)
    else:
        res, source = raster_hex.raster_resolution(cog_path), "pixel size"
    return HexSettings(res, tuple(H3Settings(resolution=res).parents), ds.h3.containment), source


def _stats(ds: Dataset) -> dict[str, list[str]] | None:
    """The catalog's statistics for every band, always with `count` (what the pixel check adds up)."""
    return None if ds.raster.stats is None else {"*": sorted({*ds.raster.stats, "count"})}


def raster_assets(ds: Dataset) -> list:
    rasters, chunks = raster_partitions(ds), chunk_partitions(ds)
    layer_of = by_layer()
    # the catalog fields each reads (see HEX_CELLS in hex.py): a chunk's rows depend on the chunking, the product not
    hex_cells = ("raster.resolution", "raster.stats")
    chunk_code = ds.code_version(raster_hex.VERSION, *hex_cells, "h3.max_chunks", "raster.target_pixels_per_chunk")

    @dg.asset(key=[ds.name, "cog"], op_tags=op_tags(ds, "cog"), partitions_def=rasters,
              deps=[source_dep(ds)],
              group_name=ds.name, kinds={"tiff"},
              code_version=ds.code_version(cog.VERSION, "source", "raster.to_wgs84", "raster.categorical", "crs"),
              description="The raster as a Cloud-Optimized GeoTIFF: tiled, overviews, lossless compression chosen for "
                          "the data type, nodata kept, native CRS unless the catalog asks for EPSG:4326.",
              check_specs=products.blocking_check_specs([ds.name, "cog"], rasters, {
                  "is_cog": "tiled, with overviews, laid out as a COG (GDAL)"}))
    def cog_layer(context: dg.AssetExecutionContext, storage: ProductStorage):
        slug = context.partition_key
        layer = raster_layer(storage, ds, slug)
        key = products.key(ds, layout.cog(slug))
        with products.input_errors(ds, slug), storage.publish(ds.bucket, key) as tmp:
            stats = cog.write_cog(layer.raster["path"], tmp, to_wgs84=ds.raster.to_wgs84,
                                  categorical=ds.raster.categorical, gdal_options=storage.gdal_options(), crs=ds.crs)
            findings = inspect_tiff(key, str(tmp), {}).findings
            check = dg.AssetCheckResult(check_name="is_cog", passed=not findings,
                                        metadata={"findings": "; ".join(findings) or "none"})
            yield from products.blocking_checks([check], f"{ds.name}/{slug}: the written file is not a COG")
        yield dg.MaterializeResult(
            metadata={**stored(storage, ds.bucket, key),
                      "uri": dg.MetadataValue.path(storage.uri(ds.bucket, key)), "bytes": stats.bytes,
                      "width": stats.width, "height": stats.height, "bands": stats.bands, "dtype": stats.dtype,
                      "crs": stats.crs or "", "nodata": str(stats.nodata), "compression": stats.compression,
                      "predictor": stats.predictor, "overviews": stats.overviews,
                      "chunks": len(chunk_rows(ds, stats.height, stats.width))},  # raster_hex_chunk runs the first n
            check_results=[check])

    @dg.asset(key=[ds.name, "raster_hex_chunk"], op_tags=op_tags(ds, "hex_chunk"), pool=CHUNK_POOL,
              partitions_def=dg.MultiPartitionsDefinition({"chunk": chunks, "layer": rasters}),
              deps=[dg.AssetDep(cog_layer, partition_mapping=layer_of)],
              group_name=ds.name, kinds={"parquet", "h3"}, code_version=chunk_code,
              description="Per band, the pixels of one band of rows aggregated to H3 cells (mergeable partials). "
                          "A chunk number beyond the layer's rows materializes as empty.")
    def raster_hex_chunk(context: dg.AssetExecutionContext, storage: ProductStorage) -> dg.MaterializeResult:
        keys = context.partition_key.keys_by_dimension
        slug, k = keys["layer"], int(keys["chunk"])
        path, height, width = _cog_shape(storage, ds, slug)
        bands = chunk_rows(ds, height, width)
        if k >= len(bands):  # nothing to write: raster_hex reads only this layer's own chunks
            return dg.MaterializeResult(metadata={"empty": True})
        with storage.publish_dir(ds.bucket, products.key(ds, layout.hex_chunk(slug, k))) as out:
            with products.input_errors(ds, slug), rasterio.Env(**storage.gdal_options()):
                settings, _ = hex_resolution(ds, path)
                stats = raster_hex.raster_hex(path, out, settings.resolution, settings.parents, stats=_stats(ds),
                                              rows=bands[k])
        return dg.MaterializeResult(metadata={**stats.to_dict(), "rows": list(bands[k]), "empty": False})

    @dg.asset(key=[ds.name, "raster_hex"], op_tags=op_tags(ds, "hex"), partitions_def=rasters,
              deps=[dg.AssetDep(raster_hex_chunk, partition_mapping=layer_of)], group_name=ds.name, kinds={"parquet", "h3"},
              automation_condition=AFTER_CHUNKS,
              code_version=ds.code_version(raster_hex.VERSION, *hex_cells),
              description="Per band statistics of the pixels in each H3 cell, as h0=<cell>/ partitions like vector "
                          "hex; a cell with no pixel centre takes the pixel under its own centre. Resolution: "
                          + (f"h{ds.raster.resolution} (catalog)" if ds.raster.resolution else
                             "the finest whose cells are at least a pixel (pixel size)") + ".",
              check_specs=products.blocking_check_specs([ds.name, "raster_hex"], rasters, {
                  "parents_consistent": "parent columns and h0 folder agree with h3-py (a sample of each file)",
                  "no_duplicate_cells": "each cell once",
                  "pixels_counted": "the per-band pixel counts add up to the valid pixels the chunks read",
                  "covers_raster": "cells with values ~ the valid pixels' area / cell area (h3-py, rasterio)",
                  "values_match_source": "sampled cells' statistics equal h3-py and rasterio on the COG's pixels"}))
    def raster_hex_layer(context: dg.AssetExecutionContext, storage: ProductStorage):
        slug = context.partition_key
        path, height, width = _cog_shape(storage, ds, slug)
        with products.input_errors(ds, slug), rasterio.Env(**storage.gdal_options()):
            settings, source = hex_resolution(ds, path)
        n = len(chunk_rows(ds, height, width))
        with ExitStack() as stack:  # every chunk stays readable (downloaded, on S3) until consolidation is done
            dirs = [Path(stack.enter_context(storage.local_path(ds.bucket, products.key(ds, layout.hex_chunk(slug, k)))))
                    for k in range(n)]
            missing = [k for k, d in enumerate(dirs) if not (d / raster_hex.MARKER).exists()]
            if missing:
                raise dg.Failure(f"{ds.name}/{slug}: raster hex chunks {missing} are missing",
                                 metadata={"what to do": f"materialize raster_hex_chunk for layer {slug}, then raster_hex"})
            valid = sum(_chunk_valid(d) for d in dirs)
            with storage.publish_dir(ds.bucket, products.key(ds, layout.hex(slug))) as staged:
                rows = raster_hex.consolidate_raster_hex(dirs, staged, settings.resolution, settings.parents, _stats(ds),
                                                         resolution_source=source)
                found = [*_checks(staged, settings, valid, rows.sampled),
                         *raster_checks.check_raster_hex(staged, path, settings.resolution, gdal_options=storage.gdal_options())]
                checks = products.check_results(found)
                yield from products.blocking_checks(checks, f"{ds.name}/{slug}: raster hex")
        for k in range(n):
            storage.delete(ds.bucket, products.key(ds, layout.hex_chunk(slug, k)))
        yield dg.MaterializeResult(
            metadata={**stored(storage, ds.bucket, products.key(ds, layout.hex(slug))),
                      "dagster/row_count": sum(rows.values()), "h0_partitions": len(rows), "chunks": n,
                      "resolution": settings.resolution, "resolution_source": source, "parents": list(settings.parents),
                      "uri": dg.MetadataValue.path(storage.uri(ds.bucket, products.key(ds, layout.hex(slug))))},
            check_results=checks)

    @dg.asset(key=[ds.name, "geozarr"], op_tags=op_tags(ds, "geozarr"), partitions_def=rasters,
              deps=[dg.AssetDep(cog_layer, partition_mapping=dg.IdentityPartitionMapping())], group_name=ds.name,
              kinds={"zarr"}, code_version=ds.code_version(geozarr.VERSION, "raster.categorical"),
              description="The raster as GeoZarr (Zarr v3, sharded): one group per level, halving down to one chunk, "
                          "listed in `multiscales` (Zarr conventions, with `proj:` and `spatial:`); CF grid mapping "
                          "with the CRS; read from the COG's overviews. A rotated raster is resampled north-up.",
              check_specs=products.blocking_check_specs([ds.name, "geozarr"], rasters, {
                  "corners_match_source": "level 0's corner pixel centres (xarray.open_zarr) equal the COG's transform "
                                          "(rotated: the north-up grid), footprints agree",
                  "values_match_source": "values xarray decodes by default equal the COG's pixel under each centre "
                                         "(a sample; nodata as NaN)"}))
    def geozarr_layer(context: dg.AssetExecutionContext, storage: ProductStorage):
        slug = context.partition_key
        path, _, _ = _cog_shape(storage, ds, slug)
        key = products.key(ds, layout.geozarr(slug))
        with products.input_errors(ds, slug), storage.publish_dir(ds.bucket, key) as out:
            stats = geozarr.write_geozarr(path, out, categorical=ds.raster.categorical, gdal_options=storage.gdal_options())
            checks = products.check_results(raster_checks.check_geozarr(out, path, gdal_options=storage.gdal_options()))
            yield from products.blocking_checks(checks, f"{ds.name}/{slug}: GeoZarr")
        yield dg.MaterializeResult(metadata={**stored(storage, ds.bucket, key),
                                             "uri": dg.MetadataValue.path(storage.uri(ds.bucket, key)),
                                             "levels": stats.levels, "bands": stats.bands, "dtype": stats.dtype,
                                             "reduction": stats.reduction, "north_up_resampled": stats.north_up},
                                   check_results=checks)

    return [cog_layer, raster_hex_chunk, raster_hex_layer, geozarr_layer]


def _chunk_valid(chunk_dir: Path) -> int:
    run = json.loads((chunk_dir / raster_hex.MARKER).read_text())["run"]
    return int(run["valid_pixels"]) - int(run["outside"])


def _checks(out: Path, settings, valid_pixels: int, sampled: list[int]) -> list:
    """Parents as vector hex checks them; each cell once; and the pixel counts (less the centre samples) against
    what the chunks read. A file at a time: a cell lives in its own h0 folder only, so duplicates can only be
    within one file."""
    cell, rows, distinct, totals = f"h{settings.resolution}", 0, 0, None
    for f in sorted(out.glob("h0=*/*.parquet")):
        counts = [c for c in pq.read_schema(f).names if c.endswith("_count")]
        t = pq.read_table(f, columns=[cell, *counts])
        rows, distinct = rows + t.num_rows, distinct + len(t.column(cell).unique())
        sums = [int(t.column(c).to_numpy(zero_copy_only=False).sum()) for c in counts]
        totals = sums if totals is None else [a + b for a, b in zip(totals, sums)]
    totals = [t - s for t, s in zip(totals or [], sampled)]
    counted = bool(totals) and max(totals) <= valid_pixels <= sum(totals)
    return [parents_check(out, settings),
            HexCheck("no_duplicate_cells", distinct == rows, {"rows": rows, "distinct_cells": distinct}),
            HexCheck("pixels_counted", counted, {"valid_pixels": valid_pixels, "counted_per_band": totals,
                                                       "centre_samples_per_band": sampled})]
