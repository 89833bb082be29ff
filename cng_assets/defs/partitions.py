"""Per-dataset dynamic partitions. Each product asset has its own set of keys, so every key that exists is a
partition that really gets built: a table layer never shows up as a "missing" GeoParquet partition."""

from __future__ import annotations

import warnings

import dagster as dg

from cng_assets.catalog import Dataset
from cng_assets.transforms.layers import OTHER, POLYGON, RASTER, Inventory


def table_partitions(ds: Dataset) -> dg.DynamicPartitionsDefinition:
    """Non-spatial layers and coded-value domains -> Parquet lookup tables."""
    return dg.DynamicPartitionsDefinition(name=f"{ds.name}__tables")


def feature_partitions(ds: Dataset) -> dg.DynamicPartitionsDefinition:
    """Spatial layers (polygons and other geometries) -> GeoParquet."""
    return dg.DynamicPartitionsDefinition(name=f"{ds.name}__features")


def polygon_partitions(ds: Dataset) -> dg.DynamicPartitionsDefinition:
    """Polygon layers -> H3 hex (lines and points are not hexed)."""
    return dg.DynamicPartitionsDefinition(name=f"{ds.name}__polygons")


def raster_partitions(ds: Dataset) -> dg.DynamicPartitionsDefinition:
    """Raster layers -> COG and raster hex."""
    return dg.DynamicPartitionsDefinition(name=f"{ds.name}__rasters")


def chunk_partitions(ds: Dataset) -> dg.DynamicPartitionsDefinition:
    """Chunk numbers 000..N-1, shared by every polygon layer of the dataset (N: the most any layer needs)."""
    return dg.DynamicPartitionsDefinition(name=f"{ds.name}__chunks")


def by_layer() -> dg.MultiToSingleDimensionPartitionMapping:
    """chunk x layer -> layer: how a layer's hex depends on its chunks, and its chunks on the layer's plan or COG."""
    with warnings.catch_warnings():  # beta, and the mapping the daemon supports for this shape
        warnings.simplefilter("ignore", dg.BetaWarning)
        return dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name="layer")


def chunk_key(k: int) -> str:
    return f"{k:03d}"


def source_partitions(ds: Dataset) -> dg.DynamicPartitionsDefinition:
    """Every layer and domain of an uploaded source: its per-layer data versions, so a re-upload makes exactly
    the changed layers' products stale."""
    return dg.DynamicPartitionsDefinition(name=f"{ds.name}__source_layers")


def layer_partition_keys(ds: Dataset, inv: Inventory, observed: bool) -> list[tuple[dg.DynamicPartitionsDefinition, list[str]]]:
    """Which keys each per-layer partition set of the dataset must hold for this inventory."""
    out = [(table_partitions(ds), inv.table_keys()), (feature_partitions(ds), inv.keys(POLYGON, OTHER)),
           (polygon_partitions(ds), inv.keys(POLYGON)), (raster_partitions(ds), inv.keys(RASTER))]
    return out + [(source_partitions(ds), inv.table_keys() + inv.keys(POLYGON, OTHER, RASTER))] * observed
