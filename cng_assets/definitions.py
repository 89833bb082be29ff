"""The `cng_assets` code location: every catalog dataset's asset graph, with this environment's resources."""

from __future__ import annotations

import dagster as dg

from cng_assets.catalog import Dataset, load_catalog
from cng_assets.defs.automation import automation_sensor
from cng_assets.defs.environment import loaded_datasets
from cng_assets.defs.failures import chunk_failure_sensor, chunk_job
from cng_assets.defs.hex import hex_assets
from cng_assets.defs.mirror import mirror_asset
from cng_assets.defs.pods import executor_from_env
from cng_assets.defs.publish import publish_assets, stac_catalog_asset
from cng_assets.defs.raster import raster_assets
from cng_assets.defs.resources import resources
from cng_assets.defs.sensors import chunk_run_sensor, raw_upload_sensor
from cng_assets.defs.sources import is_observed
from cng_assets.defs.vector import vector_assets

DESCRIBED = ("table", "geoparquet", "hex", "cog", "geozarr", "raster_hex")  # what STAC and the README describe


def build_definitions(datasets: list[Dataset], data_dir: str | None = None) -> dg.Definitions:
    assets, sensors, jobs = [], [], []
    for ds in datasets:
        job = chunk_job(ds)
        jobs.append(job)
        sensors += [raw_upload_sensor(ds)] * is_observed(ds) + [chunk_run_sensor(ds),
                                                                 chunk_failure_sensor(ds, job)]
        gp = dg.AssetKey([ds.name, "geoparquet"])
        layer_assets = [*vector_assets(ds), *hex_assets(ds, gp), *raster_assets(ds)]
        upstream = [a.key for a in layer_assets if a.key.path[-1] in DESCRIBED]
        assets += with_owners_and_tags(ds, [*layer_assets, *publish_assets(ds, gp, upstream)]
                                       + ([mirror_asset(ds)] if ds.mirror else []))
    return dg.Definitions(assets=[*assets, stac_catalog_asset(datasets)], sensors=[*sensors, automation_sensor()],
                          jobs=jobs, resources=resources(data_dir), executor=executor_from_env())


def with_owners_and_tags(ds: Dataset, assets: list) -> list:
    """The catalog's owners and tags on every asset of the dataset (the UI shows and filters by them); an observed
    raw source (a SourceAsset, which has no specs to map) keeps its own."""
    def mark(spec: dg.AssetSpec) -> dg.AssetSpec:
        return spec.replace_attributes(owners=[*spec.owners, *ds.owners], tags={**spec.tags, **ds.tags})

    return [a.map_asset_specs(mark) if isinstance(a, dg.AssetsDefinition) else a for a in assets]


def definitions_with(ds: Dataset, data_dir: str | None = None) -> dg.Definitions:
    """The code location's graph with `ds` added (or replacing its catalog entry): what an ad-hoc run uses, so its
    runs have the dependencies and code versions that the UI and `cng-assets status` see."""
    catalog = {x.name: x for x in loaded_datasets(load_catalog())}
    return build_definitions(list({**catalog, ds.name: ds}.values()), data_dir)


defs = build_definitions(loaded_datasets(load_catalog()))
