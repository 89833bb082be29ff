"""Materialize a dataset's whole asset graph in-process on a Dagster instance: what `cng-assets run` and
`cng-assets demo` do. The same definitions and the same runs a person sees in the UI, one run per partition,
as a backfill would launch them, and grouped in the UI as one backfill."""

from __future__ import annotations

import os
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import yaml

from cng_assets.catalog import Dataset
from cng_assets.dagster_private import BACKFILL_TAG, CONSOLIDATED_EVENT_LOG, AssetKeyPartitionKey, record_backfill
from cng_assets.definitions import definitions_with
from cng_assets.defs import products
from cng_assets.defs.partitions import CHUNK_PARENTS, CHUNKED, chunk_keys, empty_chunks, partition_keys, planned_chunks
from cng_assets.defs.sensors import RUNNER_TAG
from cng_assets.defs.sources import is_observed, layer_versions, observations
from cng_assets.defs.stored import source_files
from cng_assets.interrupts import Interrupted, SignalWatch
from cng_assets.lineage import FRESH, MISSING, asset_status
from cng_assets.storage import ProductStorage

# Step logs and stack traces stay in the instance (the UI shows them); the terminal gets the report instead.
QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
GLOBAL_ASSETS = {"stac_catalog"}  # not under a dataset's key prefix
NOT_RUN = {"source", "layers", "mirror"}  # run first (discovery), or only on the cluster (the mirror's keys)
DESCRIBING = {"stac", "docs", "stac_catalog"}  # describe the published products: not after a failed rebuild
FIRST_PRODUCTS = ("geoparquet", "table", "cog")  # a layer's products that come straight from its source
NOTED = ("estimate", "repaired", "curved_linearised", "split_at_antimeridian", "dropped_null_or_empty", "dropped_unrepairable",
         "dropped_other_geometry_types", "trimmed_other_geometry_types", "collections_split", "skipped_empty",
         "dropped_at_max_zoom")


@dataclass
class Step:
    asset: str  # asset name within the dataset, e.g. "geoparquet"
    partition: str | dg.MultiPartitionKey | None = None

    def __str__(self) -> str:
        return f"{self.asset}[{self.partition}]" if self.partition else self.asset

    @property
    def layer(self) -> str | None:
        p = self.partition
        return p.keys_by_dimension["layer"] if isinstance(p, dg.MultiPartitionKey) else p


@dataclass
class Report:
    succeeded: list[Step] = field(default_factory=list)
    failed: list[tuple[Step, str]] = field(default_factory=list)
    skipped: list[Step] = field(default_factory=list)  # a layer's later stages, after one of its steps failed
    fresh: list[Step] = field(default_factory=list)  # already built from the current code and data: not run
    notes: dict[str, str] = field(default_factory=dict)  # step -> what was repaired or dropped
    backfill_id: str | None = None  # the backfill the UI groups the runs under (none when nothing ran)


def project_instance(home: str | Path | None = None) -> dg.DagsterInstance:
    """The embedded default instance: SQLite under DAGSTER_HOME, or ./.dagster when that is unset."""
    home = Path(home or os.environ.get("DAGSTER_HOME") or ".dagster").resolve()
    home.mkdir(parents=True, exist_ok=True)
    os.environ["DAGSTER_HOME"] = str(home)
    config = home / "dagster.yaml"
    if not config.exists():  # SQLite, runs' events in one file; telemetry off keeps the terminal quiet
        config.write_text(yaml.safe_dump({"telemetry": {"enabled": False}, "event_log_storage": {
            **CONSOLIDATED_EVENT_LOG, "config": {"base_dir": str(home / "history")}}}, sort_keys=False))
    return dg.DagsterInstance.get()


def _failure_message(result: dg.ExecuteInProcessResult) -> str:
    for event in result.all_events:
        if event.is_step_failure:
            data = event.step_failure_data
            if data.user_failure_data and data.user_failure_data.description:
                return data.user_failure_data.description
            err = data.error
            while err is not None and err.cause is not None:  # Dagster's wrapper first, the reason last
                err = err.cause
            return err.message.strip() if err else "step failed"
        if event.event_type_value == "ASSET_CHECK_EVALUATION" and not event.event_specific_data.passed:
            return f"check {event.event_specific_data.check_name} failed: {event.event_specific_data.metadata}"
    return "run failed"


