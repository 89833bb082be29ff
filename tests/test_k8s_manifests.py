"""Offline checks of the Kubernetes deployment in k8s/: no cluster, no helm binary.

- The kustomize overlays are rendered (`kubectl kustomize`, else a minimal renderer of the few features they use)
  and every manifest is validated strictly against the newest Kubernetes schema kubernetes-validate bundles.
- The Role covers exactly the API calls the installed dagster-k8s makes, and no more than the allowed list.
- The Helm values use only keys of the Dagster chart, hold no secret, and dev/prod differ only in bucket,
  resources and image. What the chart makes of them (the instance's dagster.yaml and the code location's container
  context, mirrored from its templates) is loaded through Dagster itself, and a run is launched through the real
  K8sRunLauncher with the API call captured, so the run pod's Job is the one dagster-k8s would create; it is
  validated against the Kubernetes schema too.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import kubernetes
import kubernetes_validate
import pytest
import yaml

K8S = Path(__file__).resolve().parents[1] / "k8s"
K8S_VERSION = "1.37.0"  # the newest schema kubernetes-validate 1.37.0 bundles
NAMESPACE = "biodiversity"
ENVS = ("dev", "prod")
SA = "cng-assets"
CHART_VERSION = "1.13.27"
NO_GPU = {"key": "feature.node.kubernetes.io/pci-10de.present", "operator": "NotIn", "values": ["true"]}


def load(name: str):
    return yaml.safe_load((K8S / name).read_text())


def validate(doc: dict) -> None:
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


# --- kustomize ----------------------------------------------------------------------------------------------------

def render_minimal(path: Path) -> list[dict]:
    """The kustomize features the overlays use: resources (files, directories), namespace, labels without selectors.
    Anything else in a kustomization.yaml is refused rather than ignored."""
    k = yaml.safe_load((path / "kustomization.yaml").read_text())
    unknown = set(k) - {"apiVersion", "kind", "resources", "namespace", "labels"}
    assert not unknown, f"{path}: the minimal renderer does not handle {unknown}"
    docs: list[dict] = []
    for r in k.get("resources", []):
        docs += render_minimal(path / r) if (path / r).is_dir() else [d for d in yaml.safe_load_all((path / r).read_text()) if d]
    for d in docs:
        if ns := k.get("namespace"):
            d["metadata"]["namespace"] = ns
            for s in d.get("subjects", []):
                if s.get("kind") == "ServiceAccount":
                    s["namespace"] = ns
        for group in k.get("labels", []):
            assert group.get("includeSelectors") is False, "selector labels are not handled"
            d["metadata"].setdefault("labels", {}).update(group["pairs"])
    return docs


def render(path: Path) -> list[dict]:
    kubectl, kustomize = shutil.which("kubectl"), shutil.which("kustomize")
    if not (kubectl or kustomize):
        return render_minimal(path)
    cmd = [kubectl, "kustomize", str(path)] if kubectl else [kustomize, "build", str(path)]
    docs = [d for d in yaml.safe_load_all(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout) if d]
    key = lambda d: (d["kind"], d["metadata"]["name"])  # noqa: E731
    assert sorted(docs, key=key) == sorted(render_minimal(path), key=key), "the minimal renderer disagrees with kustomize"
    return docs


@pytest.fixture(scope="module")
def overlays() -> dict[str, list[dict]]:
    return {env: render(K8S / "overlays" / env) for env in ENVS}


def test_overlays_render_to_valid_namespaced_rbac(overlays):
    for env, docs in overlays.items():
        assert sorted(d["kind"] for d in docs) == ["Role", "RoleBinding", "ServiceAccount"], env
        for d in docs:
            validate(d)
            assert d["metadata"]["namespace"] == NAMESPACE and d["metadata"]["name"] == SA
            assert d["metadata"]["labels"]["cng-assets/environment"] == env
        binding = next(d for d in docs if d["kind"] == "RoleBinding")
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": SA}
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": SA, "namespace": NAMESPACE}]
    # dev and prod differ in their environment label only
    strip = lambda docs: [{**d, "metadata": {**d["metadata"], "labels": {k: v for k, v in d["metadata"]["labels"].items()  # noqa: E731
                                                                        if k != "cng-assets/environment"}}} for d in docs]
    assert strip(overlays["dev"]) == strip(overlays["prod"])
    assert not any(re.search(r"kind:\s*Cluster", p.read_text()) for p in K8S.rglob("*.yaml")), "no cluster-scoped RBAC"


# --- RBAC ---------------------------------------------------------------------------------------------------------

# The most the Role may grant: the brief's list, plus the two calls dagster-k8s makes beyond it (the Job status
# subresource, and deleting a Job's pods).
ALLOWED = {("batch", "jobs", v) for v in ("create", "get", "list", "watch", "delete")} | {("batch", "jobs/status", "get")} | {
    ("", "pods", v) for v in ("get", "list", "watch", "delete")} | {("", "pods/log", v) for v in ("get", "list", "watch")} | {
    ("", "events", v) for v in ("get", "list", "watch")}
VERBS = {"create": "create", "read": "get", "list": "list", "delete": "delete", "patch": "patch", "replace": "update"}


def dagster_k8s_calls() -> set[tuple[str, str, str]]:
    """(apiGroup, resource, verb) of every Kubernetes API call in the modules behind K8sRunLauncher and
    k8s_job_executor (not dagster_k8s.pipes, which this project does not use)."""
    import dagster_k8s

    needed = set()
    for module in ("client.py", "launcher.py", "executor.py", "job.py", "container_context.py"):
        src = (Path(dagster_k8s.__file__).parent / module).read_text()
        for api, method in re.findall(r"(batch_api|core_api)\.(\w+)\(", src):
            m = re.fullmatch(r"(create|read|list|delete|patch|replace)_namespaced_(job|pod|event)(?:_(status|log))?", method)
            assert m, f"dagster_k8s/{module} calls {api}.{method}: map it to an RBAC rule"
            verb, kind, sub = m.groups()
            needed.add(("batch" if api == "batch_api" else "", kind + "s" + (f"/{sub}" if sub else ""), VERBS[verb]))
    return needed


def test_role_grants_what_dagster_k8s_calls_and_no_more(overlays):
    role = next(d for d in overlays["prod"] if d["kind"] == "Role")
    granted = {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}
    needed = dagster_k8s_calls()
    assert ("batch", "jobs", "create") in needed and ("", "pods", "delete") in needed  # the scan found the calls
    assert needed <= granted, f"missing: {needed - granted}"
    assert granted <= ALLOWED, f"beyond least privilege: {granted - ALLOWED}"
    assert not any(r in ("secrets", "configmaps") for _, r, _ in granted)


# --- Helm values: keys, secrets, environments ----------------------------------------------------------------------

ANY = None  # a Kubernetes object or a free-form map, passed through by the chart


def keys(*names: str) -> dict:
    return dict.fromkeys(names, ANY)


IMAGE = keys("repository", "tag", "pullPolicy")
POD = keys("env", "envConfigMaps", "envSecrets", "annotations", "labels", "deploymentLabels", "nodeSelector", "affinity",
           "tolerations", "podSecurityContext", "securityContext", "resources", "livenessProbe", "readinessProbe", "startupProbe",
           "volumeMounts", "volumes", "schedulerName")
TAG_LIMITS = [keys("key", "value", "limit")]
# The chart's keys as its schema has them (helm/dagster/schema/schema/charts/**: values.py, subschema/daemon.py,
# concurrency.py, run_launcher.py, postgresql.py, service_account.py, global_.py,
# dagster_user_deployments/subschema/user_deployments.py; runMonitoring's keys from templates/configmap-instance.yaml,
# rbacEnabled from values.yaml and templates/role.yaml), for the parts these values use.
CHART_KEYS = {
    "rbacEnabled": ANY,
    "serviceAccount": keys("create", "name", "annotations"),
    "global": keys("serviceAccountName", "postgresqlSecretName", "dagsterHome", "celeryConfigSecretName"),
    "dagsterWebserver": {**POD, "image": IMAGE, **keys("replicaCount", "nameOverride", "pathPrefix", "service", "workspace",
                                                       "enableReadOnly", "dbStatementTimeout", "dbPoolRecycle", "logLevel")},
    "dagsterDaemon": {
        **POD, "image": IMAGE, **keys("enabled", "heartbeatTolerance", "runRetries", "sensors", "schedules"),
        "runCoordinator": {**keys("enabled", "type"), "config": {"customRunCoordinator": ANY, "queuedRunCoordinator": {
            "tagConcurrencyLimits": TAG_LIMITS, **keys("maxConcurrentRuns", "dequeueIntervalSeconds", "dequeueNumWorkers",
                                                       "dequeueUseThreads", "blockOpConcurrencyLimitedRuns")}}},
        "runMonitoring": keys("enabled", "startTimeoutSeconds", "cancelTimeoutSeconds", "maxResumeRunAttempts", "pollIntervalSeconds",
                              "freeSlotsAfterRunEndSeconds")},
    "concurrency": {"enabled": ANY, "pools": keys("defaultLimit", "granularity", "opGranularityRunBuffer"),
                    "runs": {"maxConcurrentRuns": ANY, "tagConcurrencyLimits": TAG_LIMITS}},
    "runLauncher": {"type": ANY, "config": {"celeryK8sRunLauncher": ANY, "customRunLauncher": ANY, "k8sRunLauncher": {
        **keys("image", "imagePullPolicy", "jobNamespace", "loadInclusterConfig", "kubeconfigFile", "envConfigMaps", "envSecrets",
               "envVars", "volumeMounts", "volumes", "labels", "failPodOnRunFailure", "resources", "schedulerName", "securityContext"),
        "runK8sConfig": keys("containerConfig", "podSpecConfig", "podTemplateSpecMetadata", "jobSpecConfig", "jobMetadata")}}},
    "dagster-user-deployments": {**keys("enabled", "enableSubchart", "imagePullSecrets"), "deployments": [{
        **POD, "image": IMAGE, "includeConfigInLaunchedRuns": keys("enabled"),
        **keys("name", "dagsterApiGrpcArgs", "codeServerArgs", "port")}]},
    "postgresql": keys("image", "enabled", "postgresqlHost", "postgresqlUsername", "postgresqlPassword", "postgresqlDatabase",
                       "postgresqlParams", "postgresqlScheme", "service"),
    "telemetry": keys("enabled"),
}


def unknown_keys(values, spec, path="") -> list[str]:
    if spec is ANY or values is None:
        return []
    if isinstance(spec, list):
        return [p for i, item in enumerate(values) for p in unknown_keys(item, spec[0], f"{path}[{i}]")]
    return [p for k, v in values.items()
            for p in ([f"{path}.{k}"] if k not in spec else unknown_keys(v, spec[k], f"{path}.{k}"))]


def helm_merge(base, over):
    """Helm's coalescing of values files: maps merge key by key, anything else (lists too) is replaced, null deletes."""
    if not (isinstance(base, dict) and isinstance(over, dict)):
        return over
    out = dict(base)
    for k, v in over.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = helm_merge(base.get(k), v)
    return out


