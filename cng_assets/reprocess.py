"""`cng-assets reprocess`: one Dagster backfill of the stale or missing partitions (or every partition of the
chosen layers). The backfill daemon runs it like a backfill launched from the UI: parents before children, each
partition its own run, hex chunks within the `hex_chunks` pool; `--run-now` runs the same targets in-process on
a laptop instead."""

from __future__ import annotations

from collections.abc import Mapping

import dagster as dg

from cng_assets.catalog import Dataset
from cng_assets.dagster_private import AssetKeyPartitionKey, add_backfill
from cng_assets.defs.partitions import CHUNK_PARENTS, CHUNKED, chunk_keys, empty_chunks, planned_chunks
from cng_assets.lineage import FRESH, asset_status

DATASET_WIDE = {"stac", "docs", "stac_catalog", "layers", "source"}  # assets with no per-layer partition
BY_PRODUCT = {c.product: c for c in CHUNKED}  # a layer's hex -> its chunks and what plans them


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


def _chunk(t: AssetKeyPartitionKey) -> tuple[str, str, int] | None:
    """(chunk asset, layer, chunk number) of a chunk partition."""
    name = t.asset_key.path[-1]
    if name not in CHUNK_PARENTS:
        return None
    keys = t.partition_key.keys_by_dimension
    return name, keys["layer"], int(keys["chunk"])


def _planned(instance: dg.DagsterInstance, datasets: Mapping[str, Dataset], t: AssetKeyPartitionKey) -> bool:
    """A chunk that its layer's current plan uses (the others are recorded as empty, never run)."""
    name, layer, k = _chunk(t)
    n = planned_chunks(instance, datasets[t.asset_key.path[0]], name, layer)
    return n is not None and k < n


def backfill_targets(instance: dg.DagsterInstance, datasets: Mapping[str, Dataset],
                     targets: list[AssetKeyPartitionKey]) -> set[AssetKeyPartitionKey]:
    """What the backfill itself runs. A layer whose plan (or COG) is rebuilt gets its chunks from the chunk
    sensor, with the new plan's count, and its hex by automation: neither goes in. Otherwise only chunks the
    current plan uses, and all of them when the layer's hex is rebuilt (consolidation deletes the chunk files)."""
    replanned = {(t.asset_key.path[0], t.asset_key.path[-1], t.partition_key) for t in targets
                 if t.asset_key.path[-1] in CHUNK_PARENTS.values()}
    out = set()
    for t in targets:
        name, dataset = t.asset_key.path[-1], t.asset_key.path[0]
        if (c := _chunk(t)) and ((dataset, CHUNK_PARENTS[c[0]], c[1]) in replanned or not _planned(instance, datasets, t)):
            continue
        if (chunked := BY_PRODUCT.get(name)) is not None:
            if (dataset, chunked.plan, t.partition_key) in replanned:
                continue
            ds = datasets[dataset]
            n = planned_chunks(instance, ds, chunked.chunks, t.partition_key) or 0
            out |= {AssetKeyPartitionKey(dg.AssetKey([ds.name, chunked.chunks]),
                                         dg.MultiPartitionKey({"chunk": c, "layer": t.partition_key}))
                    for c in chunk_keys(ds)[:n]}
        out.add(t)
    return out


def submit_backfill(defs: dg.Definitions, datasets: Mapping[str, Dataset], instance: dg.DagsterInstance,
                    targets: list[AssetKeyPartitionKey], reason: str) -> str:
    """`datasets`: those `defs` was built from (by name)."""
    return add_backfill(instance, defs.resolve_asset_graph(), backfill_targets(instance, datasets, targets),
                        tags={"cng/reason": reason}, title=f"cng-assets reprocess: {reason}")


def run_now(defs: dg.Definitions, datasets: Mapping[str, Dataset], instance: dg.DagsterInstance,
            targets: list[AssetKeyPartitionKey], run_config: dict | None = None) -> list[tuple[AssetKeyPartitionKey, bool]]:
    """The targets in-process, one run per partition, in graph order (parents first). Chunks are chosen once
    their plans have run: those the plan uses run, the rest are recorded as empty."""
    job = defs.resolve_implicit_global_asset_job_def()
    order = {k: i for i, k in enumerate(defs.resolve_asset_graph().toposorted_asset_keys)}
    results, recorded = [], set()
    for t in sorted(targets, key=lambda t: order[t.asset_key]):
        if (c := _chunk(t)) and not _planned(instance, datasets, t):
            ds = datasets[t.asset_key.path[0]]
            if (c[0], c[1]) not in recorded:
                recorded.add((c[0], c[1]))
                for event in empty_chunks(ds, c[0], c[1], planned_chunks(instance, ds, c[0], c[1]) or 0):
                    instance.report_runless_asset_event(event)
            continue
        r = job.execute_in_process(instance=instance, asset_selection=[t.asset_key], partition_key=t.partition_key,
                                   raise_on_error=False, run_config=run_config, tags={"cng/reason": "reprocess"})
        results.append((t, r.success))
    return results
