"""`cng-assets reprocess`: one Dagster backfill of the stale or missing partitions (or every partition of the
chosen layers). The backfill daemon runs it like a backfill launched from the UI: parents before children, each
partition its own run, hex chunks within the `hex_chunks` pool; `--run-now` runs the same targets in-process on
a laptop instead."""

from __future__ import annotations

import time
import uuid

import dagster as dg
from dagster._core.definitions.assets.graph.asset_graph_subset import AssetGraphSubset
from dagster._core.definitions.events import AssetKeyPartitionKey
from dagster._core.execution.backfill import PartitionBackfill

from cng_assets.lineage import FRESH, asset_status

DATASET_WIDE = {"stac", "docs", "stac_catalog", "layers", "source"}  # assets with no per-layer partition


def _layer(partition: str | None) -> str | None:
    if partition is None:
        return None
    return partition.split("|")[-1] if "|" in partition else partition  # chunk|layer


def select_targets(defs: dg.Definitions, instance: dg.DagsterInstance, dataset: str | None, layers: list[str] | None,
                   stale_only: bool) -> list[AssetKeyPartitionKey]:
    """Partitions to rebuild, in graph order. `stale_only`: those not fresh (stale, missing, or below one);
    otherwise every partition of the chosen layers. Dataset-wide assets follow whenever a layer is chosen."""
    graph = defs.resolve_asset_graph()
    chosen = []
    for row in asset_status(defs, instance, dataset):
        if stale_only and row.status == FRESH:
            continue
        name = row.asset.split("/")[-1]
        if layers and name not in DATASET_WIDE and _layer(row.partition) not in layers:
            continue
        key = dg.AssetKey(row.asset.split("/"))
        pk = row.partition
        if pk and "|" in pk:  # a chunk x layer key: rebuild the MultiPartitionKey from its dimensions
            pdef = graph.get(key).partitions_def
            names = [d.name for d in pdef.partitions_defs]
            pk = dg.MultiPartitionKey(dict(zip(names, pk.split("|"))))
        chosen.append(AssetKeyPartitionKey(key, pk))
    if layers and not any(k.asset_key.path[-1] not in DATASET_WIDE for k in chosen):
        return []
    return chosen


def submit_backfill(defs: dg.Definitions, instance: dg.DagsterInstance, targets: list[AssetKeyPartitionKey],
                    reason: str) -> str:
    subset = AssetGraphSubset.from_asset_partition_set(set(targets), defs.resolve_asset_graph())
    backfill_id = uuid.uuid4().hex[:8]
    instance.add_backfill(PartitionBackfill.from_asset_graph_subset(
        backfill_id=backfill_id, backfill_timestamp=time.time(), tags={"cng/reason": reason},
        dynamic_partitions_store=instance, asset_graph_subset=subset, title=f"cng-assets reprocess: {reason}",
        description=None, run_config=None))
    return backfill_id


def run_now(defs: dg.Definitions, instance: dg.DagsterInstance, targets: list[AssetKeyPartitionKey],
            run_config: dict | None = None) -> list[tuple[AssetKeyPartitionKey, bool]]:
    """The targets in-process, one run per partition, in graph order (parents first)."""
    job = defs.resolve_implicit_global_asset_job_def()
    order = {k: i for i, k in enumerate(defs.resolve_asset_graph().toposorted_asset_keys)}
    results = []
    for t in sorted(targets, key=lambda t: order[t.asset_key]):
        r = job.execute_in_process(instance=instance, asset_selection=[t.asset_key], partition_key=t.partition_key,
                                   raise_on_error=False, run_config=run_config, tags={"cng/reason": "reprocess"})
        results.append((t, r.success))
    return results
