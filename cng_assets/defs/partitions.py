"""Per-dataset dynamic partitions. Each product asset has its own set of keys, so every key that exists is a
partition that really gets built: a table layer never shows up as a "missing" GeoParquet partition."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

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
    """Chunk numbers 000..N-1 (N: the catalog's `h3.max_chunks`), shared by the dataset's polygon and raster
    layers. A layer's plan uses the first n; the chunk sensor records the rest as empty (docs/hex-partitions.md)."""
    return dg.DynamicPartitionsDefinition(name=f"{ds.name}__chunks")


def chunk_keys(ds: Dataset) -> list[str]:
    return [chunk_key(k) for k in range(ds.h3.max_chunks)]


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


def partition_keys(ds: Dataset, inv: Inventory, observed: bool) -> dict[str, list[str]]:
    """Which keys each partition set of the dataset must hold for this inventory: the one place that decides.
    Chunk keys are registered whole, once, so a new plan never adds keys that other layers would then miss."""
    out = {table_partitions(ds).name: inv.table_keys(), feature_partitions(ds).name: inv.keys(POLYGON, OTHER),
           polygon_partitions(ds).name: inv.keys(POLYGON), raster_partitions(ds).name: inv.keys(RASTER),
           chunk_partitions(ds).name: chunk_keys(ds)}
    if observed:
        out[source_partitions(ds).name] = inv.table_keys() + inv.keys(POLYGON, OTHER, RASTER)
    return out


def new_partition_keys(ds: Dataset, inv: Inventory, observed: bool, existing) -> dict[str, list[str]]:
    """partition_keys less those already there (`existing(name)` lists a set's keys)."""
    out = {}
    for name, keys in partition_keys(ds, inv, observed).items():
        have = set(existing(name))
        if new := [k for k in keys if k not in have]:
            out[name] = new
    return out


@dataclass(frozen=True)
class Chunked:
    """A product built in chunk partitions: `plan` (its materialization's `chunks` says how many a layer uses) ->
    `chunks` (chunk x layer) -> `product` (per layer, consolidating the layer's chunks)."""

    plan: str
    chunks: str
    product: str


CHUNKED = (Chunked("hex_plan", "hex_chunk", "hex"), Chunked("cog", "raster_hex_chunk", "raster_hex"))
CHUNK_PARENTS = {c.chunks: c.plan for c in CHUNKED}  # chunk asset -> the asset that plans its chunks


def planned_chunks(instance: dg.DagsterInstance, ds: Dataset, chunk_asset: str, layer: str) -> int | None:
    """How many chunks the layer's latest plan (or COG) made: its materialization's `chunks`; None before one."""
    records = instance.fetch_materializations(dg.AssetRecordsFilter(
        asset_key=dg.AssetKey([ds.name, CHUNK_PARENTS[chunk_asset]]), asset_partitions=[layer]), limit=1).records
    meta = records[0].asset_materialization.metadata if records else {}
    return int(meta["chunks"].value) if "chunks" in meta else None


def empty_chunks(ds: Dataset, asset: str, layer: str, n: int) -> list[dg.AssetMaterialization]:
    """A layer planned with n chunks: its chunk keys n..N-1 recorded as materialized and empty, without a run."""
    return [dg.AssetMaterialization(asset_key=[ds.name, asset], partition=dg.MultiPartitionKey({"chunk": c, "layer": layer}),
                                    description=f"empty: the layer's plan has {n} chunks",
                                    metadata={"empty": True, "units": 0, "cells": 0}) for c in chunk_keys(ds)[n:]]
