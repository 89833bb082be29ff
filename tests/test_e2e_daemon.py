"""The production path as the lab runs it, on real processes: `dagster-daemon` and `dagster-webserver` on one
PostgreSQL instance, raw sources and products in S3 (SeaweedFS), the default run launcher (each run its own
process, as each is its own pod on the cluster) and the multiprocess executor. The test acts only as users do:
it uploads objects to S3, calls the GraphQL API the UI uses, and runs `cng-assets` commands; it reads what the
UI would show (GraphQL, the instance) and the products with the readers people use.

The scenarios run in order on one stack (each builds on the last):
a. a new multi-layer FileGDB upload -> through the sensors and automation alone, every product of every layer;
   every chunk's first run is killed the way the OOM killer kills a pod (a test-only fault hook: SIGKILL below
   16 GiB), and the failure sensor retries it at twice the memory (d);
b. a re-upload that changes one layer -> exactly that layer's products again, and the dataset-wide ones;
c. a catalog change (`parents`) -> `cng-assets reprocess --stale` -> a backfill the daemon completes, then
   `cng-assets status` reports everything fresh;
e. throughout: no failed sensor tick and no error in the daemon's log beyond the kills the test asked for.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import dagster as dg
import duckdb
import geopandas as gpd
import pyarrow.parquet as pq
import pyogrio
import pystac
import pytest
import yaml
from pyarrow import fs

from cng_assets.demo import LAYERS, build_demo_source
from tests.conftest import write_gdb
from tests.daemon_stack import DaemonStack, fresh_database, write_instance_yaml

# FileGDB writer notes on Integer64 and names; a daemon scenario (sensors, backfill loops of 30 s, runs) per test
pytestmark = [pytest.mark.filterwarnings("ignore::RuntimeWarning"), pytest.mark.timeout(1200)]

DS, BUCKET = "e2e", "lab-e2e"
POLYGONS, POINTS, TABLES = ("countries", "continents"), ("country_labels",), ("continent_lookup",)
PER_LAYER = {"geoparquet": POLYGONS + POINTS, "pmtiles": POLYGONS + POINTS, "thumbnail": POLYGONS + POINTS,
             "hex_plan": POLYGONS, "hex": POLYGONS, "table": TABLES}
DATASET_WIDE = ("layers", "stac", "docs")
TIMES: dict[str, float] = {}


def catalog_entry(parents: list[int]) -> dict:
    return {"name": DS, "title": "end to end", "source": f"s3://{BUCKET}/raw/e2e.gdb", "bucket": BUCKET, "prefix": DS,
            "datetime": "2020-01-01",
            "h3": {"resolution": 3, "parents": parents, "target_cells_per_chunk": 3000, "max_chunks": 2}}


class Lab:
    def __init__(self, stack: DaemonStack, s3, home: Path, catalog: Path, env: dict, instance: dg.DagsterInstance):
        self.stack, self.s3, self.home, self.catalog, self.env = stack, s3, home, catalog, env
        self.instance = instance  # one for the module: opening an instance per poll cost a core while waiting

    def upload(self, gdb: Path) -> None:
        for p in sorted(gdb.iterdir()):
            self.s3.client().upload_file(str(p), BUCKET, f"raw/e2e.gdb/{p.name}")

    def counts(self) -> dict[str, Counter]:
        """Materializations per asset and partition, as the UI's asset pages list them (GraphQL)."""
        out = {}
        for asset in [*PER_LAYER, *DATASET_WIDE, "hex_chunk"]:
            out[asset] = Counter(m["partition"] for m in self.stack.materializations([DS, asset]))
        out["stac_catalog"] = Counter(m["partition"] for m in self.stack.materializations(["stac_catalog"]))
        return out

    def latest(self, asset: str, partition: str | None = None) -> float:
        """The storage id of the newest materialization (0 if none): to tell what came after what."""
        key = dg.AssetKey(["stac_catalog"] if asset == "stac_catalog" else [DS, asset])
        records = self.instance.fetch_materializations(dg.AssetRecordsFilter(
            asset_key=key, asset_partitions=[partition] if partition else None), limit=1).records
        return records[0].storage_id if records else 0

    def metadata(self, asset: str, partition: str) -> dict:
        return self.instance.fetch_materializations(dg.AssetRecordsFilter(
            asset_key=dg.AssetKey([DS, asset]), asset_partitions=[partition]), limit=1).records[0].asset_materialization.metadata

    def busy(self) -> bool:
        active = self.stack.runs({"statuses": ["QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING"]})
        backfills = self.stack.graphql("""{ partitionBackfillsOrError(status: REQUESTED) {
            ... on PartitionBackfills { results { id } } } }""")["partitionBackfillsOrError"]["results"]
        return bool(active or backfills)

    def settled(self, layers=POLYGONS, since: float = 0) -> bool:
        """Every product in, and the dataset-wide ones made after the last hex: nothing left to follow."""
        hexes = [self.latest("hex", slug) for slug in layers]
        if min(hexes) <= since or self.busy():
            return False
        last = max(hexes)  # STAC and README after the last hex, the root catalog after the last STAC
        return all(self.latest(a) > last for a in ("stac", "docs")) and self.latest("stac_catalog") > self.latest("stac")

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        env = {**os.environ, **self.env, "DAGSTER_HOME": str(self.home)}
        return subprocess.run([str(Path(sys.executable).parent / "cng-assets"), *args], env=env, capture_output=True,
                              text=True, timeout=300)

    def s3fs(self) -> fs.S3FileSystem:
        e = self.s3.env()
        return fs.S3FileSystem(endpoint_override=self.s3.endpoint.removeprefix("http://"), scheme="http",
                               access_key=e["AWS_ACCESS_KEY_ID"], secret_key=e["AWS_SECRET_ACCESS_KEY"], region="us-east-1")

    def duckdb(self) -> duckdb.DuckDBPyConnection:
        import duckdb_extension_httpfs

        con = duckdb.connect()
        con.execute(f"LOAD '{os.path.dirname(duckdb_extension_httpfs.__file__)}/extensions/v1.5.5/httpfs.duckdb_extension'")
        e = self.s3.env()
        con.execute(f"CREATE SECRET s (TYPE s3, KEY_ID '{e['AWS_ACCESS_KEY_ID']}', SECRET '{e['AWS_SECRET_ACCESS_KEY']}', "
                    f"ENDPOINT '{self.s3.endpoint.removeprefix('http://')}', URL_STYLE 'path', USE_SSL false, REGION 'us-east-1')")
        return con


