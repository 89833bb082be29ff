"""The raw source of each dataset. A source someone uploads is an observable source asset whose data version is
its ETag (a digest over the objects of a `.gdb` folder), so a re-upload makes exactly its products stale. A source
the project builds (the demo) is a materialized asset whose data version is a digest of the file it wrote."""

from __future__ import annotations

import hashlib
import importlib
import warnings

import dagster as dg

from cng_assets.catalog import Dataset
from cng_assets.storage import ProductStorage
from cng_assets.transforms.sources import remote_version


def source_key(ds: Dataset) -> dg.AssetKey:
    return dg.AssetKey([ds.name, "source"])


def observe_source(storage: ProductStorage, ds: Dataset) -> str | None:
    return storage.source_version(ds.source) or remote_version(ds.source)


def source_asset(ds: Dataset):
    description = f"Raw source of {ds.title}: `{ds.source}`"
    if ds.source_builder is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", dg.BetaWarning)

            @dg.observable_source_asset(key=source_key(ds), description=description, group_name=ds.name,
                                        metadata={"source": ds.source}, required_resource_keys={"storage"})
            def _observe(context) -> dg.DataVersion:
                version = observe_source(context.resources.storage, ds)
                if version is None:
                    raise dg.Failure(f"{ds.name}: source {ds.source} was not found",
                                     metadata={"what to do": "upload it, or fix `source` in the catalog"})
                return dg.DataVersion(version)

        return _observe

    module, func = ds.source_builder.split(":")

    @dg.asset(key=source_key(ds), description=description + f" (built by `{ds.source_builder}`)", group_name=ds.name,
              kinds={"gdal"}, code_version="1")
    def _build(storage: ProductStorage) -> dg.MaterializeResult:
        with storage.publish(None, ds.source) as tmp:
            getattr(importlib.import_module(module), func)(tmp)
            digest = hashlib.sha256(tmp.read_bytes()).hexdigest()[:32]
        return dg.MaterializeResult(data_version=dg.DataVersion("sha256:" + digest), metadata={
            "uri": dg.MetadataValue.path(storage.uri(None, ds.source)), "bytes": storage.size(None, ds.source)})

    return _build
