"""Faults: the S3 server down, or restarted in the middle of a run. The run retries (boto3, pyarrow and GDAL
all retry with backoff) or fails with a clear message; a re-run completes with no duplicate or missing rows."""

from __future__ import annotations

import threading
import time

import dagster as dg
import pyarrow.parquet as pq

from cng_assets.catalog import load_catalog
from cng_assets.definitions import definitions_with
from cng_assets.defs.resources import storage_from_env
from cng_assets.lineage import asset_status
from cng_assets.reprocess import run_now, select_targets
from cng_assets.runner import QUIET, materialize_dataset


def test_server_down_fails_clearly_and_a_restart_mid_run_then_a_rerun_is_complete(s3_env, s3_server, tmp_path, monkeypatch):
    demo = load_catalog()["demo"]
    ds = demo.model_copy(update={"h3": demo.h3.model_copy(update={"resolution": 4, "parents": [0]})})  # quicker hex
    monkeypatch.setenv("CNG_S3_MAX_ATTEMPTS", "2")
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        s3_server.stop()
        try:
            down = materialize_dataset(ds, instance)
        finally:
            s3_server.start()
        [(step, message)] = down.failed
        assert step.asset == "source" and s3_server.endpoint.split("//")[1] in message, message

        # restart the gateway while the run is writing hex chunks
        monkeypatch.setenv("CNG_S3_MAX_ATTEMPTS", "10")
        def restart_when_chunks_start():
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                if instance.fetch_materializations(dg.AssetKey(["demo", "hex_chunk"]), limit=1).records:
                    s3_server.stop()
                    time.sleep(2)
                    s3_server.start()
                    return
                time.sleep(0.2)
        restarter = threading.Thread(target=restart_when_chunks_start)
        restarter.start()
        during = materialize_dataset(ds, instance)
        restarter.join()
        for step, message in during.failed:  # a step may fail, but it says why
            assert message and "Traceback" not in message, (step, message)

        # what an operator does next: rebuild what is stale or missing
        defs = definitions_with(ds)
        targets = select_targets(defs, instance, ds.name, None, stale_only=True)
        results = run_now(defs, {ds.name: ds}, instance, targets, QUIET)
        assert all(ok for _, ok in results), [t for t, ok in results if not ok]
        assert {r.status for r in asset_status(defs, instance, ds.name)} == {"fresh"}
    storage = storage_from_env()
    for slug in ("countries", "continents"):
        with storage.local_path(None, f"demo/{slug}.parquet") as gp:
            fids = pq.read_table(gp, columns=["_cng_fid"]).column(0).to_pylist()
        with storage.local_path(None, f"demo/hex/{slug}") as hexdir:
            t = pq.read_table(hexdir, columns=["_cng_fid", "h4"], partitioning=None)
        pairs = list(zip(t.column("_cng_fid").to_pylist(), t.column("h4").to_pylist()))
        assert len(pairs) == len(set(pairs)), "duplicate rows"
        assert set(fids) == set(t.column("_cng_fid").to_pylist()), "features without cells"