def values_for(env: str) -> dict:
    return helm_merge(load("values.yaml"), load(f"values-{env}.yaml"))


def deployment(values: dict) -> dict:
    (dep,) = values["dagster-user-deployments"]["deployments"]
    return dep


def test_values_use_only_chart_keys():
    assert unknown_keys({"a": 1, "runLauncher": {"config": {"k8sRunLauncher": {"runK8SConfig": {}}}}}, CHART_KEYS) == [
        ".a", ".runLauncher.config.k8sRunLauncher.runK8SConfig"]  # the check itself sees a typo
    for name in ("values.yaml", "values-dev.yaml", "values-prod.yaml"):
        assert unknown_keys(load(name), CHART_KEYS) == [], name


SECRET_PATTERNS = [
    re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),  # an AWS access key id
    re.compile(r"(?i)aws_secret_access_key[\"']?\s*[:=]\s*[\"']?[A-Za-z0-9/+]{30,}"),  # a literal secret key
    re.compile(r"(?im)^[ \t]*(postgresqlPassword|password)[ \t]*:[ \t]*(?![{#~]|null\b)\S"),  # a password as a literal
]


def secrets_in(text: str) -> list[str]:
    return [m.group(0) for p in SECRET_PATTERNS for m in p.finditer(text)]


def test_no_secret_values_only_references():
    assert secrets_in("aws_access_key_id: " + "AKIA" + "ABCDEFGHIJKLMNOP")  # the scan sees a key
    assert secrets_in("AWS_SECRET_ACCESS_KEY: " + "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzzzzzzzzzz")
    assert secrets_in("postgresql:\n  postgresqlPassword: test\n") and not secrets_in("password: {env: DAGSTER_PG_PASSWORD}")
    for path in K8S.rglob("*"):
        if path.is_file():
            assert secrets_in(path.read_text()) == [], path
    for values in (load("values.yaml"), *(values_for(env) for env in ENVS)):
        dep = deployment(values)
        aws = {e["name"]: e for e in dep["env"] if e["name"].startswith("AWS_")}
        assert set(aws) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
        for name, e in aws.items():
            assert e == {"name": name, "valueFrom": {"secretKeyRef": {"name": "aws", "key": name}}}, e
        assert not dep.get("envSecrets") or dep["envSecrets"] == [{"name": "aws"}]
        assert values["runLauncher"]["config"]["k8sRunLauncher"]["envSecrets"] == [{"name": "aws"}]
        assert "postgresqlPassword" not in values["postgresql"]


