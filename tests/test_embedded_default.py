"""The embedded default as a laptop user meets it: `cng-assets demo` (what `make demo` runs) twice, then `dg dev`
(what `make ui` runs: its [tool.dg] project) on the same SQLite instance and product folder, then a file copied
into the demo inbox. The demo is one backfill in the UI; the cluster's datasets (PAD-US, CPAD: `s3://` sources a
laptop cannot reach) are not loaded; the inbox file becomes products through the sensor alone;
nothing that runs logs an error or fails a tick."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import duckdb
import geopandas as gpd
import pystac
import pytest

from tests.conftest import shared
from tests.daemon_stack import BIN, REPO, DaemonStack

pytestmark = pytest.mark.timeout(900)  # a daemon scenario: sensors, backfill loops of 30 s, runs


def _demo(env: dict, out: Path) -> str:
    done = subprocess.run([str(BIN / "cng-assets"), "demo", "--out", str(out)], cwd=REPO, env={**os.environ, **env},
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Traceback" not in done.stdout + done.stderr
    return done.stdout


def test_demo_twice_then_ui_then_a_file_in_the_inbox_becomes_products(tmp_path):
    wilderness = shared("coutwildrnp")  # a shapefile with sidecars
    home, data = tmp_path / "home", tmp_path / "data"
    env = {"DAGSTER_HOME": str(home), "CNG_STORAGE": "local", "CNG_DATA_DIR": str(data), "CNG_SENSOR_INTERVAL": "5"}
    first = _demo(env, data)
    backfill = re.search(r"backfill (\w+)", first).group(1)
    ran = int(re.search(r"(\d+) steps succeeded", first).group(1))
    second = _demo(env, data)
    assert re.search(r"\b0 steps succeeded; \d+ already fresh", second), second[-1500:]
    inbox = data / "raw" / "inbox"
    assert inbox.is_dir() and str(inbox) in first

    with DaemonStack(home, env=env, dg_dev=True) as stack:
        status = {s["name"]: s["status"] for s in stack.sensors()}
        assert not [s for s in status if s.startswith(("padus_4_1", "cpad_2025b"))]  # the cluster's: not loaded here
        assert status["demo__chunk_runs"] == status["inbox__raw_uploads"] == status["cng_automation"] == "RUNNING"

        # The demo is one entry on the Runs page: its backfill, holding every run it made.
        feed = stack.runs_feed()
        assert [(e["kind"], e["id"], e["status"]) for e in feed] == [("backfill", backfill, "COMPLETED_SUCCESS")]
        runs = stack.runs({"tags": [{"key": "dagster/backfill", "value": backfill}]})
        assert len(runs) == ran and {r["status"] for r in runs} == {"SUCCESS"}
        # its page says what it holds (Dagster's "Partition selection" there shows one asset's partitions only)
        assert feed[0]["description"].startswith(f"{ran} steps: ") and "countries" in feed[0]["description"], feed[0]

        time.sleep(20)  # several ticks of every running sensor on an empty inbox: all skip
        ticks = [t for t in stack.sensor_ticks("inbox__raw_uploads") if t["status"] != "STARTED"]  # one in flight
        assert len(ticks) >= 2 and {t["status"] for t in ticks} == {"SKIPPED"}
        assert all(t["skipReason"].startswith("raw/inbox/ has no files yet") for t in ticks), ticks[0]

        for f in sorted(wilderness.iterdir()):  # as `cp coutwildrnp.* inbox/` does: one file after another
            shutil.copy(f, inbox / f.name)
        readme, collection = data / "inbox" / "README.md", data / "inbox" / "stac" / "collection.json"
        stack.wait_for(lambda: readme.exists() and "coutwildrnp" in readme.read_text() and collection.exists()
                       and stack.materializations(["inbox", "hex"]), 600, "the inbox file's products", interval=5)

        source = gpd.read_file(wilderness / "coutwildrnp.shp")
        product = gpd.read_parquet(data / "inbox" / "coutwildrnp.parquet")
        assert len(product) == len(source) and product.crs.to_epsg() == 4326
        hexed = duckdb.sql(f"SELECT count(DISTINCT _cng_fid) FROM read_parquet('{data}/inbox/hex/coutwildrnp/*/*.parquet', "
                           "hive_types = {'h0': 'UBIGINT'})").fetchone()[0]
        assert hexed == len(source)
        assert (data / "inbox" / "coutwildrnp.pmtiles").stat().st_size > 0
        items = {i.id for i in pystac.Collection.from_file(str(data / "inbox" / "stac" / "collection.json")).get_items()}
        assert items == {"coutwildrnp"}
        assert stack.failed_ticks() == []
        assert stack.daemon_log_errors() == []
