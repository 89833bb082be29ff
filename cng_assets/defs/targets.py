"""Which asset partitions to rebuild for a set of layers, as one backfill. Shared by the raw-upload sensor and
`cng-assets reprocess`, so both ask Dagster for the same thing and its backfill daemon orders the steps."""

from __future__ import annotations

import dagster as dg
from dagster._core.definitions.assets.graph.asset_graph_subset import AssetGraphSubset  # what a backfill targets
from dagster._core.definitions.events import AssetKeyPartitionKey

from cng_assets.catalog import Dataset
from cng_assets.transforms.layers import OTHER, POLYGON, RASTER, Inventory

PER_DATASET = ("stac", "docs")


def _key(ds: Dataset, asset: str) -> dg.AssetKey:
    return dg.AssetKey([ds.name, asset])


def layer_targets(ds: Dataset, inv: Inventory, slugs: set[str]) -> set[AssetKeyPartitionKey]:
    """The layer inventory, then per layer its table; or its GeoParquet, tiles, thumbnail and hex plan; or, for a
    raster, its COG and GeoZarr (its raster hex then shows as stale: `cng-assets reprocess --stale`). The dataset's
    STAC and docs only when no hex follows (the hex sensor refreshes them after the chunks)."""
    out = {AssetKeyPartitionKey(_key(ds, "layers"))}
    for slug in slugs & set(inv.table_keys()):
        out.add(AssetKeyPartitionKey(_key(ds, "table"), slug))
    polygons = False
    for layer in inv.layers:
        if layer.slug in slugs and layer.kind == RASTER:
            out |= {AssetKeyPartitionKey(_key(ds, a), layer.slug) for a in ("cog", "geozarr")}
        elif layer.slug in slugs and layer.kind in (POLYGON, OTHER):
            out |= {AssetKeyPartitionKey(_key(ds, a), layer.slug) for a in ("geoparquet", "pmtiles", "thumbnail")}
            if layer.kind == POLYGON:
                out.add(AssetKeyPartitionKey(_key(ds, "hex_plan"), layer.slug))
                polygons = True
    if not polygons:
        out |= dataset_targets(ds)
    return out


def hex_targets(ds: Dataset, slug: str) -> set[AssetKeyPartitionKey]:
    """A layer's consolidated hex (once its chunks are in), and the dataset's STAC and docs."""
    return {AssetKeyPartitionKey(_key(ds, "hex"), slug)} | dataset_targets(ds)


def dataset_targets(ds: Dataset) -> set[AssetKeyPartitionKey]:
    return {AssetKeyPartitionKey(_key(ds, a)) for a in PER_DATASET} | {AssetKeyPartitionKey(dg.AssetKey("stac_catalog"))}


def backfill_request(targets: set[AssetKeyPartitionKey], asset_graph, tags: dict[str, str]) -> dg.RunRequest:
    """A RunRequest that the sensor daemon turns into one backfill: parents before children, each partition its
    own run (so hex chunks are separate runs, within the `hex_chunks` pool)."""
    subset = AssetGraphSubset.from_asset_partition_set(targets, asset_graph)
    return dg.RunRequest.for_asset_graph_subset(subset, tags=tags)
