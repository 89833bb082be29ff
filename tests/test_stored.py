"""The storage, not the instance, says what exists: `cng-assets run` into a second folder, after products were
deleted or replaced behind its back, and after the source gained rows and a layer, rebuilds exactly what is
needed, with no traceback; `status` says why."""

import json
import os
import shutil

import dagster as dg
import geopandas as gpd
import pandas as pd
import pyogrio
import pytest
import shapely
from click.testing import CliRunner

from cng_assets.cli import adhoc_dataset, main
from cng_assets.definitions import definitions_with
from cng_assets.defs.stored import StorageCheck, stored
from cng_assets.lineage import asset_status
from cng_assets.storage import LocalStorage


def write_layer(path, layer, n, append=False, nulls=False):
    frame = gpd.GeoDataFrame({"name": [f"f{i}" for i in range(n)]},
                             geometry=[None if nulls else shapely.box(i, 0, i + 0.5, 0.5) for i in range(n)],
                             crs="EPSG:4326")
    pyogrio.write_dataframe(frame, path, layer=layer, append=append)


def test_check_follows_the_storage(tmp_path):
    storage = LocalStorage(root=str(tmp_path))
    with storage.publish(None, "d/a.parquet") as tmp:
        tmp.write_bytes(b"one")
    with storage.publish_dir(None, "d/hex/a") as out:
        (out / "h0=1").mkdir()
        (out / "h0=1" / "part.parquet").write_bytes(b"cells")
    file_pin, folder_pin = (stored(storage, None, k)["cng/stored"].data for k in ("d/a.parquet", "d/hex/a"))
    check = lambda pin: StorageCheck(storage)({"cng/stored": pin})  # noqa: E731 (a fresh listing each time)
    assert check(file_pin) is None and check(folder_pin) is None
    (tmp_path / "d" / "hex" / "a" / "h0=2").mkdir()
    (tmp_path / "d" / "hex" / "a" / "h0=2" / "part.parquet").write_bytes(b"more")
    assert check(folder_pin) == (False, f"storage: changed since it was made: {storage.uri(None, 'd/hex/a')}")
    os.utime(tmp_path / "d" / "a.parquet", ns=(0, 0))  # same size, another time: rewritten
    assert check(file_pin)[0] is False
    (tmp_path / "d" / "a.parquet").unlink()
    missing, why = check(file_pin)
    assert missing and why.startswith("storage: not there")
    assert check(stored(storage, None, "d/none.pmtiles")["cng/stored"].data) is None  # nothing made, nothing there


@pytest.mark.timeout(300)
def test_run_rebuilds_what_the_storage_lacks(tmp_path):
    source = tmp_path / "src.gpkg"
    write_layer(source, "a", 3)
    env = {"DAGSTER_HOME": str(tmp_path / "home"), "CNG_STORAGE": "local"}

    def run(out, exit_code=0):
        result = CliRunner(env=env).invoke(main, ["run", "--source", str(source), "--dataset", "fr", "--out", str(out),
                                                  "--resolution", "5", "--parents", "4,0", "--datetime", "2026-01-01"])
        assert result.exit_code == exit_code and "Traceback" not in result.output, result.output
        return result.output

    def status(out):  # what `cng-assets status` says of a catalog dataset (this one is ad hoc)
        ds = adhoc_dataset(str(source), "fr", resolution=5, parents=[4, 0], when="2026-01-01")
        os.environ["DAGSTER_HOME"] = env["DAGSTER_HOME"]
        rows = asset_status(definitions_with(ds, str(out)), dg.DagsterInstance.get(), "fr")
        return {(r.asset.split("/")[-1], r.partition): r for r in rows}

    first, second = tmp_path / "one", tmp_path / "two"
    run(first)
    assert "10 already fresh" in run(first)
    out = run(second)  # another folder: nothing of it exists there yet (was: "has no layer inventory yet")
    assert "10 steps succeeded" in out and (second / "fr" / "a.parquet").exists() and (second / "fr" / "hex" / "a").is_dir()

    shutil.rmtree(second / "fr" / "hex" / "a")
    (second / "fr" / "a.pmtiles").write_bytes(b"not an archive")  # replaced behind the project's back
    rows = status(second)
    assert rows[("hex", "a")].status == "missing" and rows[("hex", "a")].causes[0].startswith("storage: not there")
    assert rows[("pmtiles", "a")].status == "stale" and "changed since it was made" in rows[("pmtiles", "a")].causes[0]
    # hex (its chunk and itself), pmtiles and what describes them; not the GeoParquet, thumbnail, plan or inventory
    assert "6 steps succeeded; 4 already fresh" in run(second)
    assert pd.read_parquet(second / "fr" / "hex" / "a")["h5"].nunique() > 0
    assert (second / "fr" / "a.pmtiles").read_bytes()[:7] == b"PMTiles"
    assert [(k, r.causes) for k, r in status(second).items() if r.status != "fresh"] == []

    write_layer(source, "a", 5)  # the source edited in place: rows added, then a new layer
    write_layer(source, "b", 2, append=True)
    rows = status(second)
    assert rows[("layers", None)].status == "stale" and "changed since it was read" in rows[("layers", None)].causes[0]
    run(second)
    inventory = json.loads((second / "fr" / "inventory.json").read_text())
    assert {x["name"]: x["features"] for x in inventory["layers"]} == {"a": 5, "b": 2}
    assert [len(gpd.read_parquet(second / "fr" / f"{x}.parquet")) for x in "ab"] == [5, 2]
    readme = (second / "fr" / "README.md").read_text()
    assert "b.parquet" in readme and "b.pmtiles" in readme

    # a failed rebuild keeps the previous product, and the README and STAC that describe it stay as they were
    described = {p: p.read_bytes() for p in [second / "fr" / "README.md", *(second / "fr" / "stac").rglob("*.json")]}
    write_layer(source, "a", 5, nulls=True)
    write_layer(source, "b", 2, append=True)
    out = run(second, exit_code=1)
    assert "geoparquet[a]: dataset 'fr', layer 'a': all 5 features have null" in out, out
    assert "note: docs: not regenerated, since the rebuild of geoparquet[a] failed" in out
    assert len(gpd.read_parquet(second / "fr" / "a.parquet")) == 5
    assert {p: p.read_bytes() for p in described} == described
