"""The raw-upload and hex-plan sensors, ticked with build_sensor_context against a real S3 server: a FileGDB
uploaded object by object, as the lab uploads PAD-US to `public-padus/raw/`."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pyogrio
import pytest

from cng_assets.catalog import Dataset
from cng_assets.definitions import build_definitions
from cng_assets.defs.partitions import chunk_keys, source_partitions
from cng_assets.defs.pods import CHUNK_RUN_TAGS, MEMORY_TAG, RETRY_FROM_FAILURE
from cng_assets.demo import LAYERS, build_demo_source
from tests.conftest import write_gdb
from tests.ticks import tick

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # FileGDB writer notes on Integer64 and names


@pytest.fixture(scope="module")
def frames(tmp_path_factory) -> dict:
    src = build_demo_source(tmp_path_factory.mktemp("src") / "demo.gpkg")
    return {name.replace(" ", "_"): pyogrio.read_dataframe(src, layer=name) for name in LAYERS}


class Uploads:
    def __init__(self, client, bucket: str):
        self.client, self.bucket = client, bucket

    def upload(self, gdb: Path, only: set[str] | None = None) -> None:
        for p in sorted(gdb.iterdir()):
            if only is None or p.name in only:
                self.client.upload_file(str(p), self.bucket, f"raw/demo.gdb/{p.name}")

    def delete(self, names: list[str]) -> None:
        for n in names:
            self.client.delete_object(Bucket=self.bucket, Key=f"raw/demo.gdb/{n}")


@pytest.fixture
def world(s3_env, s3_server, tmp_path):
    ds = Dataset(name="gdbdemo", title="demo as FileGDB", source=f"s3://{s3_env}/raw/demo.gdb", bucket=s3_env,
                 prefix="gdbdemo", datetime="2020-01-01", h3={"resolution": 4, "parents": [0]})
    defs = build_definitions([ds])
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        yield ds, defs, instance, Uploads(s3_server.client(), s3_env)


def targets(result) -> set[tuple[str, str | None]]:
    [request] = result.run_requests
    return {(k.asset_key.path[-1], str(k.partition_key) if k.partition_key else None)
            for k in request.asset_graph_subset.iterate_asset_partitions()}


def test_raw_upload_sensor_new_unchanged_reupload_new_layer_deletion(world, frames, tmp_path):
    ds, defs, instance, s3 = world
    name = "gdbdemo__raw_uploads"
    first = write_gdb(tmp_path / "v1" / "demo.gdb", frames)

    # nothing uploaded yet
    r = tick(defs, instance, name, None)
    assert not r.run_requests and "missing" in str(r.skip_message)

    # new upload: every layer is new
    s3.upload(first)
    r = tick(defs, instance, name, r.cursor)
    assert set(instance.get_dynamic_partitions(source_partitions(ds).name)) == {"countries", "continents", "country_labels",
                                                                                  "continent_lookup"}
    assert set(instance.get_dynamic_partitions("gdbdemo__polygons")) == {"countries", "continents"}
    t = targets(r)
    assert ("layers", None) in t and ("geoparquet", "countries") in t and ("table", "continent_lookup") in t
    assert ("hex_plan", "continents") in t and ("pmtiles", "country_labels") in t
    assert {e.partition for e in r.asset_events} == {"countries", "continents", "country_labels", "continent_lookup"}
    assert r.run_requests[0].tags.items() >= RETRY_FROM_FAILURE.items()  # a preempted run goes again from its failed steps
    cursor = r.cursor

    # unchanged: no re-trigger
    r = tick(defs, instance, name, cursor)
    assert not r.run_requests and "no new or changed" in str(r.skip_message)

    # re-upload of the whole folder under the same keys, with one layer changed: only that layer
    frames2 = {**frames, "Countries": frames["Countries"].iloc[:-1]}
    s3.upload(write_gdb(tmp_path / "v2" / "demo.gdb", frames2))
    r = tick(defs, instance, name, cursor)
    assert {e.partition for e in r.asset_events} == {"countries"}
    assert {p for a, p in targets(r)} == {None, "countries"}  # layers, stac/docs (None) and countries only
    assert ("hex_plan", "countries") in targets(r)
    cursor = r.cursor

    # a new layer: its partitions are added and only it is requested
    frames3 = {**frames2, "Lakes": frames["Continents"].head(3)}
    v3 = write_gdb(tmp_path / "v3" / "demo.gdb", frames3)
    s3.upload(v3)
    r = tick(defs, instance, name, cursor)
    assert "lakes" in instance.get_dynamic_partitions("gdbdemo__features")
    assert {e.partition for e in r.asset_events} == {"lakes"}
    assert {p for a, p in targets(r)} == {None, "lakes"}
    cursor = r.cursor

    # deleting a layer's files: reported, no run, nothing deleted downstream
    lakes_files = [p.name for p in v3.iterdir() if p.name.startswith("a0000000d.")]
    assert lakes_files
    s3.delete(lakes_files)
    s3.upload(write_gdb(tmp_path / "v4" / "demo.gdb", frames2), only={"a00000001.gdbtable", "a00000001.gdbtablx",
                                                                        "a00000004.gdbtable", "a00000004.gdbtablx"})
    r = tick(defs, instance, name, cursor)
    assert not r.run_requests
    assert "lakes" in instance.get_dynamic_partitions("gdbdemo__features")  # kept: nothing deleted automatically
    cursor = r.cursor

    # the whole source deleted
    s3.delete([k["Key"].rsplit("/", 1)[-1] for k in s3.client.list_objects_v2(Bucket=s3.bucket, Prefix="raw/demo.gdb/")["Contents"]])
    r = tick(defs, instance, name, cursor)
    assert not r.run_requests and "deleted" in str(r.skip_message)


def test_chunk_run_sensor_runs_the_plans_chunks_and_records_the_rest_empty(world):
    ds, defs, instance, _ = world
    name = "gdbdemo__chunk_runs"
    r = tick(defs, instance, name, None)
    assert not r.run_requests and json.loads(r.cursor) == {"hex_chunk": 0, "raster_hex_chunk": 0}
    plan, chunk = dg.AssetKey(["gdbdemo", "hex_plan"]), dg.AssetKey(["gdbdemo", "hex_chunk"])
    instance.add_dynamic_partitions("gdbdemo__polygons", ["countries"])
    instance.add_dynamic_partitions("gdbdemo__chunks", chunk_keys(ds))
    # the layer's chunks last succeeded with 16 GiB: the new ones start there
    instance.report_runless_asset_event(dg.AssetMaterialization(chunk, partition="002|countries", metadata={"memory_gib": 16}))
    instance.report_runless_asset_event(dg.AssetMaterialization(plan, partition="countries", metadata={"chunks": 2}))
    r = tick(defs, instance, name, r.cursor)
    assert sorted(str(q.partition_key) for q in r.run_requests) == ["000|countries", "001|countries"]
    assert {q.tags[MEMORY_TAG] for q in r.run_requests} == {"16"}
    assert all(q.tags.items() >= CHUNK_RUN_TAGS.items() for q in r.run_requests)  # retried by the failure sensor only
    assert all(q.run_config == {} for q in r.run_requests)  # no k8s executor here: nothing else to configure
    empty = sorted(str(e.partition) for e in r.asset_events)
    assert empty == [f"{c}|countries" for c in chunk_keys(ds)[2:]]
    # every chunk key of the layer is now either requested or materialized: none stays missing
    done = {str(k) for k in instance.get_materialized_partitions(chunk)}
    assert done | {str(q.partition_key) for q in r.run_requests} >= {f"{c}|countries" for c in chunk_keys(ds)}
    r = tick(defs, instance, name, r.cursor)
    assert not r.run_requests and "no new plans" in str(r.skip_message)


def test_chunk_runs_on_the_cluster_get_the_memory_through_the_k8s_executor(world, monkeypatch):
    ds, _, instance, _ = world
    monkeypatch.setenv("CNG_EXECUTOR", "k8s")
    defs = build_definitions([ds])  # the executor and run config come from the environment when defs are built
    r = tick(defs, instance, "gdbdemo__chunk_runs", None)
    instance.add_dynamic_partitions("gdbdemo__polygons", ["countries"])
    instance.add_dynamic_partitions("gdbdemo__chunks", chunk_keys(ds))
    instance.report_runless_asset_event(dg.AssetMaterialization(["gdbdemo", "hex_plan"], partition="countries",
                                                                metadata={"chunks": 1}))
    [q] = tick(defs, instance, "gdbdemo__chunk_runs", r.cursor).run_requests  # validated against the k8s executor
    step = q.run_config["execution"]["config"]["per_step_k8s_config"]["gdbdemo__hex_chunk"]
    assert step["container_config"]["resources"]["limits"]["memory"] == "8Gi"


def test_every_sensor_declares_its_target():
    from cng_assets.definitions import defs

    for sensor in defs.get_repository_def().sensor_defs:
        assert sensor.asset_selection is not None or sensor.targets, sensor.name


def test_a_changed_raster_layer_gets_raster_products_only():
    from cng_assets.defs.targets import layer_targets
    from cng_assets.transforms.layers import Inventory, Layer

    ds = Dataset(name="r", title="r", source="raw/r.tif", prefix="r", datetime="2020-01-01")
    inv = Inventory(layers=[Layer("Density", "density", "raster", None, 100, "EPSG:4326", [("b1", "float32")],
                                  raster={"path": "x", "width": 10, "height": 10, "bands": 1, "dtype": "float32"})],
                    domains=[], skipped=[])
    got = {(k.asset_key.path[-1], k.partition_key) for k in layer_targets(ds, inv, {"density"})}
    assert got == {("layers", None), ("cog", "density"), ("geozarr", "density")}  # STAC and docs follow by automation


def test_an_empty_inbox_folder_is_not_called_missing(tmp_path, monkeypatch):
    """The demo inbox before the first file: the folder exists, so the tick says it waits for files, and where."""
    monkeypatch.setenv("CNG_STORAGE", "local")
    ds = Dataset(name="box", title="box", source="raw/box/", prefix="box", datetime="2020-01-01")
    defs = build_definitions([ds], str(tmp_path / "data"))
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        r = tick(defs, instance, "box__raw_uploads", None)
        assert "is missing" in str(r.skip_message)
        (tmp_path / "data" / "raw" / "box").mkdir(parents=True)
        r = tick(defs, instance, "box__raw_uploads", r.cursor)
        assert str(r.skip_message) == f"raw/box/ has no files yet: copy a file GDAL reads into {tmp_path / 'data' / 'raw' / 'box'}"
