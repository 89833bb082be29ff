"""Chunk runs that die for lack of memory or by preemption, retried by `<dataset>__chunk_failures`.

A chunk killed for memory is retried with twice the memory up to the catalog's cap; a preempted or evicted pod
is retried at the same memory and does not count as a failure. On the cluster the reason comes from the run's
pods (the Kubernetes API); anywhere else (a laptop, `dagster dev`, CI) from the run's own log, where Dagster
records a step process killed by the kernel (SIGKILL, exit 137: what the OOM killer does). The memory a layer's
chunks last succeeded with is where its next chunk runs start. Dagster's own run retries are off for the chunk
runs the sensors make (`dagster/max_retries: 0`); a chunk run they do retry (one of a backfill) is left to them.
"""

from __future__ import annotations

import os

import dagster as dg

from cng_assets.catalog import Dataset
from cng_assets.defs.environment import sensor_interval, sensor_status
from cng_assets.defs.partitions import chunk_keys
from cng_assets.defs.pods import CHUNK_RUN_TAGS, MEMORY_TAG, NAMESPACE, WILL_RETRY_TAG, memory_run_config

OOM, PREEMPTED, OTHER = "out of memory", "preempted", "other"
MAX_PREEMPTIONS = 5
KILLED = ("signal 9 (SIGKILL)", "exited with code 137", "MemoryError")  # how a memory kill reads in a run's log


def classify(pods: list[dict]) -> tuple[str, str]:
    """(kind, reason) of a failed run from its pods' statuses (as the Kubernetes API returns them, as dicts):
    a container terminated `OOMKilled`; a pod preempted, evicted or shut down with its node; or anything else."""
    for pod in pods:
        status = pod.get("status") or {}
        for c in status.get("container_statuses") or []:
            term = ((c.get("state") or {}).get("terminated") or (c.get("last_state") or {}).get("terminated") or {})
            if term.get("reason") == "OOMKilled":
                limit = _limit(pod, c.get("name"))
                return OOM, f"container {c.get('name')} of pod {pod['metadata']['name']} was OOMKilled" + (
                    f" at its {limit} limit" if limit else "")
        conditions = {x.get("type"): x for x in status.get("conditions") or []}
        target = conditions.get("DisruptionTarget")
        if target and target.get("status") == "True":
            return PREEMPTED, f"pod {pod['metadata']['name']}: {target.get('reason')} ({target.get('message', '')})".strip()
        if status.get("reason") in ("Preempting", "Evicted", "Shutdown", "NodeShutdown", "Terminated"):
            return PREEMPTED, f"pod {pod['metadata']['name']}: {status.get('reason')}: {status.get('message', '')}".strip()
    return OTHER, "no pod was OOMKilled or preempted"


def classify_log(messages: list[str]) -> tuple[str, str]:
    """(kind, reason) from a failed run's log alone, where no pod can be asked about."""
    for m in messages:
        if any(k in m for k in KILLED):
            return OOM, f"the step process was killed as an out-of-memory kill does: {m.splitlines()[0][:300]}"
    return OTHER, "the run's log shows no memory kill"


def _limit(pod: dict, container: str | None) -> str | None:
    for c in (pod.get("spec") or {}).get("containers") or []:
        if c.get("name") == container:
            return ((c.get("resources") or {}).get("limits") or {}).get("memory")
    return None


def next_memory(ds: Dataset, current_gib: int) -> int | None:
    """Twice the memory, up to the catalog's cap; None when the cap was already reached."""
    size = ds.pod("hex_chunk")
    cap = size.max_memory_gib or size.memory_gib
    return None if current_gib >= cap else min(current_gib * 2, cap)


def last_good_memory(instance: dg.DagsterInstance, ds: Dataset, layer: str) -> int:
    """The memory this layer's chunks last succeeded with (their materialization metadata), else the default.
    A plan records its unused chunk keys as empty before its chunks run, and always runs one at least, so the
    layer's newest `max_chunks` chunk events hold a real one whenever the layer has one."""
    keys = [str(dg.MultiPartitionKey({"chunk": c, "layer": layer})) for c in chunk_keys(ds)]
    records = instance.fetch_materializations(dg.AssetRecordsFilter(
        asset_key=dg.AssetKey([ds.name, "hex_chunk"]), asset_partitions=keys), limit=len(keys)).records
    for r in records:  # newest first
        if "memory_gib" in r.asset_materialization.metadata:
            return int(r.asset_materialization.metadata["memory_gib"].value)
    return ds.pod("hex_chunk").memory_gib


