"""The embedded default as `make ui` runs it: `dg dev` in the repository (its [tool.dg] project) on a SQLite
instance and a local product folder. The cluster's datasets (PAD-US, CPAD: `s3://` sources a
laptop cannot reach) show with their sensors stopped; nothing that runs logs an error or fails a tick."""

from __future__ import annotations

import time

from tests.daemon_stack import DaemonStack


def test_make_ui_shows_no_failing_sensor_and_a_clean_daemon_log(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")  # what runner.project_instance writes
    env = {"CNG_STORAGE": "local", "CNG_DATA_DIR": str(tmp_path / "data"), "CNG_SENSOR_INTERVAL": "5",
           "CNG_RAW_INTERVAL": "5"}
    with DaemonStack(home, env=env, dg_dev=True) as stack:
        status = {s["name"]: s["status"] for s in stack.sensors()}
        for ds in ("padus_4_1", "cpad_2025b"):
            assert {status[f"{ds}__{s}"] for s in ("raw_uploads", "chunk_runs", "chunk_failures")} == {"STOPPED"}
        assert status["demo__chunk_runs"] == status["cng_automation"] == "RUNNING"
        time.sleep(30)  # several ticks of every running sensor and of the automation sensor
        ticks = stack.sensor_ticks("demo__chunk_runs")
        assert ticks and {t["status"] for t in ticks} == {"SKIPPED"}
        assert stack.failed_ticks() == []
        assert stack.daemon_log_errors() == []