def _note(result: dg.ExecuteInProcessResult) -> str:
    """What cleaning did to the layer, from the materialization's own metadata."""
    parts = []
    for event in result.get_asset_materialization_events():
        meta = event.materialization.metadata
        parts += [f"{k.replace('_', ' ')}: {meta[k].value}" for k in NOTED if k in meta and meta[k].value]
    return ", ".join(parts)


def _summary(report: Report) -> str:
    """What the backfill holds, for its page in the UI (whose "Partition selection" shows one asset's partitions)."""
    steps = [*report.succeeded, *(s for s, _ in report.failed), *report.skipped]
    per_asset = Counter(s.asset for s in steps)
    layers = sorted({s.layer for s in steps if s.layer})
    return (f"{len(steps)} steps: " + ", ".join(f"{a} {n}" for a, n in per_asset.items())
            + (f"; layers {', '.join(layers)}" if layers else "") + f". {len(report.succeeded)} succeeded, "
            f"{len(report.failed)} failed, {len(report.skipped)} skipped after a failure.")


def chunk_steps(ds: Dataset, instance: dg.DagsterInstance, asset: str, layers: list[str], skip: set[str],
                planned_now: set[tuple[str, str]]) -> list[Step]:
    """Each layer's planned chunks. Where the plan (or COG) was made just now, the layer's other chunk keys are
    recorded as empty, as the chunk sensor does."""
    steps = []
    for layer in layers:
        n = planned_chunks(instance, ds, asset, layer)
        if n is None or layer in skip:  # its plan failed: the layer's later stages are skipped
            continue
        if (CHUNK_PARENTS[asset], layer) in planned_now:
            for event in empty_chunks(ds, asset, layer, n):
                instance.report_runless_asset_event(event)
        steps += [Step(asset, dg.MultiPartitionKey({"chunk": c, "layer": layer})) for c in chunk_keys(ds)[:n]]
    return steps


def materialize_dataset(ds: Dataset, instance: dg.DagsterInstance, data_dir: str | None = None,
                        on_step: Callable[[Step, int, int, bool], None] | None = None,
                        rebuild: bool = False) -> Report:
    """Source and layer discovery first, then every layer partition that is not fresh (every one with
    `rebuild`). A failed layer does not stop the others; SIGINT or SIGTERM stops the step that runs and every
    later one, and raises `Interrupted` once the runs made are recorded."""
    started = time.time()
    with SignalWatch() as watch:
        return _materialize(ds, instance, data_dir, on_step, rebuild, watch, started)


