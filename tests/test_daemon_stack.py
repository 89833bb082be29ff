"""The end-to-end harness itself (tests/daemon_stack.py): the real daemon and webserver on PostgreSQL and SeaweedFS,
running a tiny code location of its own: a sensor ticks, a backfill of a dynamic-partitioned asset and one of two
unpartitioned assets run and materialize, a run is re-executed, and no tick or log line reports an error."""

from __future__ import annotations

import textwrap
import time

import pytest

from tests.daemon_stack import DaemonStack, fresh_database, python_file_workspace, write_instance_yaml

pytestmark = pytest.mark.timeout(600)  # a daemon scenario: sensors, backfill loops of 30 s, runs

TINY_DEFS = '''
import os

import boto3
import dagster as dg

tiles = dg.DynamicPartitionsDefinition(name="tiles")


def s3():
    return boto3.client("s3", endpoint_url=os.environ["CNG_S3_ENDPOINT"], region_name=os.environ["AWS_REGION"])


@dg.asset
def a() -> int:
    return 20


@dg.asset
def b(a: int) -> None:
    s3().put_object(Bucket=os.environ["CNG_S3_BUCKET"], Key="b.txt", Body=str(a + 1).encode())


@dg.asset(partitions_def=tiles)
def tile(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    body = f"tile {context.partition_key}".encode()
    s3().put_object(Bucket=os.environ["CNG_S3_BUCKET"], Key=f"tiles/{context.partition_key}.txt", Body=body)
    return dg.MaterializeResult(metadata={"bytes": len(body)})


@dg.sensor(minimum_interval_seconds=5, default_status=dg.DefaultSensorStatus.RUNNING)
def idle(context: dg.SensorEvaluationContext):
    return dg.SkipReason("nothing to do")


defs = dg.Definitions(assets=[a, b, tile], sensors=[idle])
'''


def test_backfills_run_on_the_real_daemon(postgres_server, s3_server, tmp_path):
    home = tmp_path / "home"
    write_instance_yaml(home, postgres_server.port, db_name=fresh_database(postgres_server, "smoke"))
    code = tmp_path / "code"
    code.mkdir()
    (code / "tiny_defs.py").write_text(textwrap.dedent(TINY_DEFS))
    bucket = "daemon-stack-smoke"
    s3 = s3_server.client()
    s3.create_bucket(Bucket=bucket)
    env = {**s3_server.env(), "CNG_S3_BUCKET": bucket}

    with DaemonStack(home, env, python_file_workspace(code / "tiny_defs.py", "tiny"), location="tiny") as stack:
        print(f"\nstack up in {stack.startup_seconds:.1f} s")
        for key in ("p1", "p2", "p3"):
            stack.add_dynamic_partition("tiles", key)
        started = time.monotonic()
        tiles = stack.launch_partition_backfill([["tile"]], ["p1", "p2", "p3"])
        ab = stack.launch_partition_backfill([["a"], ["b"]], None)
        assert stack.wait_for_backfill(tiles, timeout=240) == "COMPLETED_SUCCESS", stack.backfill(tiles)
        assert stack.wait_for_backfill(ab, timeout=120) == "COMPLETED_SUCCESS", stack.backfill(ab)
        print(f"backfills done in {time.monotonic() - started:.1f} s")

        runs = stack.runs({"tags": [{"key": "dagster/backfill", "value": tiles}]})
        assert sorted(r["tags"]["dagster/partition"] for r in runs) == ["p1", "p2", "p3"]
        assert {r["status"] for r in runs} == {"SUCCESS"}
        assert sorted(m["partition"] for m in stack.materializations(["tile"])) == ["p1", "p2", "p3"]
        assert s3.get_object(Bucket=bucket, Key="tiles/p2.txt")["Body"].read() == b"tile p2"
        assert s3.get_object(Bucket=bucket, Key="b.txt")["Body"].read() == b"21"  # b read a's output

        started = time.monotonic()
        again = stack.reexecute_run(runs[0]["runId"], "ALL_STEPS")
        assert stack.wait_for_run(again, timeout=120) == "SUCCESS", stack.run_events(again)
        print(f"re-execution done in {time.monotonic() - started:.1f} s")
        assert len(stack.materializations(["tile"])) == 4

        ticks = stack.wait_for(lambda: [t for t in stack.sensor_ticks("idle") if t["status"] == "SKIPPED"],
                               timeout=60, what="a tick of the idle sensor")
        assert ticks[0]["skipReason"] == "nothing to do"
        assert stack.failed_ticks() == []
        assert stack.daemon_log_errors() == []
    print(f"stack down in {stack.stop_seconds:.1f} s")


def test_daemon_log_errors_finds_error_records_and_tracebacks(tmp_path):
    stack = DaemonStack(tmp_path)  # not started: only its log files are read
    stack.logs["daemon"].write_text(
        "2026-01-01 10:00:00 +0000 - dagster.daemon.SensorDaemon - INFO - Checking for new runs for sensor: x\n"
        "\x1b[31m2026-01-01 10:00:05 +0000 - dagster.daemon.SensorDaemon - ERROR - Sensor daemon caught an error\x1b[0m\n"
        "Traceback (most recent call last):\n"
        '  File "x.py", line 1, in <module>\n')
    stack.logs["webserver"].write_text("2026-01-01 10:00:00 +0000 - dagster-webserver - INFO - Serving\n")
    errors = stack.daemon_log_errors()
    assert errors == ["daemon: 2026-01-01 10:00:05 +0000 - dagster.daemon.SensorDaemon - ERROR - Sensor daemon caught an error",
                      "daemon: Traceback (most recent call last):"]
    assert stack.daemon_log_errors(ignore=["Sensor daemon", "Traceback"]) == []
    # grpcio's spurious asyncio poller traceback (grpc/grpc#25364) is not the daemon's error; any other still is
    stack.logs["daemon"].write_text(
        "Exception in callback None()\nhandle: <Handle cancelled>\nTraceback (most recent call last):\n"
        '  File "/usr/lib/python3.11/asyncio/events.py", line 80, in _run\n'
        '  File "src/python/grpcio/grpc/_cython/_cygrpc/aio/completion_queue.pyx.pxi", line 153, in '
        "grpc._cython.cygrpc.PollerCompletionQueue._handle_events\nOSError: [Errno 9] Bad file descriptor\n"
        "Traceback (most recent call last):\n  File \"x.py\", line 1, in <module>\n")
    assert stack.daemon_log_errors() == ["daemon: Traceback (most recent call last):"]
