"""The cluster's rules as Dagster settings (NRP Nautilus, namespace `biodiversity`).

Every asset step gets a `dagster-k8s/config` op tag: CPU and memory from the catalog (requests = limits), off GPU
nodes, preemptible (`priorityClassName: opportunistic`), a TTL after finishing, the S3 environment, and the S3
keys from the existing `aws` Secret by reference. With `CNG_EXECUTOR=k8s` every step is its own pod
(`k8s_job_executor`); hex chunks also share the `hex_chunks` pool (at most 50 at once, set on the instance).
docs/cluster.md says how memory reaches a pod and rises after an out-of-memory kill, and who retries what.
"""

from __future__ import annotations

import os

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
MEMORY_TAG = "cng/memory_gib"  # on chunk runs: the memory their chunk step has (the pod's limit on the cluster)
# Dagster's run retries (`dagsterDaemon.runRetries` in k8s/values.yaml) run a failed run again, same pods, from its
# failed steps only: what a preempted, evicted or lost pod needs. A chunk run is retried by the chunk failure sensor
# instead (more memory after an out-of-memory kill), so Dagster's retry, which would repeat the same pod, is off there.
RETRY_FROM_FAILURE = {"dagster/retry_strategy": "FROM_FAILURE"}
CHUNK_RUN_TAGS = {"dagster/max_retries": "0"}
WILL_RETRY_TAG = "dagster/will_retry"  # what Dagster sets on a failed run when its run retries will run it again


def pod_config(size: PodSize, memory_gib: int | None = None) -> dict:
    """The `dagster-k8s/config` value for one step's pod."""
    amount = {"cpu": size.cpu, "memory": f"{memory_gib or size.memory_gib}Gi", "ephemeral-storage": f"{size.ephemeral_gib}Gi"}
    return {
        "container_config": {"resources": {"requests": amount, "limits": amount}, "env": S3_ENV,
                             "env_from": [{"secret_ref": {"name": S3_SECRET}}]},
        "pod_spec_config": {"affinity": NO_GPU_NODES, "priority_class_name": "opportunistic"},
        "job_spec_config": {"ttl_seconds_after_finished": TTL_SECONDS, "backoff_limit": 0},
    }


def op_tags(ds: Dataset, asset: str) -> dict:
    return {"dagster-k8s/config": pod_config(ds.pod(asset))}


def on_k8s() -> bool:
    """`CNG_EXECUTOR=k8s` (set in the Helm values): each step its own pod."""
    return os.environ.get("CNG_EXECUTOR") == "k8s"


def executor_from_env():
    """The k8s_job_executor on the cluster; otherwise Dagster's default (multiprocess under a launcher).
    Not `.configured()`: a configured executor takes no run config, so the memory a retry asks for in
    `per_step_k8s_config` would be dropped. Its namespace and Secret come from the K8sRunLauncher (Helm values),
    whose settings every step pod inherits."""
    if not on_k8s():
        return None
    from dagster_k8s import k8s_job_executor

    return k8s_job_executor


def memory_run_config(ds: Dataset, asset: str, memory_gib: int) -> dict:
    """Run config giving `asset`'s step `memory_gib`, in what this environment's executor accepts: the
    k8s_job_executor's per-step pod settings (keyed by op name, merged over the op's `dagster-k8s/config` tag) on
    the cluster; nothing elsewhere (a local step's memory is not limited, and the run's MEMORY_TAG records it)."""
    if not on_k8s():
        return {}
    step = {"container_config": {"resources": pod_config(ds.pod(asset), memory_gib)["container_config"]["resources"]}}
    return {"execution": {"config": {"per_step_k8s_config": {f"{ds.name}__{asset}": step}}}}
