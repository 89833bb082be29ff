"""The `cng_assets` code location: every catalog dataset's asset graph, with this environment's resources."""

from __future__ import annotations

import dagster as dg

from cng_assets.catalog import Dataset, load_catalog
from cng_assets.defs.hex import hex_assets
from cng_assets.defs.resources import resources
from cng_assets.defs.vector import vector_assets


def build_definitions(datasets: list[Dataset], data_dir: str | None = None) -> dg.Definitions:
    assets = [a for ds in datasets for a in [*vector_assets(ds), *hex_assets(ds, dg.AssetKey([ds.name, "geoparquet"]))]]
    return dg.Definitions(assets=assets, resources=resources(data_dir))


defs = build_definitions(list(load_catalog().values()))
