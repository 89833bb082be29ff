"""Per-dataset dynamic partitions. Each product asset has its own set of keys, so every key that exists is a
partition that really gets built: a table layer never shows up as a "missing" GeoParquet partition."""

from __future__ import annotations

import dagster as dg

from cng_assets.catalog import Dataset


def table_partitions(ds: Dataset) -> dg.DynamicPartitionsDefinition:
    """Non-spatial layers and coded-value domains -> Parquet lookup tables."""
    return dg.DynamicPartitionsDefinition(name=f"{ds.name}__tables")


def feature_partitions(ds: Dataset) -> dg.DynamicPartitionsDefinition:
    """Spatial layers (polygons and other geometries) -> GeoParquet."""
    return dg.DynamicPartitionsDefinition(name=f"{ds.name}__features")