def flatten(value, path=()) -> dict[tuple, object]:
    """Leaves by path; lists of named objects are keyed by name (`[name=...]`), other lists are leaves."""
    if isinstance(value, dict):
        return {p: v for k, item in value.items() for p, v in flatten(item, (*path, k)).items()} if value else {path: {}}
    if isinstance(value, list) and value and all(isinstance(i, dict) and "name" in i for i in value):
        return {p: v for i in value for p, v in flatten(i, (*path, f"[name={i['name']}]")).items()}
    return {path: value}


def differing(a, b) -> set[tuple]:
    fa, fb = flatten(a), flatten(b)
    return {p for p in fa.keys() | fb.keys() if fa.get(p, KeyError) != fb.get(p, KeyError)}


def allowed(path: tuple) -> bool:
    """What may differ between the environments: resources, the image tag (or digest), the bucket/prefix env."""
    bucket = ("[name=CNG_S3_BUCKET]", "[name=CNG_S3_PREFIX]")
    return "resources" in path or path[-2:] == ("image", "tag") or any(p in bucket for p in path)


def test_dev_and_prod_differ_only_in_bucket_resources_and_image():
    assert not allowed(("runLauncher", "config", "k8sRunLauncher", "jobNamespace"))
    dev, prod = load("values-dev.yaml"), load("values-prod.yaml")
    diff = differing(dev, prod)
    assert {p for p in diff if not allowed(p)} == set()
    assert any(p[-2:] == ("image", "tag") for p in diff) and any("[name=CNG_S3_BUCKET]" in p for p in diff)
    assert any("resources" in p for p in diff)
    base = load("values.yaml")
    for env in ENVS:  # and each environment changes nothing else of values.yaml
        assert {p for p in differing(base, values_for(env)) if not allowed(p)} == set(), env
    assert {p for p in differing(values_for("dev"), values_for("prod")) if not allowed(p)} == set()
    # the tags: dev a plain tag, prod a tag pinned by digest
    assert re.fullmatch(r"[\w][\w.-]{0,127}", deployment(values_for("dev"))["image"]["tag"])
    assert re.fullmatch(r"[\w][\w.-]{0,127}@sha256:[0-9a-f]{64}", deployment(values_for("prod"))["image"]["tag"])


