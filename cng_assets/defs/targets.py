"""Which asset partitions to rebuild for a set of layers, as one backfill. Shared by the raw-upload sensor and
`cng-assets reprocess`, so both ask Dagster for the same thing and its backfill daemon orders the steps. What
follows these (chunks, hex, STAC, README, catalog, mirror) is started by the chunk sensor and by automation."""

from __future__ import annotations

import dagster as dg

from cng_assets.catalog import Dataset
from cng_assets.dagster_private import AssetKeyPartitionKey
from cng_assets.transforms.layers import OTHER, POLYGON, RASTER, Inventory

LAYER_ASSETS = ("layers", "table", "geoparquet", "pmtiles", "thumbnail", "hex_plan", "cog", "geozarr")


def _key(ds: Dataset, asset: str) -> dg.AssetKey:
    return dg.AssetKey([ds.name, asset])


def layer_targets(ds: Dataset, inv: Inventory, slugs: set[str]) -> set[AssetKeyPartitionKey]:
    """The layer inventory, then per layer its table; or its GeoParquet, tiles, thumbnail and hex plan; or, for a
    raster, its COG and GeoZarr."""
    out = {AssetKeyPartitionKey(_key(ds, "layers"))}
    for slug in slugs & set(inv.table_keys()):
        out.add(AssetKeyPartitionKey(_key(ds, "table"), slug))
    for layer in inv.layers:
        if layer.slug in slugs and layer.kind == RASTER:
            out |= {AssetKeyPartitionKey(_key(ds, a), layer.slug) for a in ("cog", "geozarr")}
        elif layer.slug in slugs and layer.kind in (POLYGON, OTHER):
            out |= {AssetKeyPartitionKey(_key(ds, a), layer.slug) for a in ("geoparquet", "pmtiles", "thumbnail")}
            if layer.kind == POLYGON:
                out.add(AssetKeyPartitionKey(_key(ds, "hex_plan"), layer.slug))
    return out

