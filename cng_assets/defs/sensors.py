"""Sensors that start work without a person. Each declares the assets it requests, as the daemon requires.

`<dataset>__raw_uploads` watches an uploaded source (a file, or every object of a `.gdb` folder) and the
dataset's catalog entry. On a new or changed object it runs discovery, adds partitions for new layers, records
the changed layers' new data versions, and requests one backfill of only those layers' products. Deletions and
layers that left the source are reported; nothing downstream is deleted. Its cursor keeps a digest of the
listing and one version per layer, so it stays small however many files the source has.

`<dataset>__chunk_runs` follows each new hex plan (and each new COG, for raster hex) with one run per chunk the
plan made (the count is known only once the plan exists), each at the memory the layer's chunks last succeeded
with, and records the layer's remaining chunk keys as empty without a run. The layer's hex, and the dataset's
STAC and README, then follow by declarative automation (automation.py).
"""

from __future__ import annotations

import hashlib
import json

import dagster as dg

from cng_assets.catalog import Dataset
from cng_assets.dagster_private import backfill_run_request
from cng_assets.defs import products
from cng_assets.defs.environment import raw_interval, sensor_interval, sensor_status
from cng_assets.defs.failures import last_good_memory
from cng_assets.defs.partitions import CHUNK_PARENTS, chunk_key, empty_chunks, new_partition_keys
from cng_assets.defs.pods import CHUNK_RUN_TAGS, MEMORY_TAG, RETRY_FROM_FAILURE, memory_run_config
from cng_assets.defs.sources import empty_local_folder, is_observed, layer_versions, observations, recorded_versions
from cng_assets.defs.stored import source_files
from cng_assets.defs.targets import LAYER_ASSETS, layer_targets
from cng_assets.errors import CngInputError
from cng_assets.storage import ProductStorage

RUNNER_TAG = "cng/runner"  # runs made by `cng-assets run` order their own stages; sensors leave them alone
PLANS_PER_TICK = 5  # at most this many new plans (up to 200 chunk runs each) per tick, so a tick stays short


def _listing_digest(files: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(sorted(files.items())).encode()).hexdigest()[:32]


def raw_upload_sensor(ds: Dataset) -> dg.SensorDefinition:
    selection = dg.AssetSelection.assets(*[dg.AssetKey([ds.name, a]) for a in LAYER_ASSETS])

    @dg.sensor(name=f"{ds.name}__raw_uploads", minimum_interval_seconds=raw_interval(ds), default_status=sensor_status(ds),
               asset_selection=selection,
               description=f"New or changed objects of `{ds.source}` -> discovery, new layer partitions, and a "
                           "backfill of the changed layers' products.")
    def _sensor(context: dg.SensorEvaluationContext, storage: ProductStorage):
        seen = json.loads(context.cursor) if context.cursor else {}
        files = source_files(storage, ds.source)
        listing, catalog = _listing_digest(files), ds.code_version("catalog")
        if not files:
            deleted = bool(seen.get("files"))
            if deleted:
                context.log.warning(f"{ds.name}: source {ds.source} was deleted; its products are kept")
            folder = empty_local_folder(storage, ds)
            why = (f"{ds.source} has no files yet: copy a file GDAL reads into {folder}" if folder else
                   f"{ds.source} is missing" + " (deleted since the last tick)" * deleted)
            return dg.SensorResult(skip_reason=why, cursor=json.dumps({**seen, "listing": listing, "files": 0}))
        if listing == seen.get("listing") and seen.get("catalog") == catalog:
            return dg.SkipReason(f"{ds.source}: no new or changed objects")
        try:
            inv = products.discover(storage, ds, files)
            versions = layer_versions(storage, ds, inv, files)
        except CngInputError as e:  # e.g. a .gdb still being uploaded: the cursor stays, the next tick retries
            e.where(dataset=ds.name)
            return dg.SkipReason(f"cannot read the source yet: {e}")
        if inv.unread:
            context.log.warning(f"{ds.name}: files GDAL cannot read, left out: "
                                + "; ".join(f"{f}: {why}" for f, why in inv.unread.items()))
        old = seen["layers"] if "layers" in seen else recorded_versions(context.instance, ds, versions)
        changed = sorted(k for k, v in versions.items() if old.get(k) != v)
        gone = sorted(set(old) - set(versions))
        fewer = seen.get("files", 0) - len(files)
        if gone or fewer > 0:
            context.log.warning(f"{ds.name}: no longer in the source: layers {gone}, {max(fewer, 0)} files; products kept")
        adds = [dg.AddDynamicPartitionsRequest(name, keys) for name, keys in
                new_partition_keys(ds, inv, is_observed(ds), context.instance.get_dynamic_partitions).items()]
        runs = []
        if changed:
            tags = {"cng/dataset": ds.name, "cng/reason": "raw upload", "cng/layers": ",".join(changed)[:200], **RETRY_FROM_FAILURE}
            runs.append(backfill_run_request(layer_targets(ds, inv, set(changed)), context.repository_def.asset_graph, tags))
        cursor = json.dumps({"listing": listing, "files": len(files), "layers": versions, "catalog": catalog})
        return dg.SensorResult(run_requests=runs, dynamic_partitions_requests=adds, cursor=cursor,
                               asset_events=observations(ds, versions, changed),
                               skip_reason=None if runs else "changed objects, but no layer's data changed")

    return _sensor