@pytest.fixture(scope="module")
def frames(tmp_path_factory) -> dict:
    src = build_demo_source(tmp_path_factory.mktemp("src") / "demo.gpkg")
    return {name.replace(" ", "_"): pyogrio.read_dataframe(src, layer=name) for name in LAYERS}


@pytest.fixture(scope="module")
def lab(tmp_path_factory, s3_server, postgres_server):
    root = tmp_path_factory.mktemp("e2e")
    s3_server.client().create_bucket(Bucket=BUCKET)
    catalog = root / "catalog"
    catalog.mkdir()
    (catalog / f"{DS}.yaml").write_text(yaml.safe_dump(catalog_entry([0])))
    home = root / "home"
    write_instance_yaml(home, postgres_server.port, max_concurrent_runs=3, db_name=fresh_database(postgres_server, "e2e"))
    env = {**s3_server.env(), "CNG_S3_BUCKET": BUCKET, "CNG_CATALOG_DIR": str(catalog), "CNG_SENSOR_INTERVAL": "5",
           "CNG_RAW_INTERVAL": "5", "CNG_TEST_OOM_BELOW_GIB": "16"}
    started = time.monotonic()
    with DaemonStack(home, env=env) as stack, dg.DagsterInstance.from_config(str(home)) as instance:
        TIMES["stack up"] = time.monotonic() - started
        yield Lab(stack, s3_server, home, catalog, env, instance)
    print("\nend-to-end times (s):", json.dumps({k: round(v) for k, v in TIMES.items()}))


