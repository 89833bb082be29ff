"""The raw source of each dataset.

An uploaded source is an observable source asset partitioned by layer: each layer's data version is the source
object's ETag, or for a `.gdb` folder a digest over that layer's own table files, so a re-upload makes exactly
the changed layers' products stale. A source the project builds (the demo) is one materialized asset whose data
version is a digest of the file it wrote."""

from __future__ import annotations

import hashlib
import importlib
import warnings
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg

from cng_assets.catalog import FROM_RUN, FROM_SOURCE, Dataset
from cng_assets.dagster_private import DATA_VERSION_TAG
from cng_assets.defs import products
from cng_assets.defs.partitions import source_partitions
from cng_assets.defs.pods import op_tags
from cng_assets.defs.stored import source_files, stored
from cng_assets.errors import CngInputError
from cng_assets.storage import ProductStorage
from cng_assets.transforms import folders, gdb
from cng_assets.transforms.layers import DOMAIN_KEY_PREFIX, Inventory


def source_key(ds: Dataset) -> dg.AssetKey:
    return dg.AssetKey([ds.name, "source"])


def is_observed(ds: Dataset) -> bool:
    return ds.source_builder is None


def with_default_datetime(storage: ProductStorage, ds: Dataset) -> Dataset:
    """`ds` with the time its STAC and README give: the catalog's (or `--datetime`), else when the source last
    changed (the newest of its files, listed here since the definitions may load where the source is out of
    reach), else, when it cannot be listed (an https:// source), the processing time; each says which it is."""
    if ds.datetime_source is not None:
        return ds
    modified = storage.source_modified(ds.source)
    when = datetime.fromtimestamp(modified, timezone.utc) if modified is not None else datetime.now(timezone.utc)
    return ds.dated(when.isoformat(timespec="seconds"), FROM_SOURCE if modified is not None else FROM_RUN)


def empty_local_folder(storage: ProductStorage, ds: Dataset) -> Path | None:
    """The source's folder when it is a local folder that exists with no files in it yet (the demo inbox)."""
    try:
        path = Path(storage.source_path(ds.source))
    except CngInputError:  # missing
        return None
    return path if not str(path).startswith("/vsi") and path.is_dir() and not any(path.iterdir()) else None


def layer_versions(storage: ProductStorage, ds: Dataset, inv: Inventory, files: dict[str, str]) -> dict[str, str]:
    """A data version per layer partition key: from the layer's own file in a folder source (folders.py), its own
    tables in a FileGDB, else the source file's ETag (gdb.py)."""
    if folders.is_folder(ds.source, files):
        by_file = folders.units(files)
        return {x.slug: by_file[x.file] for x in inv.layers}
    return gdb.layer_versions(files, {x.name: x.slug for x in inv.layers},
                              [DOMAIN_KEY_PREFIX + d.slug for d in inv.domains], storage.source_path(ds.source))


def observations(ds: Dataset, versions: dict[str, str], keys) -> list[dg.AssetObservation]:
    """The events that record layers' data versions (what an observation of the source asset records)."""
    return [dg.AssetObservation(asset_key=source_key(ds), partition=k, tags={DATA_VERSION_TAG: versions[k]},
                                metadata={"source": ds.source}) for k in sorted(keys)]


def recorded_versions(instance: dg.DagsterInstance, ds: Dataset, keys) -> dict[str, str]:
    """The data version last recorded for each layer (by a run or a sensor): where a sensor with no cursor yet
    starts, so a new deployment does not rebuild what is already built from the same data."""
    out = {}
    for k in keys:
        records = instance.fetch_observations(dg.AssetRecordsFilter(asset_key=source_key(ds), asset_partitions=[k]),
                                              limit=1).records
        if records and (v := records[0].event_log_entry.asset_observation.tags.get(DATA_VERSION_TAG)):
            out[k] = v
    return out


def source_asset(ds: Dataset):
    description = f"Raw source of {ds.title}: `{ds.source}`"
    if is_observed(ds):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", dg.BetaWarning)

            @dg.observable_source_asset(key=source_key(ds), description=description + ". One partition per layer.",
                                        group_name=ds.name, metadata={"source": ds.source},
                                        partitions_def=source_partitions(ds), required_resource_keys={"storage"})
            def _observe(context) -> dg.DataVersionsByPartition:
                storage: ProductStorage = context.resources.storage
                files = source_files(storage, ds.source)
                if not files:
                    raise dg.Failure(f"{ds.name}: source {ds.source} was not found",
                                     metadata={"what to do": "upload it, or fix `source` in the catalog"})
                with products.input_errors(ds):
                    inv = products.discover(storage, ds, files)
                known = set(context.instance.get_dynamic_partitions(source_partitions(ds).name))
                versions = layer_versions(storage, ds, inv, files)
                return dg.DataVersionsByPartition({k: v for k, v in versions.items() if k in known})

        return _observe

    module, func = ds.source_builder.split(":")

    @dg.asset(key=source_key(ds), op_tags=op_tags(ds, "source"),
              description=description + f" (built by `{ds.source_builder}`)", group_name=ds.name,
              kinds={"gdal"}, code_version="1")
    def _build(storage: ProductStorage) -> dg.MaterializeResult:
        with storage.publish(None, ds.source) as tmp:
            getattr(importlib.import_module(module), func)(tmp)
            digest = hashlib.sha256(tmp.read_bytes()).hexdigest()[:32]
        return dg.MaterializeResult(data_version=dg.DataVersion("sha256:" + digest), metadata={**stored(storage, None, ds.source),
            "uri": dg.MetadataValue.path(storage.uri(None, ds.source)), "bytes": storage.size(None, ds.source)})

    return _build


def source_dep(ds: Dataset) -> dg.AssetDep:
    """A layer's products depend on their own layer of an uploaded source, or on the whole built source."""
    if is_observed(ds):
        return dg.AssetDep(source_key(ds), partition_mapping=dg.IdentityPartitionMapping())
    return dg.AssetDep(source_key(ds))
