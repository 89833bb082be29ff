"""The production instance storage: a real PostgreSQL server (Debian's packages, run as the `postgres` user),
configured by k8s/instance/dagster.yaml, running a partitioned materialization and a sensor tick."""

from __future__ import annotations

import shutil

import dagster as dg
import pyogrio

from cng_assets.catalog import Dataset
from cng_assets.definitions import definitions_with
from cng_assets.demo import build_demo_source
from cng_assets.runner import materialize_dataset
from tests.conftest import REPO
from tests.ticks import tick


def test_partitioned_materialization_and_sensor_tick_on_postgres(postgres_server, tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(REPO / "k8s" / "instance" / "dagster.yaml", home / "dagster.yaml")
    for name, value in {"DAGSTER_PG_HOST": "127.0.0.1", "DAGSTER_PG_PORT": str(postgres_server.port), "DAGSTER_PG_USER": "postgres",
                        "DAGSTER_PG_PASSWORD": "trust-auth", "DAGSTER_PG_DB": "postgres", "DAGSTER_HOME": str(home)}.items():
        monkeypatch.setenv(name, value)
    src = build_demo_source(tmp_path / "raw" / "demo.gpkg")
    small = tmp_path / "raw" / "small.gpkg"
    for layer in ("Countries", "Continent_Lookup"):
        pyogrio.write_dataframe(pyogrio.read_dataframe(src, layer=layer), small, layer=layer, append=small.exists())
    ds = Dataset(name="pg", title="pg", source=str(small), prefix="pg", datetime="2020-01-01", h3={"resolution": 3, "parents": [0]})
    with dg.DagsterInstance.get() as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        report = materialize_dataset(ds, instance, str(tmp_path / "data"))
        assert not report.failed, report.failed
        record = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=dg.AssetKey(["pg", "geoparquet"]),
                                                                       asset_partitions=["countries"]), limit=1).records[0]
        assert record.asset_materialization.metadata["dagster/row_count"].value > 100
        assert set(instance.get_dynamic_partitions("pg__polygons")) == {"countries"}
        # a sensor tick against the same instance: the source is unchanged since the run recorded it
        defs = definitions_with(ds, str(tmp_path / "data"))
        first = tick(defs, instance, "pg__raw_uploads", None)  # the run recorded these versions: nothing to rebuild
        assert not first.run_requests and first.cursor
        again = tick(defs, instance, "pg__raw_uploads", first.cursor)
        assert not again.run_requests and "no new or changed" in again.skip_message