class K8sPods(dg.ConfigurableResource):
    """Reads the pods of a run from the Kubernetes API (in-cluster config, the code location's service account)."""

    namespace: str = NAMESPACE

    def available(self) -> bool:
        return bool(os.environ.get("KUBERNETES_SERVICE_HOST"))

    def list_pods(self, run_id: str) -> list[dict]:
        from kubernetes import client, config

        config.load_incluster_config()
        pods = client.CoreV1Api().list_namespaced_pod(self.namespace, label_selector=f"dagster/run-id={run_id}")
        return [p.to_dict() for p in pods.items]


def chunk_job(ds: Dataset) -> dg.UnresolvedAssetJobDefinition:
    return dg.define_asset_job(f"{ds.name}__hex_chunk_job", selection=dg.AssetSelection.assets(dg.AssetKey([ds.name, "hex_chunk"])))


def _run_log(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    out = []
    for e in instance.all_logs(run_id):
        ev = e.dagster_event
        if ev is not None and (ev.is_step_failure or ev.event_type_value in ("ENGINE_EVENT", "PIPELINE_FAILURE")):
            out.append(ev.message or "")
            err = getattr(ev.event_specific_data, "error", None)
            while err is not None:
                out.append(err.message or "")
                err = err.cause
    return out


def chunk_failure_sensor(ds: Dataset, job: dg.UnresolvedAssetJobDefinition):
    chunk_key = dg.AssetKey([ds.name, "hex_chunk"])

    @dg.run_failure_sensor(name=f"{ds.name}__chunk_failures", request_job=job, default_status=sensor_status(ds),
                           minimum_interval_seconds=sensor_interval(),
                           description="A chunk run killed for memory -> again with twice the memory (up to the "
                                       "catalog's cap); a preempted one -> again at the same memory.")
    def _sensor(context: dg.RunFailureSensorContext, pods: K8sPods):
        run = context.dagster_run
        if not run.asset_selection or chunk_key not in run.asset_selection:
            return dg.SkipReason("not a chunk run")
        if pods.available():
            kind, reason = classify(pods.list_pods(run.run_id))
        else:
            kind, reason = classify_log(_run_log(context.instance, run.run_id))
            reason += " (pod details are unavailable outside a cluster: classified from the run's log)"
        context.log.info(f"{run.run_id}: {kind}: {reason}")
        memory = int(run.tags.get(MEMORY_TAG, ds.pod("hex_chunk").memory_gib))
        partition = run.tags.get("dagster/partition")
        context.instance.report_engine_event(f"{kind}: {reason}", run)  # the reason, in the failed run's own log
        context.instance.add_run_tags(run.run_id, {"cng/failure": kind.replace(" ", "-")})
        context.instance.report_runless_asset_event(dg.AssetObservation(
            asset_key=chunk_key, partition=partition,
            metadata={"failure": kind, "reason": reason, "memory_gib": memory, "run_id": run.run_id}))
        if run.tags.get(WILL_RETRY_TAG) == "true":  # e.g. a chunk run of a backfill, which has no CHUNK_RUN_TAGS
            return dg.SkipReason(f"{partition}: Dagster's run retries run it again; this sensor takes over if they fail")
        preemptions = int(run.tags.get("cng/preemptions", "0"))
        if kind == OOM:
            memory = next_memory(ds, memory)
            if memory is None:
                return dg.SkipReason(f"{partition}: out of memory at the {ds.pod('hex_chunk').max_memory_gib} GiB cap; "
                                     "lower h3.target_cells_per_chunk in the catalog so the plan makes smaller chunks")
        elif kind == PREEMPTED:
            preemptions += 1  # not a failure of the chunk: same memory, counted apart
            if preemptions > MAX_PREEMPTIONS:
                return dg.SkipReason(f"{partition}: preempted {MAX_PREEMPTIONS} times; retry later")
        else:
            return dg.SkipReason(f"{partition}: failed for another reason ({reason}); see the run's log")
        return dg.RunRequest(run_key=f"{run.run_id}:retry", partition_key=partition,
                             run_config=memory_run_config(ds, "hex_chunk", memory),
                             tags={"cng/dataset": ds.name, "cng/retry_of": run.run_id, "cng/preemptions": str(preemptions),
                                   MEMORY_TAG: str(memory), **CHUNK_RUN_TAGS})

    return _sensor
