"""Raster layers of a dataset: source[layer] -> cog (a Cloud-Optimized GeoTIFF, checked as one)."""

import dagster as dg

from cng_assets.catalog import Dataset
from cng_assets.defs import products
from cng_assets.defs.k8s import op_tags
from cng_assets.defs.partitions import raster_partitions
from cng_assets.defs.sources import source_dep
from cng_assets.storage import ProductStorage
from cng_assets.transforms.legacy import inspect_tiff
from cng_assets.transforms.raster import cog


def raster_layer(storage: ProductStorage, ds: Dataset, slug: str):
    with products.input_errors(ds, slug):
        return products.discover(storage, ds).layer(slug)


def raster_assets(ds: Dataset) -> list:
    rasters = raster_partitions(ds)

    @dg.asset(key=[ds.name, "cog"], op_tags=op_tags(ds, "cog"), deps=[source_dep(ds)], partitions_def=rasters,
              group_name=ds.name, kinds={"tiff"}, code_version=ds.code_version(cog.VERSION, "source", "raster"),
              description="The raster as a Cloud-Optimized GeoTIFF: tiled, overviews, lossless compression chosen for "
                          "the data type, nodata kept, native CRS unless the catalog asks for EPSG:4326.",
              check_specs=[dg.AssetCheckSpec("is_cog", asset=[ds.name, "cog"], blocking=True,
                                             description="tiled, with overviews, laid out as a COG (GDAL)")])
    def cog_layer(context: dg.AssetExecutionContext, storage: ProductStorage) -> dg.MaterializeResult:
        slug = context.partition_key
        layer = raster_layer(storage, ds, slug)
        key = products.cog_key(ds, slug)
        with products.input_errors(ds, slug), storage.publish(ds.bucket, key) as tmp:
            stats = cog.write_cog(layer.raster["path"], tmp, to_wgs84=ds.raster.to_wgs84,
                                  categorical=ds.raster.categorical, gdal_options=storage.gdal_options())
            findings = inspect_tiff(key, str(tmp), {}).findings
            if findings:  # raising here keeps the previous product
                raise dg.Failure(f"{ds.name}/{slug}: the written file is not a COG: {'; '.join(findings)}")
        return dg.MaterializeResult(
            metadata={"uri": dg.MetadataValue.path(storage.uri(ds.bucket, key)), "bytes": stats.bytes,
                      "width": stats.width, "height": stats.height, "bands": stats.bands, "dtype": stats.dtype,
                      "crs": stats.crs or "", "nodata": str(stats.nodata), "compression": stats.compression,
                      "predictor": stats.predictor, "overviews": stats.overviews},
            check_results=[dg.AssetCheckResult(check_name="is_cog", passed=True, metadata={"findings": "none"})])

    return [cog_layer]
