"""The cluster's rules as Dagster settings (NRP Nautilus, namespace `biodiversity`).

Every asset step gets a `dagster-k8s/config` op tag: CPU and memory from the catalog (requests = limits), off GPU
nodes, preemptible (`priorityClassName: opportunistic`), a TTL after finishing, the S3 environment, and the S3
keys from the existing `aws` Secret by reference. With `CNG_EXECUTOR=k8s` every step is its own pod
(`k8s_job_executor`); hex chunks also share the `hex_chunks` pool (at most 50 at once, set on the instance).

A chunk pod killed for memory is retried by `<dataset>__chunk_failures` with twice the memory up to the
catalog's cap; a preempted or evicted pod is retried at the same memory and does not count as a failure. The
memory a layer's chunks last succeeded with is where its next chunk backfill starts.
"""

from __future__ import annotations

import dagster as dg

from cng_assets.catalog import Dataset, PodSize

NAMESPACE = "biodiversity"
S3_SECRET = "aws"  # an existing Secret with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY
TTL_SECONDS = 3600
NO_GPU_NODES = {"node_affinity": {"required_during_scheduling_ignored_during_execution": {"node_selector_terms": [
    {"match_expressions": [{"key": "feature.node.kubernetes.io/pci-10de.present", "operator": "NotIn", "values": ["true"]}]}]}}}
S3_ENV = [  # inside the cluster: the internal gateway, path-style, no TLS
    {"name": "CNG_STORAGE", "value": "s3"},
    {"name": "CNG_S3_ENDPOINT", "value": "http://rook-ceph-rgw-nautiluss3.rook"},
    {"name": "CNG_PUBLIC_BASE_URL", "value": "https://s3-west.nrp-nautilus.io"},
]
MEMORY_TAG = "cng/memory_gib"  # on chunk runs: the memory their chunk pods had
OOM, PREEMPTED, OTHER = "out of memory", "preempted", "other"


def pod_config(size: PodSize, memory_gib: int | None = None) -> dict:
    """The `dagster-k8s/config` value for one step's pod."""
    amount = {"cpu": size.cpu, "memory": f"{memory_gib or size.memory_gib}Gi"}
    return {
        "container_config": {"resources": {"requests": amount, "limits": amount}, "env": S3_ENV,
                             "env_from": [{"secret_ref": {"name": S3_SECRET}}]},
        "pod_spec_config": {"affinity": NO_GPU_NODES, "priority_class_name": "opportunistic"},
        "job_spec_config": {"ttl_seconds_after_finished": TTL_SECONDS, "backoff_limit": 0},
    }


def op_tags(ds: Dataset, asset: str) -> dict:
    return {"dagster-k8s/config": pod_config(ds.pod(asset))}


def executor_from_env():
    """`CNG_EXECUTOR=k8s` (set in the Helm values): each step its own pod; otherwise Dagster's default."""
    import os

    if os.environ.get("CNG_EXECUTOR") != "k8s":
        return None
    from dagster_k8s import k8s_job_executor

    return k8s_job_executor.configured({"job_namespace": NAMESPACE, "max_concurrent": 50,
                                        "env_secrets": [S3_SECRET]}, name="k8s_steps")


def step_memory_config(ds: Dataset, memory_gib: int) -> dict:
    """Run config that gives the chunk step's pod `memory_gib` (k8s_job_executor's per-step settings)."""
    return {"execution": {"config": {"per_step_k8s_config": {
        f"{ds.name}__hex_chunk": {"container_config": pod_config(ds.pod("hex_chunk"), memory_gib)["container_config"]}}}}}


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
    """The memory this layer's chunks last succeeded with (their materialization metadata), else the default."""
    records = instance.fetch_materializations(dg.AssetKey([ds.name, "hex_chunk"]), limit=500).records
    for r in records:  # newest first
        m = r.asset_materialization
        if m and m.partition and str(m.partition).endswith(f"|{layer}") and "memory_gib" in m.metadata:
            return int(m.metadata["memory_gib"].value)
    return ds.pod("hex_chunk").memory_gib


class K8sPods(dg.ConfigurableResource):
    """Reads the pods of a run from the Kubernetes API (in-cluster config, the code location's service account)."""

    namespace: str = NAMESPACE

    def list_pods(self, run_id: str) -> list[dict]:
        from kubernetes import client, config

        config.load_incluster_config()
        pods = client.CoreV1Api().list_namespaced_pod(self.namespace, label_selector=f"dagster/run-id={run_id}")
        return [p.to_dict() for p in pods.items]


def chunk_job(ds: Dataset) -> dg.UnresolvedAssetJobDefinition:
    return dg.define_asset_job(f"{ds.name}__hex_chunk_job", selection=dg.AssetSelection.assets(dg.AssetKey([ds.name, "hex_chunk"])))


MAX_PREEMPTIONS = 5


def chunk_failure_sensor(ds: Dataset, job: dg.UnresolvedAssetJobDefinition):
    chunk_key = dg.AssetKey([ds.name, "hex_chunk"])

    @dg.run_failure_sensor(name=f"{ds.name}__chunk_failures", request_job=job, default_status=dg.DefaultSensorStatus.RUNNING,
                           description="A chunk run whose pod was OOMKilled -> again with twice the memory (up to the "
                                       "catalog's cap); a preempted one -> again at the same memory.")
    def _sensor(context: dg.RunFailureSensorContext, pods: K8sPods):
        run = context.dagster_run
        if not run.asset_selection or chunk_key not in run.asset_selection:
            return dg.SkipReason("not a chunk run")
        kind, reason = classify(pods.list_pods(run.run_id))
        memory = int(run.tags.get(MEMORY_TAG, ds.pod("hex_chunk").memory_gib))
        partition = run.tags.get("dagster/partition")
        context.instance.report_engine_event(f"{kind}: {reason}", run)  # the reason, in the failed run's own log
        context.instance.add_run_tags(run.run_id, {"cng/failure": kind.replace(" ", "-")})
        context.instance.report_runless_asset_event(dg.AssetObservation(
            asset_key=chunk_key, partition=partition,
            metadata={"failure": kind, "reason": reason, "memory_gib": memory, "run_id": run.run_id}))
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
        return dg.RunRequest(run_key=f"{run.run_id}:retry", partition_key=partition, run_config=step_memory_config(ds, memory),
                             tags={"cng/dataset": ds.name, "cng/retry_of": run.run_id, "cng/preemptions": str(preemptions),
                                   MEMORY_TAG: str(memory)})

    return _sensor