def test_values_name_the_rbac_of_k8s_base(overlays):
    sa = next(d for d in overlays["prod"] if d["kind"] == "ServiceAccount")["metadata"]["name"]
    for env in ENVS:
        values = values_for(env)
        assert values["rbacEnabled"] is False and values["serviceAccount"] == {"create": False, "name": sa}
        assert values["global"]["serviceAccountName"] == sa
        assert values["runLauncher"]["config"]["k8sRunLauncher"]["jobNamespace"] == NAMESPACE


# --- What the chart renders, through Dagster ------------------------------------------------------------------------
# Mirrors of the chart's templates (helm/dagster/templates/helpers/instance/_run-launcher.tpl, _run-coordinator.tpl,
# _concurrency.tpl, configmap-instance.yaml; charts/dagster-user-deployments/templates/helpers/_helpers.tpl and
# deployment-user.yaml) for the parts these values reach.

def fullname(release: str, chart: str = "dagster") -> str:
    return release if chart in release else f"{release}-{chart}"


def pick(src: dict, *pairs: tuple[str, str]) -> dict:
    """The chart's camelCase values under their dagster.yaml names, for those that are set."""
    return {snake: src[camel] for camel, snake in pairs if src.get(camel) not in (None, [], {})}


def instance_yaml(values: dict, release: str) -> dict:
    """The dagster.yaml sections the values decide (the storage sections are PostgreSQL, not for an offline test)."""
    k8s = values["runLauncher"]["config"]["k8sRunLauncher"]
    launcher = {
        "load_incluster_config": k8s["loadInclusterConfig"], "job_namespace": k8s.get("jobNamespace") or NAMESPACE,
        "image_pull_policy": k8s["imagePullPolicy"], "service_account_name": values["global"]["serviceAccountName"],
        "dagster_home": "/opt/dagster/dagster_home", "instance_config_map": f"{fullname(release)}-instance",
        "postgres_password_secret": f"{fullname(release)}-postgresql-secret", **pick(k8s, ("resources", "resources")),
        **({"env_secrets": [s["name"] for s in k8s["envSecrets"]]} if k8s.get("envSecrets") else {}),
        **({"run_k8s_config": pick(k8s["runK8sConfig"], ("containerConfig", "container_config"), ("podSpecConfig", "pod_spec_config"),
                                   ("podTemplateSpecMetadata", "pod_template_spec_metadata"), ("jobSpecConfig", "job_spec_config"),
                                   ("jobMetadata", "job_metadata"))} if k8s.get("runK8sConfig") else {})}
    out = {"run_launcher": {"module": "dagster_k8s", "class": "K8sRunLauncher", "config": launcher},
           "telemetry": {"enabled": values["telemetry"]["enabled"]}}
    daemon, conc = values["dagsterDaemon"], values["concurrency"]
    qrc = daemon["runCoordinator"].get("config", {}).get("queuedRunCoordinator", {})
    if conc["enabled"] and daemon["runCoordinator"]["enabled"]:  # the chart's own refusals (_concurrency.tpl)
        runs = conc.get("runs", {})
        assert runs.get("maxConcurrentRuns") is None or qrc.get("maxConcurrentRuns") is None
        assert not (runs.get("tagConcurrencyLimits") and qrc.get("tagConcurrencyLimits"))
    if daemon["enabled"] and daemon["runCoordinator"]["enabled"]:
        cfg = {}
        if any(v not in (None, [], {}, "", False) for v in qrc.values()):
            if not conc["enabled"] or qrc.get("maxConcurrentRuns") is not None:  # -1 when unset: no limit
                cfg["max_concurrent_runs"] = -1 if qrc.get("maxConcurrentRuns") is None else qrc["maxConcurrentRuns"]
            cfg |= pick(qrc, ("tagConcurrencyLimits", "tag_concurrency_limits"),
                        ("dequeueIntervalSeconds", "dequeue_interval_seconds"), ("dequeueUseThreads", "dequeue_use_threads"),
                        ("dequeueNumWorkers", "dequeue_num_workers"))
        out["run_coordinator"] = {"module": "dagster.core.run_coordinator", "class": "QueuedRunCoordinator",
                                  **({"config": cfg} if cfg else {})}
    mon = daemon["runMonitoring"]
    if daemon["enabled"] and mon["enabled"]:
        out["run_monitoring"] = {"enabled": True, "start_timeout_seconds": mon["startTimeoutSeconds"],
                                 "poll_interval_seconds": mon["pollIntervalSeconds"],
                                 "free_slots_after_run_end_seconds": mon["freeSlotsAfterRunEndSeconds"],
                                 **pick(mon, ("cancelTimeoutSeconds", "cancel_timeout_seconds"),
                                        ("maxResumeRunAttempts", "max_resume_run_attempts"))}
    retries = daemon.get("runRetries") or {}
    if daemon["enabled"] and retries.get("enabled"):
        out["run_retries"] = {"enabled": True, **({"max_retries": retries["maxRetries"]} if retries.get("maxRetries") else {})}
    if conc["enabled"]:
        pools = pick(conc.get("pools", {}), ("defaultLimit", "default_limit"), ("granularity", "granularity"),
                     ("opGranularityRunBuffer", "op_granularity_run_buffer"))
        runs = pick(conc.get("runs", {}), ("maxConcurrentRuns", "max_concurrent_runs"),
                    ("tagConcurrencyLimits", "tag_concurrency_limits"))
        out["concurrency"] = {**({"pools": pools} if pools else {}), **({"runs": runs} if runs else {})}
    return out


