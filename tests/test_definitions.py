"""The code location loads, every catalog dataset has its graph, and the demo materializes end to end."""

import json
import os
import subprocess
import sys

import dagster as dg
import duckdb
import geopandas as gpd
import pytest
import yaml

from cng_assets.catalog import load_catalog, load_dataset_file
from cng_assets.definitions import build_definitions, defs
from cng_assets.defs.environment import loaded_datasets
from cng_assets.defs.hex import HEX_CHECKS
from cng_assets.defs.partitions import planned_chunks
from cng_assets.defs.publish import PMTILES_CHECKS
from cng_assets.errors import CngInputError
from cng_assets.runner import materialize_dataset
from tests.conftest import REPO


def test_every_definition_loads():
    every = build_definitions(list(load_catalog().values()))  # CNG_DATASETS=all: the cluster's datasets too
    dg.Definitions.validate_loadable(every)
    graph = every.resolve_asset_graph()
    for name in load_catalog():
        for asset in ("source", "layers", "table", "geoparquet", "hex_plan", "hex_chunk", "hex", "pmtiles", "thumbnail",
                      "stac", "docs"):
            assert dg.AssetKey([name, asset]) in graph.get_all_asset_keys()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        if node.is_materializable:
            assert node.code_version, f"{key} has no code_version"
    geoparquet = graph.get(dg.AssetKey(["padus_4_1", "geoparquet"]))
    assert geoparquet.partitions_def.name == "padus_4_1__features"
    assert {c.name for c in geoparquet.check_keys} == {"counts_reconcile", "matches_source", "text_matches_source"}


def test_the_code_location_loads_the_datasets_this_environment_reaches(monkeypatch):
    """A laptop (local storage) cannot read the cluster's `s3://` sources: it loads the demo and the inbox only,
    so "Materialize all" in the UI materializes what can be made; CNG_DATASETS loads others (sensors stopped)."""
    catalog = load_catalog()
    monkeypatch.setenv("CNG_STORAGE", "local")
    assert [ds.name for ds in loaded_datasets(catalog)] == ["demo", "inbox"]
    monkeypatch.setenv("CNG_DATASETS", "all")
    assert [ds.name for ds in loaded_datasets(catalog)] == ["demo", "inbox", "cpad_2025b", "padus_4_1"]
    sensors = {s.name: s.default_status for s in build_definitions(loaded_datasets(catalog)).sensors}
    assert sensors["padus_4_1__raw_uploads"] == dg.DefaultSensorStatus.STOPPED
    assert sensors["demo__chunk_runs"] == dg.DefaultSensorStatus.RUNNING
    monkeypatch.setenv("CNG_DATASETS", "demo,nope")
    with pytest.raises(CngInputError, match=r"CNG_DATASETS names \['nope'\]"):
        loaded_datasets(catalog)
    monkeypatch.setenv("CNG_DATASETS", "")
    monkeypatch.setenv("CNG_STORAGE", "s3")  # the cluster: every dataset
    assert [ds.name for ds in loaded_datasets(catalog)] == ["cpad_2025b", "demo", "inbox", "padus_4_1"]


def test_catalog_owners_and_tags_are_on_every_asset_of_the_dataset(tmp_path):
    graph, catalog = defs.resolve_asset_graph(), load_catalog()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        if key.path[0] in catalog and node.is_materializable:
            ds = catalog[key.path[0]]
            assert ds.owners and node.owners == ds.owners and ds.tags.items() <= node.tags.items(), key
            assert node.group_name == ds.name
    assert catalog["demo"].tags == {"domain": "demo"}
    assert graph.get(dg.AssetKey(["stac_catalog"])).group_name == "catalog"
    entry = tmp_path / "demo.yaml"
    entry.write_text(yaml.safe_dump({**catalog["demo"].model_dump(mode="json", exclude_defaults=True), "owners": ["Jane"]}))
    with pytest.raises(CngInputError, match=r"owners \['Jane'\] must be emails or team:<name>"):
        load_dataset_file(entry)


def test_dagster_cli_validates_the_workspace(tmp_path):
    # A fresh clone has no .dagster yet: give the CLI its own empty instance directory.
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.fixture
def instance(tmp_path):
    with dg.instance_for_test(temp_dir=str(tmp_path)) as inst:
        yield inst


def latest(instance, asset: str, partition: str):
    return instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(["demo", asset]), asset_partitions=[partition]),
        limit=1).records[0].asset_materialization


def check_statuses(instance, asset: str, names) -> set[str]:
    keys = [dg.AssetCheckKey(dg.AssetKey(["demo", asset]), n) for n in names]
    return {r.status.value for r in instance.event_log_storage.get_latest_asset_check_execution_by_key(keys).values()}


