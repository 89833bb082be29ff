"""Sensors that start work without a person.

`<dataset>__raw_uploads` watches an uploaded source (a file, or every object of a `.gdb` folder) and the
dataset's catalog entry. On a new or changed object it runs discovery, adds partitions for new layers, records
the changed layers' new data versions, and requests one backfill of only those layers' products. Deletions and
layers that left the source are reported; nothing downstream is deleted.

`<dataset>__hex_plans` follows each new hex plan with one run per chunk that plan made (the chunk count is known
only once the plan exists), each at the memory the layer's chunks last succeeded with; once every chunk of the
plan is in, it requests a backfill of the layer's consolidated hex and the dataset's STAC and docs.
"""

from __future__ import annotations

import json

import dagster as dg

from cng_assets.catalog import Dataset
from cng_assets.defs import products
from cng_assets.defs.k8s import MEMORY_TAG, last_good_memory, step_memory_config
from cng_assets.defs.partitions import chunk_key, layer_partition_keys
from cng_assets.defs.sources import is_observed, layer_versions, observations, source_files
from cng_assets.defs.targets import backfill_request, hex_targets, layer_targets
from cng_assets.errors import CngInputError
from cng_assets.storage import ProductStorage

RUNNER_TAG = "cng/runner"  # runs made by `cng-assets run` order their own stages; sensors leave them alone
INTERVAL = 300  # seconds between listings of a raw prefix


def raw_upload_sensor(ds: Dataset) -> dg.SensorDefinition:
    @dg.sensor(name=f"{ds.name}__raw_uploads", minimum_interval_seconds=INTERVAL,
               default_status=dg.DefaultSensorStatus.RUNNING,
               description=f"New or changed objects of `{ds.source}` -> discovery, new layer partitions, and a "
                           "backfill of the changed layers' products.")
    def _sensor(context: dg.SensorEvaluationContext, storage: ProductStorage):
        seen = json.loads(context.cursor) if context.cursor else {}
        before, files = seen.get("files", {}), source_files(storage, ds)
        catalog = ds.code_version("catalog")
        if not files:
            if before:
                context.log.warning(f"{ds.name}: source {ds.source} was deleted; its products are kept")
            return dg.SensorResult(skip_reason=f"{ds.source} is missing" + (" (deleted since the last tick)" * bool(before)),
                                   cursor=json.dumps({**seen, "files": {}}))
        if files == before and seen.get("catalog") == catalog:
            return dg.SkipReason(f"{ds.source}: no new or changed objects")
        try:
            inv = products.discover(storage, ds)
            versions = layer_versions(storage, ds, inv, files)
        except CngInputError as e:  # e.g. a .gdb still being uploaded: the cursor stays, the next tick retries
            e.where(dataset=ds.name)
            return dg.SkipReason(f"cannot read the source yet: {e}")
        old = seen.get("layers", {})
        changed = sorted(k for k, v in versions.items() if old.get(k) != v)
        gone = sorted(set(old) - set(versions))
        deleted = sorted(set(before) - set(files))
        if gone or deleted:
            context.log.warning(f"{ds.name}: no longer in the source: layers {gone}, files {deleted}; products kept")
        adds = []
        for parts, keys in layer_partition_keys(ds, inv, is_observed(ds)):
            new = sorted(set(keys) - set(context.instance.get_dynamic_partitions(parts.name)))
            if new:
                adds.append(parts.build_add_request(new))
        events = observations(ds, versions, changed)
        runs = []
        if changed:
            tags = {"cng/dataset": ds.name, "cng/reason": "raw upload", "cng/layers": ",".join(changed)[:200]}
            runs.append(backfill_request(layer_targets(ds, inv, set(changed)), context.repository_def.asset_graph, tags))
        cursor = json.dumps({"files": files, "layers": versions, "catalog": catalog})
        return dg.SensorResult(run_requests=runs, dynamic_partitions_requests=adds, asset_events=events, cursor=cursor,
                               skip_reason=None if runs else "changed objects, but no layer's data changed")

    return _sensor


def hex_plan_sensor(ds: Dataset) -> dg.SensorDefinition:
    plan_key, chunk_asset = dg.AssetKey([ds.name, "hex_plan"]), dg.AssetKey([ds.name, "hex_chunk"])

    @dg.sensor(name=f"{ds.name}__hex_plans", minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING,
               description="Each new hex plan -> one run per chunk it made (at the memory the layer last needed); "
                           "once every chunk is in, a backfill of the layer's hex and the dataset's STAC and docs.")
    def _sensor(context: dg.SensorEvaluationContext):
        instance = context.instance
        if context.cursor is None:  # first tick: follow plans made from now on, do not replay history
            latest = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=plan_key), limit=1).records
            return dg.SensorResult(skip_reason="started", cursor=json.dumps(
                {"after": latest[0].storage_id if latest else 0, "pending": {}}))
        seen = json.loads(context.cursor)
        pending: dict[str, list[int]] = seen["pending"]  # layer -> [plan storage id, chunks]
        records = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=plan_key, after_storage_id=seen["after"]),
                                                  limit=100, ascending=True).records
        runs = []
        for record in records:
            run = instance.get_run_by_id(record.run_id) if record.run_id else None
            if run is not None and RUNNER_TAG in run.tags:
                continue
            layer, n = record.asset_materialization.partition, int(record.asset_materialization.metadata["chunks"].value)
            memory = last_good_memory(instance, ds, layer)
            for c in range(n):
                runs.append(dg.RunRequest(
                    run_key=f"{record.storage_id}:{chunk_key(c)}", asset_selection=[chunk_asset],
                    partition_key=dg.MultiPartitionKey({"chunk": chunk_key(c), "layer": layer}),
                    run_config=step_memory_config(ds, memory),
                    tags={"cng/dataset": ds.name, "cng/reason": "new hex plan", MEMORY_TAG: str(memory)}))
            pending[layer] = [record.storage_id, n]
        for layer, (plan_id, n) in list(pending.items()):
            done = {str(r.asset_materialization.partition) for r in instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=chunk_asset, after_storage_id=plan_id), limit=10_000).records}
            if all(f"{chunk_key(c)}|{layer}" in done for c in range(n)):
                runs.append(backfill_request(hex_targets(ds, layer), context.repository_def.asset_graph,
                                             {"cng/dataset": ds.name, "cng/reason": "chunks done", "cng/layers": layer}))
                del pending[layer]
        after = records[-1].storage_id if records else seen["after"]
        idle = f"waiting for chunks of {sorted(pending)}" if pending else "no new hex plans"
        return dg.SensorResult(run_requests=runs, cursor=json.dumps({"after": after, "pending": pending}),
                               skip_reason=None if runs else idle)

    return _sensor
