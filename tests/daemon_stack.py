"""End-to-end harness: the real `dagster-daemon run` and `dagster-webserver` as subprocesses on a PostgreSQL
instance, driven over the webserver's GraphQL API the way the UI drives it.

    pg = Postgres(tmp / "pg").start()            # tests/servers.py, or the `postgres_server` fixture (conftest.py)
    write_instance_yaml(home, pg.port, db_name=fresh_database(pg, "t1"))
    with DaemonStack(home, env={"CNG_SENSOR_INTERVAL": "5"}) as stack:
        backfill = stack.launch_partition_backfill([["ds", "geoparquet"]], ["countries"])
        assert stack.wait_for_backfill(backfill, timeout=300) == "COMPLETED_SUCCESS"
        assert stack.failed_ticks() == [] and stack.daemon_log_errors() == []

Loop speeds of the daemon (Dagster 1.13) and what of them the instance can change:
- sensors: the sensor daemon loops every 5 s (`MIN_INTERVAL_LOOP_TIME`, fixed); a sensor is evaluated when its own
  `minimum_interval_seconds` (default 30) has passed, so the project's sensors tick as fast as CNG_SENSOR_INTERVAL.
  Declarative automation sensors are run by the asset daemon, also on a fixed 5 s loop.
- backfills: the backfill daemon loops every 30 s (`DEFAULT_DAEMON_INTERVAL_SECONDS`, fixed, not configurable), and
  an asset backfill advances one step per loop: submitting the runs takes one loop, noticing that they finished and
  marking the backfill COMPLETED_* takes another, and each level of assets of differing partitions waits for its own
  (assets of the same partitions share a run). Expect 30-60 s for one level (90 s if its runs outlast a loop), plus
  30 s or more per further level.
- the run queue: `run_coordinator.config.dequeue_interval_seconds` (default 5), set to 1 here.
- run monitoring: `run_monitoring.poll_interval_seconds` (default 120), set to 5 here.
- daemon heartbeats: every 30 s (fixed); a daemon is unhealthy 30 s + 30 s tolerance after its last one.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import dagster as dg
import requests
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # .venv/bin: dagster-daemon and dagster-webserver beside the tests' python
TERMINAL_BACKFILL = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}
TERMINAL_RUN = {"SUCCESS", "FAILURE", "CANCELED"}
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_ERROR_LINE = re.compile(r" - (ERROR|CRITICAL) - |^Traceback \(most recent call last\)|^ERROR:")
# grpcio's asyncio poller prints a spurious traceback when a notification wakes another event loop or the socket is
# already closed (grpc/grpc#25364): "Exception in callback ..." then a traceback through its completion queue. Not
# an error of the daemon's; recognised by that frame, so any other traceback still counts.
_GRPC_POLLER_FRAME = "_cygrpc/aio/completion_queue.pyx.pxi"
T = TypeVar("T")


def write_instance_yaml(home: Path, pg_port: int, max_concurrent_runs: int = 3, *, db_name: str = "postgres",
                        pool_limit: int = 2, pool_granularity: str = "run") -> Path:
    """DAGSTER_HOME/dagster.yaml: k8s/values.yaml's instance, with the DefaultRunLauncher (a process per run) in
    place of the K8sRunLauncher and every interval the instance can shorten shortened. Returns its path."""
    config = {
        "storage": {"postgres": {"postgres_db": {
            "hostname": "127.0.0.1", "port": pg_port, "username": "postgres", "db_name": db_name}}},  # trust auth
        "run_launcher": {"module": "dagster._core.launcher", "class": "DefaultRunLauncher"},
        # Its run limits belong in `concurrency.runs`: Dagster refuses them here once `concurrency` is configured.
        "run_coordinator": {"module": "dagster._core.run_coordinator", "class": "QueuedRunCoordinator",
                            "config": {"dequeue_interval_seconds": 1, "dequeue_use_threads": True}},
        # The DefaultRunLauncher cannot check a run worker's health, so monitoring does not notice a dead worker of a
        # STARTED run (it stays STARTED); it still fails runs stuck in STARTING and frees pool slots of ended runs.
        "run_monitoring": {"enabled": True, "poll_interval_seconds": 5, "start_timeout_seconds": 120,
                           "cancel_timeout_seconds": 60, "max_resume_run_attempts": 0,
                           "free_slots_after_run_end_seconds": 10},
        # Threads let the sensors (and backfills) of a location tick in parallel instead of one after another.
        "sensors": {"use_threads": True, "num_workers": 4},
        "backfills": {"use_threads": True, "num_workers": 2},
        "concurrency": {
            # hex_chunks is the code location's only pool, so the default limit is its limit (as in production).
            "pools": {"default_limit": pool_limit, "granularity": pool_granularity},
            "runs": {"max_concurrent_runs": max_concurrent_runs},
        },
        "telemetry": {"enabled": False},
    }
    home.mkdir(parents=True, exist_ok=True)
    path = home / "dagster.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def fresh_database(pg, name: str) -> str:
    """A new, empty database on the `Postgres` server (one per stack: runs, ticks and heartbeats of an earlier
    stack would otherwise be read as this one's). Returns its name."""
    import psycopg2

    conn = psycopg2.connect(host="127.0.0.1", port=pg.port, user="postgres", dbname="postgres")
    conn.autocommit = True  # CREATE DATABASE cannot run in a transaction
    try:
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            cur.execute(f'CREATE DATABASE "{name}"')
    finally:
        conn.close()
    return name


def python_file_workspace(py_file: Path, location: str) -> Path:
    """A workspace.yaml beside `py_file` loading it as the code location `location`."""
    path = py_file.parent / "workspace.yaml"
    path.write_text(yaml.safe_dump({"load_from": [{"python_file": {
        "relative_path": py_file.name, "working_directory": ".", "location_name": location}}]}))
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, lines: int = 60) -> str:
    if not path.exists():
        return f"({path} is absent)"
    return "\n".join(_ANSI.sub("", path.read_text(errors="replace")).splitlines()[-lines:])