def _materialize(ds: Dataset, instance: dg.DagsterInstance, data_dir: str | None,
                 on_step: Callable[[Step, int, int, bool], None] | None, rebuild: bool, watch: SignalWatch,
                 started: float) -> Report:
    defs = definitions_with(ds, data_dir)
    job = defs.resolve_implicit_global_asset_job_def()
    storage: ProductStorage = defs.resources["storage"]
    storage.sweep_staging(started)  # what crashed runs left; a live process's staging is locked, never swept
    report = Report()
    backfill_id = uuid.uuid4().hex[:8]
    status: dict[tuple[str, str | None], str] = {}
    consolidated = {c.chunks: c.product for c in CHUNKED}
    tags = {"cng/dataset": ds.name, RUNNER_TAG: "in-process"}

    def look() -> None:  # what is fresh, once per phase: what runs after a rebuilt step shows as "will be stale"
        status.clear()
        status.update({(r.asset.split("/")[-1], r.partition): r.status for r in asset_status(defs, instance, ds.name)})

    def needed(step: Step) -> bool:
        if rebuild:
            return True
        if step.asset in consolidated:  # consolidation deletes the chunk files: rebuilding hex needs every chunk
            return status.get((consolidated[step.asset], step.layer)) != FRESH
        return status.get((step.asset, str(step.partition) if step.partition else None)) != FRESH

    def target(step: Step) -> AssetKeyPartitionKey:
        return AssetKeyPartitionKey(dg.AssetKey([step.asset] if step.asset in GLOBAL_ASSETS else [ds.name, step.asset]),
                                    step.partition)

    def stop_if_interrupted(stopped: Step | None = None) -> None:
        signum = watch.received()
        if signum:
            if stopped:
                report.failed.append((stopped, "interrupted"))
            finish()
            raise Interrupted(signum, len(report.succeeded) + len(report.fresh), stopped)

    def run(step: Step, nth: int, of: int) -> bool:
        """Run the `nth` of the `of` steps of its asset that are not fresh."""
        stop_if_interrupted()  # no step starts after the signal
        # Dagster raises DagsterExecutionInterruptedError in the step on a signal: the step unwinds (its staging
        # removed, its child processes killed) and the run is recorded as failed.
        result = job.execute_in_process(instance=instance, asset_selection=[target(step).asset_key],
                                        partition_key=step.partition, raise_on_error=False,
                                        tags={**tags, BACKFILL_TAG: backfill_id}, run_config=QUIET)
        if not result.success:
            stop_if_interrupted(step)
        # A run fails when a blocking check fails too, so success here means the checks passed.
        if result.success:
            report.succeeded.append(step)
            note = _note(result)
            if note:
                report.notes[str(step)] = note
        else:
            report.failed.append((step, _failure_message(result)))
        if on_step:
            on_step(step, nth, of, result.success)
        return result.success

    def finish() -> Report:  # the runs made, as one backfill in the UI
        if report.succeeded or report.failed:
            report.backfill_id = backfill_id
            record_backfill(instance, defs.resolve_asset_graph(), backfill_id, started,
                            {target(s) for s in report.succeeded}, {target(s) for s, _ in report.failed},
                            {target(s) for s in report.skipped}, tags,
                            f"cng-assets: {ds.name}" + " (rebuild)" * rebuild, _summary(report))
        return report

    head = ([Step("source")] if ds.source_builder else []) + [Step("layers")]
    look()
    for step in head:
        if not needed(step):
            report.fresh.append(step)
        elif not run(step, 1, 1):
            return finish()
    inv = products.load_inventory(storage, ds)
    if is_observed(ds):  # record each layer's data version, so a later re-upload shows exactly what is stale
        versions = layer_versions(storage, ds, inv, source_files(storage, ds.source))
        for event in observations(ds, versions, versions):
            instance.report_runless_asset_event(event)
    look()
    graph = defs.resolve_asset_graph()
    keys = partition_keys(ds, inv, is_observed(ds))
    published = {layer for (asset, layer), s in status.items() if asset in FIRST_PRODUCTS and s != MISSING}

    def failed_rebuilds() -> list[Step]:
        """Failed steps of layers published before: the products there are the previous versions (or stale)."""
        return [s for s, _ in report.failed if s.layer in published]
    failed: set[tuple[dg.AssetKey, str]] = set()  # (asset, layer) that failed: its descendants for that layer wait

    def steps_of(key: dg.AssetKey, blocked: set[str]) -> list[Step]:
        name, pdef = key.path[-1], graph.get(key).partitions_def
        if name in CHUNK_PARENTS:  # known once the plans are made: each layer's planned chunks
            layers = keys[pdef.partitions_defs[1].partitions_def.name]
            planned_now = {(s.asset, s.layer) for s in report.succeeded if s.asset in CHUNK_PARENTS.values()}
            return chunk_steps(ds, instance, name, layers, blocked, planned_now)
        return [Step(name, k) for k in keys[pdef.name]] if pdef else [Step(name)]

    # The asset graph's own order: every asset after its parents.
    order = [k for k in graph.toposorted_asset_keys
             if k.path[0] in (ds.name, *GLOBAL_ASSETS) and k.path[-1] not in NOT_RUN]
    for key in order:
        stop_if_interrupted()  # before finding its steps too: recording a layer's empty chunks takes a while
        ancestors = graph.get_ancestor_asset_keys(key)
        if key.path[-1] in DESCRIBING and (stopped := failed_rebuilds()):
            # STAC and README stay as they were rather than describe the previous products as current
            report.skipped += steps_of(key, set())
            report.notes[key.path[-1]] = f"not regenerated, since the rebuild of {', '.join(map(str, stopped))} failed"
            continue
        todo = []
        for step in steps_of(key, {layer for a, layer in failed if a in ancestors}):
            if any((a, step.layer) in failed for a in ancestors):
                report.skipped.append(step)
            elif not needed(step):
                report.fresh.append(step)
            else:
                todo.append(step)
        for i, step in enumerate(todo, 1):  # counted per asset: a chunk count is known only once its plan is
            if not run(step, i, len(todo)) and step.layer:
                failed.add((key, step.layer))
    stop_if_interrupted()
    return finish()
