"""The code location loads, every catalog dataset has its graph, and the demo materializes end to end."""

import subprocess
import sys

import dagster as dg
import geopandas as gpd
import pytest

from cng_assets.catalog import load_catalog
from cng_assets.definitions import defs
from cng_assets.runner import materialize_dataset
from tests.conftest import REPO


def test_every_definition_loads():
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    for name in load_catalog():
        for asset in ("source", "layers", "table", "geoparquet"):
            assert dg.AssetKey([name, asset]) in graph.get_all_asset_keys()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        if node.is_materializable:
            assert node.code_version, f"{key} has no code_version"
    geoparquet = graph.get(dg.AssetKey(["padus_4_1", "geoparquet"]))
    assert geoparquet.partitions_def.name == "padus_4_1__features"
    assert {c.name for c in geoparquet.check_keys} == {"counts_reconcile"}


def test_dagster_cli_validates_the_workspace():
    proc = subprocess.run([sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.fixture
def instance(tmp_path):
    with dg.instance_for_test(temp_dir=str(tmp_path)) as inst:
        yield inst


def test_demo_materializes_every_layer_with_checks(instance, tmp_path):
    ds = load_catalog()["demo"]
    data = tmp_path / "data"
    report = materialize_dataset(ds, instance, str(data))
    assert report.failed == []
    assert {str(s) for s in report.succeeded} == {
        "source", "layers", "table[continent_lookup]", "geoparquet[countries]", "geoparquet[continents]",
        "geoparquet[country_labels]"}

    parts = instance.get_dynamic_partitions("demo__features")
    assert sorted(parts) == ["continents", "countries", "country_labels"]
    assert instance.get_dynamic_partitions("demo__tables") == ["continent_lookup"]
    for slug in parts:
        event = instance.get_latest_materialization_event(dg.AssetKey(["demo", "geoparquet"]))
        assert event is not None
        df = gpd.read_parquet(data / "demo" / f"{slug}.parquet")
        assert df.crs.to_epsg() == 4326 and df.is_valid.all()
    countries = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(["demo", "geoparquet"]), asset_partitions=["countries"]),
        limit=1).records[0].asset_materialization
    assert countries.metadata["dagster/row_count"].value == 177
    assert countries.metadata["source_features"].value == 177
    checks = instance.event_log_storage.get_latest_asset_check_execution_by_key(
        [dg.AssetCheckKey(dg.AssetKey(["demo", "geoparquet"]), "counts_reconcile")])
    assert all(r.status.value == "SUCCEEDED" for r in checks.values())

    # re-running replaces products, it never appends
    again = materialize_dataset(ds, instance, str(data))
    assert again.failed == [] and len(gpd.read_parquet(data / "demo" / "countries.parquet")) == 177