def chunk_run_sensor(ds: Dataset) -> dg.SensorDefinition:
    key = {name: dg.AssetKey([ds.name, name]) for name in [*CHUNK_PARENTS, *CHUNK_PARENTS.values()]}

    @dg.sensor(name=f"{ds.name}__chunk_runs", minimum_interval_seconds=sensor_interval(), default_status=sensor_status(ds),
               asset_selection=dg.AssetSelection.assets(*[key[c] for c in CHUNK_PARENTS]),
               description="Each new hex plan (or COG) -> one run per chunk it made, at the memory the layer last "
                           "needed; the layer's other chunk keys recorded as empty, without a run.")
    def _sensor(context: dg.SensorEvaluationContext):
        instance = context.instance
        if context.cursor is None:  # first tick: follow plans made from now on, do not replay history
            latest = {c: instance.fetch_materializations(key[p], limit=1).records for c, p in CHUNK_PARENTS.items()}
            return dg.SensorResult(skip_reason="started", cursor=json.dumps(
                {c: r[0].storage_id if r else 0 for c, r in latest.items()}))
        after = json.loads(context.cursor)
        runs, events = [], []
        for chunk_asset, parent in CHUNK_PARENTS.items():
            records = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=key[parent], after_storage_id=after[chunk_asset]),
                limit=PLANS_PER_TICK, ascending=True).records
            for record in records:
                after[chunk_asset] = record.storage_id
                m = record.asset_materialization
                run = instance.get_run_by_id(record.run_id) if record.run_id else None
                if "chunks" not in m.metadata or (run is not None and RUNNER_TAG in run.tags):
                    continue
                layer, n = str(m.partition), int(m.metadata["chunks"].value)
                memory = (last_good_memory(instance, ds, layer) if chunk_asset == "hex_chunk"
                          else ds.pod("hex_chunk").memory_gib)
                # hex chunks are the failure sensor's to retry (more memory after an OOM); raster chunks Dagster's
                retry_tags = CHUNK_RUN_TAGS if chunk_asset == "hex_chunk" else RETRY_FROM_FAILURE
                runs += [dg.RunRequest(
                    run_key=f"{record.storage_id}:{chunk_key(c)}", asset_selection=[key[chunk_asset]],
                    partition_key=dg.MultiPartitionKey({"chunk": chunk_key(c), "layer": layer}),
                    run_config=memory_run_config(ds, chunk_asset, memory),
                    tags={"cng/dataset": ds.name, "cng/reason": f"new {parent}", MEMORY_TAG: str(memory),
                          **retry_tags})
                    for c in range(n)]
                events += empty_chunks(ds, chunk_asset, layer, n)
        return dg.SensorResult(run_requests=runs, asset_events=events, cursor=json.dumps(after),
                               skip_reason=None if runs or events else "no new plans")

    return _sensor