def test_demo_materializes_every_layer_with_checks(instance, tmp_path):
    ds = load_catalog()["demo"]
    data = tmp_path / "data"
    report = materialize_dataset(ds, instance, str(data))
    assert report.failed == [] and report.skipped == []

    assert sorted(instance.get_dynamic_partitions("demo__features")) == ["continents", "countries", "country_labels"]
    assert sorted(instance.get_dynamic_partitions("demo__polygons")) == ["continents", "countries"]
    assert instance.get_dynamic_partitions("demo__tables") == ["continent_lookup"]
    chunks = instance.get_dynamic_partitions("demo__chunks")
    assert chunks == [f"{k:03d}" for k in range(ds.h3.max_chunks)]  # registered whole with the layers
    ran = {str(s) for s in report.succeeded}
    for asset, layer in (("hex_chunk", "continents"), ("hex_chunk", "countries"), ("raster_hex_chunk", "population_density")):
        n = planned_chunks(instance, ds, asset, layer)
        ran_here = {c for c in chunks if f"{asset}[{c}|{layer}]" in ran}
        assert ran_here == set(chunks[:n]), (asset, layer)  # a run per planned chunk, none for the empty ones
        done = {str(k) for k in instance.get_materialized_partitions(dg.AssetKey(["demo", asset]))}
        assert {f"{c}|{layer}" for c in chunks} <= done  # the empty ones recorded: no key stays missing
    assert planned_chunks(instance, ds, "hex_chunk", "countries") > 1  # the demo's small chunk target makes several
    assert planned_chunks(instance, ds, "raster_hex_chunk", "population_density") == 1  # not the vector layers' count
    assert {"hex_plan[countries]", "hex[countries]", "hex[continents]", "table[continent_lookup]"} <= ran

    for slug in ("continents", "countries", "country_labels"):
        df = gpd.read_parquet(data / "demo" / f"{slug}.parquet")
        assert df.crs.to_epsg() == 4326 and df.is_valid.all()
    countries = latest(instance, "geoparquet", "countries")
    assert countries.metadata["dagster/row_count"].value == countries.metadata["source_features"].value == 177
    assert check_statuses(instance, "geoparquet", ["counts_reconcile", "matches_source", "text_matches_source"]) == {"SUCCEEDED"}

    hexed = latest(instance, "hex", "countries")
    assert hexed.metadata["dagster/row_count"].value > 3_000_000 and hexed.metadata["columns"].value == ["h6", "h5", "h4", "h3", "h0"]
    assert check_statuses(instance, "hex", HEX_CHECKS) == {"SUCCEEDED"}
    assert check_statuses(instance, "pmtiles", PMTILES_CHECKS) == {"SUCCEEDED"}
    h0_dirs = list((data / "demo" / "hex" / "countries").glob("h0=*"))
    assert len(h0_dirs) == hexed.metadata["h0_partitions"].value
    assert not (data / "demo" / "hex" / "_chunks" / "countries").exists() or \
        not any((data / "demo" / "hex" / "_chunks" / "countries").iterdir())  # intermediates removed
    rows = duckdb.sql(f"SELECT count(*), count(DISTINCT _cng_fid), min(name) FROM "
                      f"read_parquet('{data}/demo/hex/countries/*/*.parquet')").fetchone()
    assert rows[0] == hexed.metadata["dagster/row_count"].value and rows[1] == 177 and rows[2] is not None

    # publishing: tiles and maps per spatial layer, STAC and a README per dataset, the root catalog
    for slug in ("continents", "countries", "country_labels"):
        assert (data / "demo" / f"{slug}.pmtiles").stat().st_size > 0 and (data / "demo" / f"{slug}.png").exists()
    collection = json.loads((data / "demo" / "stac" / "collection.json").read_text())
    assert {link["href"] for link in collection["links"] if link["rel"] == "item"} == {
        f"./{s}/{s}.json" for s in ("continents", "countries", "country_labels", "population_density")}
    # the raster layer: a COG, GeoZarr, and hex (at the pixel size's h3) that joins the vector hex on the same uint64 ids
    assert (data / "demo" / "population_density.tif").exists() and (data / "demo" / "population_density.zarr").is_dir()
    joined = duckdb.sql(f"SELECT count(*) FROM read_parquet('{data}/demo/hex/population_density/*/*.parquet') r "
                        f"JOIN read_parquet('{data}/demo/hex/countries/*/*.parquet') v USING (h3)").fetchone()[0]
    assert joined > 1000
    # every example query of the README the pipeline wrote runs from the dataset folder and returns rows
    import re
    readme = (data / "demo" / "README.md").read_text()
    assert "Raster layers:" in readme and "raster hex joined to vector hex" in readme
    cwd = os.getcwd()
    try:
        os.chdir(data / "demo")
        for sql in re.findall(r"```sql\n(.*?)\n```", readme, re.S):
            assert duckdb.sql(sql).fetchall(), sql
    finally:
        os.chdir(cwd)
    assert "## Example queries (DuckDB)" in (data / "demo" / "README.md").read_text()
    assert json.loads((data / "catalog.json").read_text())["links"]
    thumb = latest(instance, "thumbnail", "countries")
    assert thumb.metadata["map"].value.startswith("![countries](data:image/png;base64,")

    # a second run has nothing to do: everything is fresh
    again = materialize_dataset(ds, instance, str(data))
    assert again.failed == again.succeeded == [] and len(again.fresh) == len(report.succeeded)
    # re-running everything replaces products, it never appends
    again = materialize_dataset(ds, instance, str(data), rebuild=True)
    assert again.failed == [] and len(gpd.read_parquet(data / "demo" / "countries.parquet")) == 177
    assert duckdb.sql(f"SELECT count(*) FROM read_parquet('{data}/demo/hex/countries/*/*.parquet')").fetchone()[0] == rows[0]