def test_a_new_upload_becomes_every_product_through_the_sensors_alone(lab, frames, tmp_path):
    assert {s["name"]: s["status"] for s in lab.stack.sensors()} == {
        f"{DS}__raw_uploads": "RUNNING", f"{DS}__chunk_runs": "RUNNING", f"{DS}__chunk_failures": "RUNNING",
        "cng_automation": "RUNNING"}
    started = time.monotonic()
    lab.upload(write_gdb(tmp_path / "v1" / "e2e.gdb", frames))
    lab.stack.wait_for(lab.settled, 900, "every product of the new upload")
    TIMES["a: new upload -> every product"] = time.monotonic() - started

    counts = lab.counts()
    for asset, layers in PER_LAYER.items():
        assert set(counts[asset]) >= set(layers), asset
    for asset in (*DATASET_WIDE, "stac_catalog"):
        assert counts[asset][None] >= 1, asset
    chunks = {p for p in counts["hex_chunk"]}
    assert chunks == {f"{c:03d}|{slug}" for c in range(2) for slug in POLYGONS}  # no key left missing

    # products, with the readers people use
    s3 = lab.s3fs()
    lookup = pq.read_table(f"{BUCKET}/{DS}/lookup/continent_lookup.parquet", filesystem=s3)
    assert lookup.num_rows == len(frames["Continent_Lookup"])
    for slug, frame in (("countries", "Countries"), ("continents", "Continents"), ("country_labels", "Country_labels")):
        gdf = gpd.read_parquet(f"{BUCKET}/{DS}/{slug}.parquet", filesystem=s3)
        meta = lab.metadata("geoparquet", slug)
        dropped = meta["dropped_null_or_empty"].value + meta["dropped_unrepairable"].value
        assert len(gdf) + dropped == len(frames[frame]) == meta["source_features"].value, slug
        assert gdf.crs.to_epsg() == 4326 and gdf.is_valid.all()
        with s3.open_input_stream(f"{BUCKET}/{DS}/{slug}.pmtiles") as f:
            assert f.read(7) == b"PMTiles"
    con = lab.duckdb()
    for slug in POLYGONS:
        rows, fids, pairs = con.sql(f"SELECT count(*), count(DISTINCT _cng_fid), count(DISTINCT (_cng_fid, h3)) FROM "
                                    f"read_parquet('s3://{BUCKET}/{DS}/hex/{slug}/*/*.parquet')").fetchone()
        features = pq.read_metadata(f"{BUCKET}/{DS}/{slug}.parquet", filesystem=s3).num_rows
        assert rows == pairs > 0 and fids == features, slug  # every feature, no duplicate or missing rows
    with s3.open_input_stream(f"{BUCKET}/{DS}/stac/collection.json") as f:
        collection = pystac.Collection.from_dict(json.loads(f.read()))
    assert {link.href.rsplit("/", 1)[-1] for link in collection.get_item_links()} >= {f"{s}.json" for s in PER_LAYER["geoparquet"]}
    with s3.open_input_stream(f"{BUCKET}/{DS}/README.md") as f:
        assert "countries" in f.read().decode()

    # d. every chunk's first run was killed below 16 GiB; the failure sensor retried each at 16 GiB
    failed = lab.stack.runs({"statuses": ["FAILURE"]})
    assert failed and all(r["tags"].get("cng/failure") == "out-of-memory" for r in failed)
    retried = {r["tags"]["cng/retry_of"] for r in lab.stack.runs({"statuses": ["SUCCESS"]}) if "cng/retry_of" in r["tags"]}
    assert {r["runId"] for r in failed} == retried
    assert all(r["tags"]["cng/memory_gib"] == "16" for r in lab.stack.runs({"statuses": ["SUCCESS"]})
               if "cng/retry_of" in r["tags"])
    no_errors(lab)