class DaemonStack:
    """The daemon and the webserver of one DAGSTER_HOME, started on enter and killed on exit with every process
    they started (code servers, run workers, step processes: all in their process groups).

    `workspace`: a workspace.yaml (default: the repository's), or the CLI's own arguments (`["-m", module]`,
    `["-f", file]`). `env` is merged over os.environ for both processes and so reaches code servers and runs."""

    def __init__(self, home: Path, env: Mapping[str, str] | None = None, workspace: Path | Sequence[str] | None = None,
                 location: str = "cng_assets", repository: str = "__repository__", cwd: Path = REPO,
                 startup_timeout: float = 240, stop_timeout: float = 30, dg_dev: bool = False):
        self.home = Path(home)
        self.dg_dev = dg_dev  # one `dg dev` process (what `make ui` runs) instead of the daemon and the webserver
        self.env = dict(env or {})
        if workspace is None or isinstance(workspace, (str, Path)):
            self.workspace_args = ["-w", str(workspace or REPO / "workspace.yaml")]
        else:
            self.workspace_args = list(workspace)
        self.location, self.repository, self.cwd = location, repository, cwd
        self.startup_timeout, self.stop_timeout = startup_timeout, stop_timeout
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.logs = ({"dg dev": self.home / "dg-dev.log"} if dg_dev else
                     {"daemon": self.home / "daemon.log", "webserver": self.home / "webserver.log"})
        self.procs: dict[str, subprocess.Popen] = {}
        self.startup_seconds: float | None = None
        self.stop_seconds: float | None = None

    # -- lifecycle -------------------------------------------------------------------------------------------------

    def __enter__(self) -> DaemonStack:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        if not (self.home / "dagster.yaml").exists():
            raise FileNotFoundError(f"{self.home / 'dagster.yaml'} is missing: write_instance_yaml() first")
        started = time.time()
        # The storage's schema made once, here: on a fresh database the daemon and the webserver would both make it,
        # and the slower one exits on "type jobs already exists".
        dg.DagsterInstance.from_config(str(self.home)).dispose()
        env = {**os.environ, **self.env, "DAGSTER_HOME": str(self.home), "PYTHONUNBUFFERED": "1"}
        commands = {"dg dev": [str(BIN / "dg"), "dev", "--host", "127.0.0.1", "--port", str(self.port)]} if self.dg_dev else {
            "daemon": [str(BIN / "dagster-daemon"), "run", *self.workspace_args],
            "webserver": [str(BIN / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(self.port), *self.workspace_args],
        }
        env["PATH"] = f"{BIN}:{env.get('PATH', '')}"  # as `make ui` runs it: the venv's tools first
        for name, cmd in commands.items():
            with open(self.logs[name], "ab") as log:
                # its own session: the process group holds its code servers and their run workers and steps
                self.procs[name] = subprocess.Popen(cmd, cwd=self.cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                                    stdin=subprocess.DEVNULL, start_new_session=True)
        self.wait_for(self._location_loaded, self.startup_timeout, f"the webserver to load location {self.location}",
                      interval=1)
        self.wait_for(lambda: self._daemons_healthy(since=started), self.startup_timeout, "healthy daemon heartbeats",
                      interval=1)
        self.startup_seconds = time.time() - started

    def stop(self) -> None:
        """SIGTERM to each leader (the daemon and webserver stop their code servers), then SIGKILL to what is left
        of their process groups: run workers and step processes of runs still in flight."""
        started = time.monotonic()
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout
        for proc in self.procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for proc in self.procs.values():
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass  # the group is gone already
            proc.wait()
        self.procs = {}
        self.stop_seconds = time.monotonic() - started

    def _check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise AssertionError(f"dagster {name} exited with {proc.returncode}:\n{_tail(self.logs[name])}")

    def _location_loaded(self) -> bool:
        entries = self.graphql("""{ workspaceOrError { __typename ... on Workspace { locationEntries {
            name loadStatus locationOrLoadError { __typename ... on PythonError { message stack } } } } } }""")
        entry = next((e for e in entries["workspaceOrError"].get("locationEntries", []) if e["name"] == self.location),
                     None)
        if entry is None or entry["loadStatus"] != "LOADED" or entry["locationOrLoadError"] is None:
            return False
        error = entry["locationOrLoadError"]
        if error["__typename"] == "PythonError":
            raise AssertionError(f"location {self.location} failed to load: {error['message']}\n"
                                 + "".join(error["stack"]))
        return True

    def daemon_statuses(self) -> list[dict]:
        return self.graphql("""{ instance { daemonHealth { allDaemonStatuses {
            daemonType required healthy lastHeartbeatTime lastHeartbeatErrors { message } } } } }""")[
            "instance"]["daemonHealth"]["allDaemonStatuses"]

    def _daemons_healthy(self, since: float) -> bool:
        required = [s for s in self.daemon_statuses() if s["required"]]
        return bool(required) and all(s["healthy"] and (s["lastHeartbeatTime"] or 0) >= since for s in required)

    # -- GraphQL ---------------------------------------------------------------------------------------------------

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        response = requests.post(f"{self.url}/graphql", json={"query": query, "variables": variables or {}},
                                 timeout=60)
        try:
            body = response.json()
        except ValueError:
            raise AssertionError(f"GraphQL HTTP {response.status_code}: {response.text[:2000]}") from None
        if body.get("errors"):
            raise AssertionError("GraphQL errors: " + json.dumps(body["errors"], indent=1)[:4000])
        response.raise_for_status()
        return body["data"]

    @property
    def repository_selector(self) -> dict:
        return {"repositoryName": self.repository, "repositoryLocationName": self.location}

    @staticmethod
    def _ok(result: dict, typename: str, what: str) -> dict:
        if result["__typename"] != typename:
            raise AssertionError(f"{what}: {result['__typename']}: {result.get('message')}\n"
                                 + "".join(result.get("stack") or []))
        return result

    def add_dynamic_partition(self, partitions_def_name: str, key: str) -> None:
        result = self.graphql("""mutation($key: String!, $name: String!, $repo: RepositorySelector!) {
            addDynamicPartition(partitionKey: $key, partitionsDefName: $name, repositorySelector: $repo) {
              __typename ... on Error { message } ... on PythonError { stack } } }""",
                              {"key": key, "name": partitions_def_name, "repo": self.repository_selector})
        self._ok(result["addDynamicPartition"], "AddDynamicPartitionSuccess", f"adding partition {key}")

    def launch_partition_backfill(self, asset_keys: list[list[str]], partition_names: list[str] | None = None,
                                  tags: Mapping[str, str] | None = None, title: str | None = None) -> str:
        """An asset backfill as the UI's "Materialize" dialog launches it; all partitions when `partition_names` is
        None. Returns the backfill id."""
        params: dict[str, Any] = {"assetSelection": [{"path": k} for k in asset_keys],
                                  "tags": [{"key": k, "value": v} for k, v in (tags or {}).items()]}
        if partition_names is None:
            params["allPartitions"] = True
        else:
            params["partitionNames"] = partition_names
        if title:
            params["title"] = title
        result = self.graphql("""mutation($params: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $params) {
            __typename ... on LaunchBackfillSuccess { backfillId } ... on Error { message } ... on PythonError { stack }
            } }""", {"params": params})
        return self._ok(result["launchPartitionBackfill"], "LaunchBackfillSuccess", "launching a backfill")["backfillId"]

    def backfill(self, backfill_id: str) -> dict:
        result = self.graphql("""query($id: String!) { partitionBackfillOrError(backfillId: $id) { __typename
            ... on PartitionBackfill { id status numPartitions error { message stack } runs { runId status } }
            ... on Error { message } } }""", {"id": backfill_id})
        return self._ok(result["partitionBackfillOrError"], "PartitionBackfill", f"backfill {backfill_id}")

    def backfill_status(self, backfill_id: str) -> str:
        return self.backfill(backfill_id)["status"]

    def wait_for_backfill(self, backfill_id: str, timeout: float) -> str:
        """Waits for a terminal status (COMPLETED_SUCCESS, COMPLETED_FAILED, FAILED, CANCELED) and returns it."""
        return self.wait_for(lambda: (s := self.backfill_status(backfill_id)) in TERMINAL_BACKFILL and s, timeout,
                             f"backfill {backfill_id} to finish", interval=2)

    def wait_for_run(self, run_id: str, timeout: float) -> str:
        """Waits for a terminal status (SUCCESS, FAILURE, CANCELED) and returns it."""
        return self.wait_for(lambda: next((r["status"] for r in self.runs({"runIds": [run_id]})
                                           if r["status"] in TERMINAL_RUN), None), timeout, f"run {run_id} to finish")

    def reexecute_run(self, run_id: str, strategy: str = "FROM_FAILURE") -> str:
        """Re-executes a run as the UI's "Re-execute" menu does (FROM_FAILURE, FROM_ASSET_FAILURE, ALL_STEPS); the new
        run id."""
        result = self.graphql("""mutation($params: ReexecutionParams!) { launchRunReexecution(reexecutionParams: $params) {
            __typename ... on LaunchRunSuccess { run { runId } } ... on Error { message } ... on PythonError { stack }
            } }""", {"params": {"parentRunId": run_id, "strategy": strategy}})
        return self._ok(result["launchRunReexecution"], "LaunchRunSuccess", f"re-executing {run_id}")["run"]["runId"]

    def runs(self, filter: dict | None = None, limit: int | None = None) -> list[dict]:
        """Runs, newest first, as {runId, status, jobName, tags: {key: value}, startTime, endTime}. `filter` is a
        GraphQL RunsFilter: {"statuses": ["FAILURE"]}, {"tags": [{"key": "dagster/backfill", "value": id}]}, ..."""
        result = self.graphql("""query($filter: RunsFilter, $limit: Int) { runsOrError(filter: $filter, limit: $limit) {
            __typename ... on Runs { results { runId status jobName startTime endTime tags { key value } } }
            ... on Error { message } } }""", {"filter": filter, "limit": limit})
        runs = self._ok(result["runsOrError"], "Runs", "listing runs")["results"]
        return [{**r, "tags": {t["key"]: t["value"] for t in r["tags"]}} for r in runs]

    def runs_feed(self, limit: int = 100) -> list[dict]:
        """The Runs page's entries (its default view, ROOTS), newest first: a backfill is one entry ({kind: "backfill", id, status, title, description}),
        a run outside any backfill another ({kind: "run", id, status})."""
        result = self.graphql("""query($limit: Int!) { runsFeedOrError(limit: $limit, view: ROOTS) { __typename
            ... on RunsFeedConnection { results { __typename
              ... on PartitionBackfill { id backfillStatus: status title description } ... on Run { runId status } } }
            ... on PythonError { message } } }""", {"limit": limit})
        entries = self._ok(result["runsFeedOrError"], "RunsFeedConnection", "the runs feed")["results"]
        return [{"kind": "backfill", "id": e["id"], "status": e["backfillStatus"], "title": e["title"],
                 "description": e["description"]}
                if e["__typename"] == "PartitionBackfill" else {"kind": "run", "id": e["runId"], "status": e["status"]}
                for e in entries]

    def run_events(self, run_id: str) -> list[dict]:
        """A run's event log: {__typename, eventType, level, stepKey, message, error: {message, stack} | None,
        errorSource (STEP_FAILURE only)}."""
        events, cursor = [], None
        while True:
            result = self.graphql("""query($id: ID!, $cursor: String) { runOrError(runId: $id) { __typename
                ... on Run { eventConnection(afterCursor: $cursor) { cursor hasMore events { __typename
                  ... on MessageEvent { message level stepKey eventType }
                  ... on ErrorEvent { error { message stack } } ... on ExecutionStepFailureEvent { errorSource } } } }
                ... on Error { message } } }""", {"id": run_id, "cursor": cursor})
            page = self._ok(result["runOrError"], "Run", f"run {run_id}")["eventConnection"]
            events += page["events"]
            if not page["hasMore"]:
                return events
            cursor = page["cursor"]

    def materializations(self, asset_key: list[str]) -> list[dict]:
        """The asset's materializations, newest first, as {partition, runId}."""
        result = self.graphql("""query($key: AssetKeyInput!) { assetOrError(assetKey: $key) { __typename
            ... on Asset { assetMaterializations { partition runId } } ... on Error { message } } }""",
                              {"key": {"path": asset_key}})
        return self._ok(result["assetOrError"], "Asset", f"asset {asset_key}")["assetMaterializations"]

    def sensor_ticks(self, sensor_name: str, limit: int = 100, location: str | None = None,
                     repository: str | None = None) -> list[dict]:
        """The sensor's ticks, newest first, as {status, error: message | None, skipReason, runIds, timestamp}."""
        selector = {"repositoryName": repository or self.repository,
                    "repositoryLocationName": location or self.location, "sensorName": sensor_name}
        result = self.graphql("""query($selector: SensorSelector!, $limit: Int) { sensorOrError(sensorSelector: $selector) {
            __typename ... on Sensor { sensorState { status ticks(limit: $limit) {
              status timestamp skipReason runIds error { message } } } } ... on Error { message } } }""",
                              {"selector": selector, "limit": limit})
        ticks = self._ok(result["sensorOrError"], "Sensor", f"sensor {sensor_name}")["sensorState"]["ticks"]
        return [{**t, "error": (t["error"] or {}).get("message")} for t in ticks]

    def sensors(self) -> list[dict]:
        """The location's sensors as {name, status (RUNNING/STOPPED), minIntervalSeconds}."""
        result = self.graphql("""query($repo: RepositorySelector!) { repositoryOrError(repositorySelector: $repo) {
            __typename ... on Repository { sensors { name minIntervalSeconds sensorState { status } } }
            ... on Error { message } } }""", {"repo": self.repository_selector})
        sensors = self._ok(result["repositoryOrError"], "Repository", "the repository")["sensors"]
        return [{"name": s["name"], "status": s["sensorState"]["status"], "minIntervalSeconds": s["minIntervalSeconds"]}
                for s in sensors]

    def failed_ticks(self) -> list[str]:
        """"<sensor>: <error message>" for every FAILURE tick of every sensor of the location."""
        result = self.graphql("""query($repo: RepositorySelector!) { repositoryOrError(repositorySelector: $repo) {
            __typename ... on Repository { sensors { name sensorState { ticks(statuses: [FAILURE], limit: 100) {
              error { message } } } } } ... on Error { message } } }""", {"repo": self.repository_selector})
        sensors = self._ok(result["repositoryOrError"], "Repository", "the repository")["sensors"]
        return [f"{s['name']}: {(t['error'] or {}).get('message', '(no error recorded)').strip()}"
                for s in sensors for t in s["sensorState"]["ticks"]]

    # -- logs and waiting ------------------------------------------------------------------------------------------

    def daemon_log_errors(self, ignore: Iterable[str] = ()) -> list[str]:
        """Error lines of the daemon's and webserver's logs (which also hold their code servers' and run workers'
        output): ` - ERROR - ` / ` - CRITICAL - ` records, uvicorn's `ERROR:` and Python tracebacks, each prefixed with
        its log's name; lines matching an `ignore` regex are left out."""
        patterns = [re.compile(p) for p in ignore]
        found = []
        for name, path in self.logs.items():
            if not path.exists():
                continue
            lines = _ANSI.sub("", path.read_text(errors="replace")).splitlines()
            for i, line in enumerate(lines):
                if (_ERROR_LINE.search(line) and not any(p.search(line) for p in patterns)
                        and not (line.startswith("Traceback") and _GRPC_POLLER_FRAME in "".join(lines[i + 1:i + 6]))):
                    found.append(f"{name}: {line}")
        return found

    def wait_for(self, predicate: Callable[[], T], timeout: float, what: str, interval: float = 2.0) -> T:
        """Polls `predicate` until it returns something truthy, and returns that. Fails with the daemon log's tail on
        timeout, or at once if the daemon or webserver exited. The webserver refusing connections counts as not yet."""
        deadline = time.monotonic() + timeout
        last_error = None
        while True:
            self._check_alive()
            try:
                value = predicate()
                if value:
                    return value
            except requests.ConnectionError as e:
                last_error = e
            if time.monotonic() > deadline:
                break
            time.sleep(interval)
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}"
                             + (f" (last: {last_error})" if last_error else "")
                             + "".join(f"\n--- {name} log tail ---\n{_tail(path)}" for name, path in self.logs.items()))
