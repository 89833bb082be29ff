"""What dagster-k8s would create on the cluster, built offline with its own job-construction API from the real
asset tags; and the out-of-memory / preemption retries, fed simulated pod statuses from the Kubernetes models."""

from __future__ import annotations

import json

import dagster as dg
import pytest
from dagster_k8s.job import DagsterK8sJobConfig, construct_dagster_k8s_job, get_user_defined_k8s_config
from kubernetes import client

from cng_assets.catalog import load_catalog
from cng_assets.definitions import build_definitions
from cng_assets.defs.failures import OOM, OTHER, PREEMPTED, K8sPods, classify, last_good_memory, next_memory
from cng_assets.defs.partitions import chunk_keys
from cng_assets.defs.pods import CHUNK_RUN_TAGS, MEMORY_TAG, RETRY_FROM_FAILURE
from tests.test_k8s_manifests import validate

SECRET = "do-not-leak-this-secret-value"


@pytest.fixture
def defs(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIA" + "X" * 16)
    monkeypatch.setenv("CNG_EXECUTOR", "k8s")  # as the Helm values set it: steps are pods
    return build_definitions(list(load_catalog().values()))


def step_job(defs, asset: str) -> dict:
    node = defs.resolve_asset_graph().get(dg.AssetKey(["padus_4_1", asset]))
    tags = node.assets_def.op.tags
    image = "ghcr.io/boettiger-lab/cng-assets@sha256:" + "0" * 64
    config = DagsterK8sJobConfig(job_image=image, dagster_home="/opt/dagster/dagster_home",
                                 instance_config_map="dagster-instance", env_secrets=["aws"])
    job = construct_dagster_k8s_job(config, ["dagster", "api", "execute_step"], f"dagster-step-{asset}",
                                    user_defined_k8s_config=get_user_defined_k8s_config(tags),
                                    labels={"dagster/run-id": "r1"}, component="step_worker")
    return client.ApiClient().sanitize_for_serialization(job), tags


@pytest.mark.parametrize("asset,memory", [("hex_chunk", "8Gi"), ("geoparquet", "8Gi"), ("table", "4Gi"), ("pmtiles", "8Gi")])
def test_step_job_follows_the_cluster_rules(defs, asset, memory):
    job, tags = step_job(defs, asset)
    pod = job["spec"]["template"]["spec"]
    [term] = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    no_gpu = {"key": "feature.node.kubernetes.io/pci-10de.present", "operator": "NotIn", "values": ["true"]}
    assert term["matchExpressions"] == [no_gpu]
    assert pod["priorityClassName"] == "opportunistic"
    [container] = pod["containers"]
    assert container["resources"]["requests"] == container["resources"]["limits"]
    assert container["resources"]["limits"]["memory"] == memory
    assert {"secretRef": {"name": "aws"}} in container["envFrom"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["CNG_S3_ENDPOINT"] == "http://rook-ceph-rgw-nautiluss3.rook" and env["CNG_STORAGE"] == "s3"
    assert job["spec"]["ttlSecondsAfterFinished"] == 3600 and job["spec"]["backoffLimit"] == 0
    text = json.dumps(job) + json.dumps(tags, default=str)
    assert SECRET not in text and "AKIA" not in text  # keys only by Secret reference


def test_no_credentials_in_run_config_tags_or_logs(s3_env, s3_server, tmp_path, capfd):
    """Real S3 runs with the keys in the environment (as from the Secret): no value reaches Dagster's records."""
    from cng_assets.definitions import definitions_with

    secret = s3_server.env()["AWS_SECRET_ACCESS_KEY"]
    defs = definitions_with(load_catalog()["demo"])
    job = defs.resolve_implicit_global_asset_job_def()
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        for asset in ("source", "layers"):
            result = job.execute_in_process(instance=instance, asset_selection=[dg.AssetKey(["demo", asset])])
            assert result.success
            run = instance.get_run_by_id(result.run_id)
            records = json.dumps([str(e) for e in instance.all_logs(result.run_id)]) + json.dumps(run.tags)
            records += json.dumps(run.run_config, default=str)
            assert secret not in records and s3_server.env()["AWS_ACCESS_KEY_ID"] not in records
    out = capfd.readouterr()
    assert secret not in out.out + out.err


def pod(name="c", **status) -> dict:
    return client.V1Pod(metadata=client.V1ObjectMeta(name=name),
                        spec=client.V1PodSpec(containers=[client.V1Container(
                            name="dagster", resources=client.V1ResourceRequirements(limits={"memory": "8Gi"}))]),
                        status=client.V1PodStatus(**status)).to_dict()


def oom_pod():
    return pod(container_statuses=[client.V1ContainerStatus(
        name="dagster", image="x", image_id="x", ready=False, restart_count=0,
        state=client.V1ContainerState(terminated=client.V1ContainerStateTerminated(exit_code=137, reason="OOMKilled")))])


def preempted_pod():
    return pod(conditions=[client.V1PodCondition(type="DisruptionTarget", status="True", reason="PreemptionByScheduler",
                                                 message="preempted by a higher-priority pod")])


def test_classify_pod_failures():
    kind, reason = classify([oom_pod()])
    assert kind == OOM and "OOMKilled" in reason and "8Gi" in reason
    assert classify([preempted_pod()])[0] == PREEMPTED
    assert classify([pod(reason="Evicted", message="node ran low on memory")])[0] == PREEMPTED
    assert classify([pod(container_statuses=[client.V1ContainerStatus(
        name="dagster", image="x", image_id="x", ready=False, restart_count=0,
        state=client.V1ContainerState(terminated=client.V1ContainerStateTerminated(exit_code=1, reason="Error")))])])[0] == OTHER


def test_memory_ladder_is_capped():
    ds = load_catalog()["padus_4_1"]
    assert [next_memory(ds, m) for m in (8, 16, 32)] == [16, 32, None]


class FakePods(K8sPods):
    """The Kubernetes API's answer for a run's pods, simulated (there is no API server here)."""

    statuses: str = "[]"

    def available(self) -> bool:
        return True

    def list_pods(self, run_id: str) -> list[dict]:
        return json.loads(self.statuses)


def failed_chunk_run(defs, instance, memory: int, preemptions: int = 0) -> dg.DagsterRun:
    key = dg.AssetKey(["padus_4_1", "hex_chunk"])
    run = instance.create_run_for_job(
        defs.resolve_job_def("padus_4_1__hex_chunk_job"), asset_selection=frozenset({key}),
        tags={"dagster/partition": "003|padus4_1fee", MEMORY_TAG: str(memory), "cng/preemptions": str(preemptions)})
    instance.report_run_failed(run)
    return instance.get_run_by_id(run.run_id)


def evaluate(defs, instance, run, statuses):
    sensor = defs.get_repository_def().get_sensor_def("padus_4_1__chunk_failures")
    failure = next(e for e in instance.all_logs(run.run_id)
                   if e.dagster_event and e.dagster_event.event_type_value == "PIPELINE_FAILURE")
    context = dg.build_run_status_sensor_context(sensor_name=sensor.name, dagster_event=failure.dagster_event,
                                                 dagster_instance=instance, dagster_run=run,
                                                 resources={"pods": K8sPods() if statuses is None else
                                                            FakePods(statuses=json.dumps(statuses, default=str))}
                                                 ).for_run_failure()
    return sensor(context)


def test_oom_killed_chunk_is_retried_with_twice_the_memory_and_reported(defs, tmp_path):
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        run = failed_chunk_run(defs, instance, 8)
        request = evaluate(defs, instance, run, [oom_pod()])
        assert isinstance(request, dg.RunRequest) and request.partition_key == "003|padus4_1fee"
        assert request.tags[MEMORY_TAG] == "16"
        step = request.run_config["execution"]["config"]["per_step_k8s_config"]["padus_4_1__hex_chunk"]
        assert step["container_config"]["resources"]["limits"]["memory"] == "16Gi"
        log = " ".join(str(e.message) for e in instance.all_logs(run.run_id))
        assert "out of memory" in log and "OOMKilled" in log  # in the run's own log, not just "no active pods"
        assert instance.get_run_by_id(run.run_id).tags["cng/failure"] == "out-of-memory"
        obs = instance.fetch_observations(dg.AssetKey(["padus_4_1", "hex_chunk"]), limit=1).records[0]
        assert obs.event_log_entry.asset_observation.metadata["failure"].value == "out of memory"
        capped = evaluate(defs, instance, failed_chunk_run(defs, instance, 32), [oom_pod()])
        assert isinstance(capped, dg.SkipReason) and "cap" in capped.skip_message


def test_preempted_chunk_is_retried_at_the_same_memory_and_other_failures_are_not(defs, tmp_path):
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        request = evaluate(defs, instance, failed_chunk_run(defs, instance, 16), [preempted_pod()])
        assert request.tags[MEMORY_TAG] == "16" and request.tags["cng/preemptions"] == "1"
        other = evaluate(defs, instance, failed_chunk_run(defs, instance, 8), [pod()])
        assert isinstance(other, dg.SkipReason)


def test_outside_a_cluster_a_killed_chunk_is_classified_from_its_log(tmp_path, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    defs = build_definitions(list(load_catalog().values()))
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        run = failed_chunk_run(defs, instance, 8)
        instance.report_engine_event("Multiprocess executor: child process for step padus_4_1__hex_chunk was "
                                     "terminated by signal 9 (SIGKILL).", run)
        request = evaluate(defs, instance, run, None)
        assert isinstance(request, dg.RunRequest) and request.tags[MEMORY_TAG] == "16" and request.run_config == {}
        log = " ".join(str(e.message) for e in instance.all_logs(run.run_id))
        assert "pod details are unavailable" in log
        other = evaluate(defs, instance, failed_chunk_run(defs, instance, 8), None)  # no kill in its log
        assert isinstance(other, dg.SkipReason) and "another reason" in other.skip_message


def test_next_chunk_run_of_a_layer_starts_at_the_memory_that_worked(tmp_path):
    ds = load_catalog()["padus_4_1"]
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        assert last_good_memory(instance, ds, "padus4_1fee") == 8
        instance.report_runless_asset_event(dg.AssetMaterialization(
            dg.AssetKey(["padus_4_1", "hex_chunk"]), partition="003|padus4_1fee", metadata={"memory_gib": 32}))
        assert last_good_memory(instance, ds, "padus4_1fee") == 32
        assert last_good_memory(instance, ds, "padus4_1easement") == 8


def test_workspace_and_dagster_cloud_describe_the_same_location_with_the_cluster_rules():
    import yaml
    from dagster_k8s.container_context import K8sContainerContext

    from cng_assets.defs.pods import NO_GPU_NODES
    from tests.conftest import REPO

    oss = yaml.safe_load((REPO / "workspace.yaml").read_text())["load_from"][0]["python_module"]
    [plus] = yaml.safe_load((REPO / "dagster_cloud.yaml").read_text())["locations"]
    assert (plus["location_name"], plus["code_source"]["module_name"]) == (oss["location_name"], oss["module_name"])
    k8s = plus["container_context"]["k8s"]
    context = K8sContainerContext.create_from_config(plus["container_context"])  # dagster-k8s parses it
    run = context.run_k8s_config
    assert context.namespace == "biodiversity" and {"secret_ref": {"name": "aws"}} in run.container_config["env_from"]
    assert run.pod_spec_config["affinity"] == NO_GPU_NODES and run.job_spec_config["ttl_seconds_after_finished"] == 3600
    for key in ("run_k8s_config", "server_k8s_config"):
        pod = k8s[key]["pod_spec_config"]
        assert pod["affinity"] == NO_GPU_NODES and pod["priority_class_name"] == "opportunistic"
    assert "AWS_SECRET" not in json.dumps(k8s["env_vars"])


# --- The out-of-memory ladder, through Dagster into the Job dagster-k8s creates ------------------------------------

@pytest.fixture
def cluster(defs, tmp_path, monkeypatch):
    """An instance as the Helm chart renders it from k8s/values*.yaml (K8sRunLauncher, run retries, pools), with no
    cluster behind it: no kubeconfig is loaded and the Jobs dagster-k8s would create are captured instead of sent."""
    import dagster_k8s.launcher
    import kubernetes.config

    from tests.test_k8s_manifests import instance_yaml, values_for

    monkeypatch.setattr(dagster_k8s.launcher, "load_kubernetes_config", lambda **_: None)
    monkeypatch.setattr(kubernetes.config, "load_incluster_config", lambda *a, **k: None)
    created: list = []
    monkeypatch.setattr(dagster_k8s.client.DagsterKubernetesClient, "create_namespaced_job_with_retries",
                        lambda self, body, namespace, **_: created.append(
                            (namespace, client.ApiClient().sanitize_for_serialization(body))))
    with dg.instance_for_test(overrides=instance_yaml(values_for("prod"), "cng-assets-prod"), temp_dir=str(tmp_path)) as instance:
        yield instance, created


def launch_steps(defs, instance, job_name: str, request: dg.RunRequest) -> dg.DagsterRun:
    """`request` as the daemon launches it (a run of the code location, with the chart's container context), then
    what its run worker does with each step: the job's executor built from the run's own config, and its step
    handler's launch_step (dagster-k8s's K8sStepHandler: container context, per-step config, construct_dagster_k8s_job)."""
    from dagster._core.code_pointer import ModuleCodePointer
    from dagster._core.definitions.job_base import InMemoryJob
    from dagster._core.execution.api import create_execution_plan
    from dagster._core.execution.context.system import PlanData, PlanOrchestrationContext
    from dagster._core.execution.context_creation_job import create_context_free_log_manager
    from dagster._core.executor.init import InitExecutorContext
    from dagster._core.executor.step_delegating.step_handler.base import StepHandlerContext
    from dagster._core.origin import JobPythonOrigin, RepositoryPythonOrigin
    from dagster._core.system_config.objects import ResolvedRunConfig
    from dagster._grpc.types import ExecuteStepArgs

    from tests.test_k8s_manifests import container_context, deployment, image_name, values_for

    values = values_for("prod")
    dep = deployment(values)
    origin = JobPythonOrigin(job_name, RepositoryPythonOrigin(
        executable_path="/usr/local/bin/python", code_pointer=ModuleCodePointer("cng_assets.definitions", "defs", None),
        container_image=image_name(dep), container_context=container_context(values, dep, "cng-assets-prod")))
    job = defs.resolve_job_def(job_name)
    tags = {**request.tags, "dagster/partition": str(request.partition_key)}
    run = instance.create_run_for_job(job, run_config=request.run_config, tags=tags, job_code_origin=origin,
                                      asset_selection=frozenset(job.asset_layer.executable_asset_keys))
    config = ResolvedRunConfig.build(job, run.run_config).execution.execution_engine_config
    executor = job.executor_def.executor_creation_fn(InitExecutorContext(
        job=InMemoryJob(job), executor_def=job.executor_def, executor_config=config, instance=instance))
    plan = create_execution_plan(job, run_config=run.run_config, tags=run.tags)
    context = PlanOrchestrationContext(PlanData(InMemoryJob(job), run, instance, plan), create_context_free_log_manager(instance, run),
                                       executor, output_capture=None)
    for step in plan.get_steps_to_execute_in_topo_order():
        args = ExecuteStepArgs(job_origin=origin, run_id=run.run_id, step_keys_to_execute=[step.key])
        list(executor._step_handler.launch_step(StepHandlerContext(instance, context, [step], args, run)))
    return run


def memory_of(job: dict) -> tuple[str, str]:
    [container] = job["spec"]["template"]["spec"]["containers"]
    return container["resources"]["requests"]["memory"], container["resources"]["limits"]["memory"]


def test_oom_retry_gets_a_pod_with_more_memory_through_the_k8s_executor(defs, cluster):
    """The chunk sensor's run request, launched; its pod OOMKilled; the failure sensor's retry, launched: the
    step Jobs dagster-k8s creates carry the catalog's memory, then twice that."""
    from tests.ticks import tick

    instance, created = cluster
    ds = load_catalog()["padus_4_1"]
    chunk = ds.pod("hex_chunk").memory_gib
    instance.add_dynamic_partitions("padus_4_1__polygons", ["padus4_1fee"])
    instance.add_dynamic_partitions("padus_4_1__chunks", chunk_keys(ds))
    instance.add_dynamic_partitions("padus_4_1__rasters", ["density"])
    cursor = tick(defs, instance, "padus_4_1__chunk_runs", None).cursor
    instance.report_runless_asset_event(dg.AssetMaterialization(["padus_4_1", "hex_plan"], partition="padus4_1fee",
                                                                metadata={"chunks": 1}))
    instance.report_runless_asset_event(dg.AssetMaterialization(["padus_4_1", "cog"], partition="density",
                                                                metadata={"chunks": 1}))
    first, raster = tick(defs, instance, "padus_4_1__chunk_runs", cursor).run_requests
    # a raster chunk is not the failure sensor's: Dagster's run retries rerun it when its pod is preempted
    assert "dagster/max_retries" not in raster.tags and raster.tags.items() >= RETRY_FROM_FAILURE.items()
    run = launch_steps(defs, instance, "padus_4_1__hex_chunk_job", first)
    [(namespace, job)] = created
    validate(job)
    assert memory_of(job) == (f"{chunk}Gi", f"{chunk}Gi")  # the first try: the catalog's memory
    # what the executor no longer sets itself comes from the chart's K8sRunLauncher: namespace, the S3 Secret
    [container] = job["spec"]["template"]["spec"]["containers"]
    assert namespace == "biodiversity" and {"secretRef": {"name": "aws"}} in container["envFrom"]

    instance.report_run_failed(run)
    failed = instance.get_run_by_id(run.run_id)
    assert failed.tags.get("dagster/will_retry") == "false"  # Dagster's run retries leave a chunk run to the sensor
    retry = evaluate(defs, instance, failed, [oom_pod()])
    assert isinstance(retry, dg.RunRequest)
    launch_steps(defs, instance, "padus_4_1__hex_chunk_job", retry)
    namespace, job = created[1]
    validate(job)
    assert memory_of(job) == (f"{2 * chunk}Gi", f"{2 * chunk}Gi")  # the retry's pod: twice the memory
    assert job["spec"]["template"]["spec"]["priorityClassName"] == "opportunistic"  # the rest of the op's config stays


def test_run_retries_rerun_a_failed_run_but_leave_chunk_runs_to_the_failure_sensor(defs, cluster):
    """The chart's instance retries failed runs (a preempted pod: same pod again, from the failed steps); a chunk
    run made by the sensors is not retried by Dagster, one it does retry is not retried by the sensor too."""
    import yaml

    from tests.conftest import REPO

    instance, _ = cluster
    assert instance.run_retries_enabled and instance.run_retries_max_retries == 2
    cli = yaml.safe_load((REPO / "k8s" / "instance" / "dagster.yaml").read_text())["run_retries"]
    assert cli == {"enabled": True, "max_retries": instance.run_retries_max_retries}  # the CLI's instance agrees

    def failed(job_name: str, asset: str, partition: str, tags: dict) -> dg.DagsterRun:
        run = instance.create_run_for_job(defs.resolve_job_def(job_name), asset_selection=frozenset(
            {dg.AssetKey(["padus_4_1", asset])}), tags={"dagster/partition": partition, MEMORY_TAG: "8", **tags})
        instance.report_run_failed(run)
        return instance.get_run_by_id(run.run_id)

    layer = failed("__ASSET_JOB", "geoparquet", "padus4_1fee", RETRY_FROM_FAILURE)  # as the raw-upload backfill tags it
    assert layer.tags["dagster/will_retry"] == "true" and layer.tags["dagster/retry_strategy"] == "FROM_FAILURE"
    chunk = failed("padus_4_1__hex_chunk_job", "hex_chunk", "001|padus4_1fee", CHUNK_RUN_TAGS)
    assert chunk.tags["dagster/will_retry"] == "false"
    assert isinstance(evaluate(defs, instance, chunk, [preempted_pod()]), dg.RunRequest)
    backfilled = failed("padus_4_1__hex_chunk_job", "hex_chunk", "002|padus4_1fee", {})  # a backfill's chunk run
    assert backfilled.tags["dagster/will_retry"] == "true"
    skip = evaluate(defs, instance, backfilled, [oom_pod()])
    assert isinstance(skip, dg.SkipReason) and "run retries" in skip.skip_message


def test_every_step_pod_requests_the_local_disk_it_writes_within_the_limit_range(defs):
    """Without an ephemeral-storage request a pod that downloads a GeoParquet or a layer's hex chunks is evicted
    when the node's disk runs short; the cluster's LimitRange refuses a pod above 50 Gi."""
    ds = load_catalog()["padus_4_1"]
    graph = defs.resolve_asset_graph()
    names = {k.path[-1] for k in graph.get_all_asset_keys()  # the steps (not the observed source)
             if k.path[0] == ds.name and graph.get(k).is_materializable}
    assert {"geoparquet", "pmtiles", "hex_chunk", "hex", "stac", "docs"} <= names
    gib = {}
    for asset in sorted(names):
        job, _ = step_job(defs, asset)
        [container] = job["spec"]["template"]["spec"]["containers"]
        requests, limits = container["resources"]["requests"], container["resources"]["limits"]
        assert requests["ephemeral-storage"] == limits["ephemeral-storage"], asset
        gib[asset] = int(limits["ephemeral-storage"].removesuffix("Gi"))
        assert 1 <= gib[asset] <= 50, asset
    assert all(gib[a] == ds.pod(a).ephemeral_gib for a in ("hex", "pmtiles", "stac", "docs"))
    assert gib["hex"] > gib["stac"] and gib["pmtiles"] > gib["stac"]  # the steps that download and stage the most


def test_a_catalog_pod_size_without_a_disk_keeps_the_steps_default_disk():
    from cng_assets.catalog import DEFAULT_PODS, Dataset

    base = load_catalog()["demo"].model_dump()
    ds = Dataset(**{**base, "pods": {"hex": {"cpu": "8", "memory_gib": 16}, "docs": {"ephemeral_gib": 2}}})
    assert (ds.pod("hex").cpu, ds.pod("hex").ephemeral_gib) == ("8", DEFAULT_PODS["hex"].ephemeral_gib)
    assert ds.pod("docs").ephemeral_gib == 2