def image_name(dep: dict) -> str:
    """dagster.dagsterImage.name: `repository:tag`, the chart's version when the tag is unset."""
    return f"{dep['image']['repository']}:{dep['image']['tag'] or CHART_VERSION}"


def container_context(values: dict, dep: dict, release: str) -> dict:
    """dagsterUserDeployments.k8sContainerContext: what the code server hands every run it launches."""
    ud = fullname(release, "dagster-user-deployments")
    k8s = {"image_pull_policy": dep["image"]["pullPolicy"],
           "env_config_maps": [f"{ud}-{dep['name']}-user-env", *[c["name"] for c in dep.get("envConfigMaps") or []]],
           **({"env_secrets": [s["name"] for s in dep["envSecrets"]]} if dep.get("envSecrets") else {}),
           **({"resources": dep["resources"]} if dep.get("resources") else {}),
           "namespace": NAMESPACE, "service_account_name": values["global"]["serviceAccountName"],
           **({"env": dep["env"]} if isinstance(dep.get("env"), list) and dep["env"] else {}),
           "run_k8s_config": {"pod_spec_config": {"automount_service_account_token": True}}}
    return {"k8s": k8s}


def user_deployment(values: dict, dep: dict, release: str) -> dict:
    """deployment-user.yaml for one deployment (nulls the chart would print are left out)."""
    ud = fullname(release, "dagster-user-deployments")
    labels = {"app.kubernetes.io/name": "dagster-user-deployments", "app.kubernetes.io/instance": release,
              "component": "user-deployments", "deployment": dep["name"]}
    probe = {"exec": {"command": ["dagster", "api", "grpc-health-check", "-p", str(dep["port"])]}, "periodSeconds": 20,
             "timeoutSeconds": 10, "successThreshold": 1, "failureThreshold": 15}
    pg = {"secretKeyRef": {"name": f"{fullname(release)}-postgresql-secret", "key": "postgresql-password"}}
    container = {
        "name": "dagster-user-deployments", "imagePullPolicy": dep["image"]["pullPolicy"], "image": image_name(dep),
        "args": ["dagster", "api", "grpc", "-h", "0.0.0.0", "-p", str(dep["port"]), *dep["dagsterApiGrpcArgs"]],
        "env": [{"name": "DAGSTER_CURRENT_IMAGE", "value": image_name(dep)}, {"name": "DAGSTER_PG_PASSWORD", "valueFrom": pg},
                {"name": "DAGSTER_CLI_API_GRPC_CONTAINER_CONTEXT", "value": json.dumps(container_context(values, dep, release))},
                *dep["env"]],
        "envFrom": [{"configMapRef": {"name": f"{ud}-user-deployments-shared-env"}},
                    {"configMapRef": {"name": f"{ud}-{dep['name']}-user-env"}},
                    *[{"secretRef": s} for s in dep.get("envSecrets") or []]],
        "resources": dep.get("resources") or {}, **({} if dep.get("readinessProbe") else {"readinessProbe": probe})}
    pod = {"serviceAccountName": values["global"]["serviceAccountName"], "containers": [container],
           **{k: dep[k] for k in ("nodeSelector", "affinity", "tolerations") if dep.get(k) is not None}}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": f"{ud}-{dep['name']}", "labels": labels},
            "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": {"metadata": {"labels": labels}, "spec": pod}}}