def test_b_a_reupload_of_one_layer_rebuilds_that_layer_and_the_dataset_wide_products(lab, frames, tmp_path):
    before, since = lab.counts(), lab.latest("hex", "countries")
    started = time.monotonic()
    lab.upload(write_gdb(tmp_path / "v2" / "e2e.gdb", {**frames, "Countries": frames["Countries"].iloc[:-1]}))
    lab.stack.wait_for(lambda: lab.settled(("countries",), since), 600, "the changed layer's products")
    TIMES["b: one layer re-uploaded"] = time.monotonic() - started
    after = lab.counts()
    for asset, layers in PER_LAYER.items():
        for slug in layers:
            grew = after[asset][slug] > before[asset][slug]
            assert grew == (slug == "countries"), (asset, slug, before[asset][slug], after[asset][slug])
    assert all(after[a][None] > before[a][None] for a in ("stac", "docs", "stac_catalog"))
    n = len(gpd.read_parquet(f"{BUCKET}/{DS}/countries.parquet", filesystem=lab.s3fs()))
    assert n == len(frames["Countries"]) - 1
    no_errors(lab)


def test_c_a_catalog_change_is_reprocessed_by_one_backfill_then_status_is_fresh(lab):
    (lab.catalog / f"{DS}.yaml").write_text(yaml.safe_dump(catalog_entry([1, 0])))  # a new parent column
    status = lab.cli("status", "--dataset", DS, "--json")
    assert status.returncode == 0, status.stderr
    stale = {r["asset"] for r in json.loads(status.stdout) if r["status"] == "stale"}
    assert {f"{DS}/hex_chunk", f"{DS}/hex"} <= stale and f"{DS}/hex_plan" not in stale  # parents: not the plan's
    since = min(lab.latest("hex", slug) for slug in POLYGONS)
    started = time.monotonic()
    submitted = lab.cli("reprocess", "--stale", "--dataset", DS)
    assert submitted.returncode == 0 and "backfill" in submitted.stdout, submitted.stdout + submitted.stderr
    # Settled means nothing left to follow: also no product stale. A docs or STAC run that ends just after a
    # hex it did not read is requested again by automation at its next tick; between the two nothing is busy.
    def not_fresh():
        return [r for r in json.loads(lab.cli("status", "--dataset", DS, "--json").stdout) if r["status"] != "fresh"]

    lab.stack.wait_for(lambda: lab.settled(POLYGONS, since) and not not_fresh(), 900,
                       "the reprocessing backfill and what follows it")
    TIMES["c: catalog change -> reprocess --stale -> fresh"] = time.monotonic() - started
    rows = json.loads(lab.cli("status", "--dataset", DS, "--json").stdout)
    assert [r for r in rows if r["status"] != "fresh"] == []
    con = lab.duckdb()
    cols = [c[0] for c in con.sql(f"DESCRIBE SELECT * FROM read_parquet('s3://{BUCKET}/{DS}/hex/countries/*/*.parquet')").fetchall()]
    assert {"h3", "h1", "h0"} <= set(cols)
    no_errors(lab)


def no_errors(lab: Lab) -> None:
    """e. No sensor tick failed, and the daemon's log (with its code server's and its runs' output) shows no error
    but those of the chunk runs this test killed (each classified as out of memory by the failure sensor)."""
    assert lab.stack.failed_ticks() == []
    killed = [r["runId"] for r in lab.stack.runs({"statuses": ["FAILURE"]}) if r["tags"].get("cng/failure") == "out-of-memory"]
    assert lab.stack.daemon_log_errors(ignore=killed) == []