@pytest.fixture
def offline_k8s(monkeypatch):
    """K8sRunLauncher without a cluster: no kubeconfig loaded, and Job creation captured instead of sent."""
    import dagster_k8s.launcher

    monkeypatch.setattr(dagster_k8s.launcher, "load_kubernetes_config", lambda **_: None)
    created: list = []

    def capture(self, body, namespace, **_):
        created.append((namespace, body))

    monkeypatch.setattr(dagster_k8s.client.DagsterKubernetesClient, "create_namespaced_job_with_retries", capture)
    return created


def affinity_terms(affinity: dict) -> list:
    terms = affinity["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    return [e for t in terms for e in t["matchExpressions"]]


@pytest.mark.parametrize("env", ENVS)
def test_instance_and_run_pod_through_dagster(env, offline_k8s):
    from dagster._core.code_pointer import ModuleCodePointer
    from dagster._core.launcher import LaunchRunContext
    from dagster._core.origin import JobPythonOrigin, RepositoryPythonOrigin
    from dagster._core.test_utils import create_run_for_test, instance_for_test

    values, release = values_for(env), f"cng-assets-{env}"
    dep = deployment(values)
    with instance_for_test(overrides=instance_yaml(values, release)) as instance:  # Dagster validates the whole config
        # run queue and pools
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        conc = instance.get_concurrency_config()
        assert conc.pool_config.default_pool_limit == 50 and conc.pool_config.pool_granularity.value == "run"
        instance.event_log_storage.initialize_concurrency_limit_to_default("hex_chunks")  # as the run queue does
        assert instance.event_log_storage.get_concurrency_info("hex_chunks").slot_count == 50
        assert conc.run_queue_config.tag_concurrency_limits and conc.run_queue_config.max_concurrent_runs >= 50
        # run monitoring: nothing stays STARTING or STARTED once its pod is gone
        assert instance.run_monitoring_enabled and instance.run_monitoring_start_timeout_seconds > 0
        assert instance.run_monitoring_poll_interval_seconds > 0 and instance.run_monitoring_max_resume_run_attempts == 0

        # a run of the code location, launched as the chart's code server would hand it over
        origin = JobPythonOrigin("__ASSET_JOB", RepositoryPythonOrigin(
            executable_path="/usr/local/bin/python", code_pointer=ModuleCodePointer("cng_assets.definitions", "defs", None),
            container_image=image_name(dep), container_context=container_context(values, dep, release)))
        run = create_run_for_test(instance, job_name="__ASSET_JOB", job_code_origin=origin)
        instance.run_launcher.launch_run(LaunchRunContext(dagster_run=run, workspace=None))

    ((namespace, job),) = offline_k8s
    manifest = kubernetes.client.ApiClient().sanitize_for_serialization(job)
    validate(manifest)
    assert namespace == NAMESPACE
    pod = manifest["spec"]["template"]["spec"]
    assert pod["priorityClassName"] == "opportunistic" and affinity_terms(pod["affinity"]) == [NO_GPU]
    assert pod["serviceAccountName"] == SA and manifest["spec"]["ttlSecondsAfterFinished"] == 3600
    (container,) = pod["containers"]
    assert container["image"] == image_name(dep) and container["resources"] == dep["resources"]
    env = {e["name"]: e for e in container["env"]}
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "aws", "key": "AWS_SECRET_ACCESS_KEY"}
    assert env["CNG_S3_BUCKET"]["value"] == next(e["value"] for e in dep["env"] if e["name"] == "CNG_S3_BUCKET")
    assert {"secretRef": {"name": "aws"}} in container["envFrom"]


def test_dagster_refuses_a_queue_limit_beside_the_pools():
    """The check above can fail: a max/tag limit on the run coordinator next to `concurrency` is refused."""
    from dagster._core.errors import DagsterInvalidConfigError
    from dagster._core.test_utils import instance_for_test

    values = values_for("prod")
    values["dagsterDaemon"]["runCoordinator"]["config"] = {"queuedRunCoordinator": {"dequeueUseThreads": True}}
    values["concurrency"]["enabled"] = False  # an older chart's rendering: max_concurrent_runs: -1 ...
    rendered = instance_yaml(values, "x")
    rendered["concurrency"] = instance_yaml(values_for("prod"), "x")["concurrency"]  # ... beside the pools
    with pytest.raises(DagsterInvalidConfigError, match="max_concurrent_runs"):
        with instance_for_test(overrides=rendered):
            pass


@pytest.mark.parametrize("env", ("base", *ENVS))
def test_code_server_deployment_is_valid(env):
    values = load("values.yaml") if env == "base" else values_for(env)
    dep = deployment(values)
    manifest = user_deployment(values, dep, f"cng-assets-{env}")
    validate(manifest)
    if env == "base":
        return
    assert dep["dagsterApiGrpcArgs"] == ["-m", "cng_assets.definitions"] and dep["port"] == 3030
    assert dep["image"]["repository"] == "ghcr.io/boettiger-lab/cng-assets"
    env_vars = {e["name"]: e.get("value") for e in dep["env"]}
    assert env_vars["CNG_STORAGE"] == "s3" and env_vars["CNG_S3_ENDPOINT"] == "http://rook-ceph-rgw-nautiluss3.rook"
    assert env_vars["CNG_PUBLIC_BASE_URL"] == "https://s3-west.nrp-nautilus.io" and env_vars["CNG_S3_BUCKET"]


def test_chart_images_match_the_pinned_dagster_and_hex_chunks_is_the_only_pool():
    import dagster

    from cng_assets.definitions import defs

    values = load("values.yaml")
    assert values["dagsterWebserver"]["image"]["tag"] == values["dagsterDaemon"]["image"]["tag"] == dagster.__version__
    assert CHART_VERSION == dagster.__version__  # the chart release these values are written for
    # pools.defaultLimit is hex_chunks' limit only while hex_chunks is the only pool
    pools = {p for a in defs.resolve_asset_graph().assets_defs if getattr(a, "node_def", None) for p in a.node_def.pools}
    assert pools == {"hex_chunks"}
