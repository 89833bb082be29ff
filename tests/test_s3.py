"""S3 storage against a real S3 server (SeaweedFS on loopback): the storage contract, multipart uploads, atomic
partition sets, and the whole demo pipeline with its source and products in S3, checked by independent clients."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import dagster as dg
import duckdb
import pyarrow.parquet as pq
import pytest
from pyarrow import fs

from cng_assets.catalog import load_catalog
from cng_assets.defs.resources import storage_from_env
from cng_assets.runner import materialize_dataset
from cng_assets.storage import S3Storage


@pytest.fixture
def storage(s3_env) -> S3Storage:
    s = storage_from_env()
    assert isinstance(s, S3Storage) and s.default_bucket == s3_env
    return s


def test_publish_file_is_multipart_when_large_and_readable_back(storage, s3_server, s3_env):
    small = storage.model_copy(update={"multipart_threshold_mb": 5})
    with small.publish(None, "p/big.bin") as tmp:
        tmp.write_bytes(os.urandom(12 * 1024 * 1024))
        data = tmp.read_bytes()
    head = s3_server.client().head_object(Bucket=s3_env, Key="p/big.bin")
    assert head["ContentLength"] == len(data) and head["ETag"].strip('"').endswith("-3")  # three 5 MiB parts
    with small.local_path(None, "p/big.bin") as path:
        assert path.read_bytes() == data and path.name == "big.bin"
    assert small.size(None, "p/big.bin") == len(data) and small.exists(None, "p/big.bin")
    assert small.uri(None, "p/big.bin") == f"s3://{s3_env}/p/big.bin"


def test_failed_publish_leaves_the_old_object(storage, s3_server, s3_env):
    with storage.publish(None, "p/a.txt") as tmp:
        tmp.write_text("old")
    with pytest.raises(RuntimeError, match="boom"):
        with storage.publish(None, "p/a.txt") as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert s3_server.client().get_object(Bucket=s3_env, Key="p/a.txt")["Body"].read() == b"old"


def test_published_objects_carry_a_content_type(storage, s3_server, s3_env):
    """A browser shows map.html from a public bucket only if S3 serves it as HTML; also through publish_dir's copy."""
    with storage.publish(None, "p/map.html") as tmp:
        tmp.write_text("<!DOCTYPE html>")
    with storage.publish_dir(None, "p/stac") as d:
        (d / "collection.json").write_text("{}")
    head = s3_server.client().head_object
    assert head(Bucket=s3_env, Key="p/map.html")["ContentType"] == "text/html"
    assert head(Bucket=s3_env, Key="p/stac/collection.json")["ContentType"] == "application/json"


def test_publish_dir_replaces_the_set_and_a_failure_keeps_the_old_one(storage, s3_server, s3_env):
    with storage.publish_dir(None, "p/hex") as d:
        for h0 in ("1", "2"):
            (d / f"h0={h0}").mkdir()
            (d / f"h0={h0}" / "part.parquet").write_text(f"old {h0}")
    with pytest.raises(RuntimeError):
        with storage.publish_dir(None, "p/hex") as d:
            (d / "h0=3").mkdir()
            (d / "h0=3" / "part.parquet").write_text("new 3")
            raise RuntimeError("consolidation failed")
    keys = sorted(o.key for o in storage.list_objects(None, "p/hex/"))
    assert keys == ["p/hex/h0=1/part.parquet", "p/hex/h0=2/part.parquet"]
    with storage.publish_dir(None, "p/hex") as d:
        (d / "h0=2").mkdir()
        (d / "h0=2" / "part.parquet").write_text("new 2")
    keys = sorted(o.key for o in storage.list_objects(None, ""))  # nothing staged is left either
    assert [k for k in keys if k.startswith("p/hex")] == ["p/hex/h0=2/part.parquet"]
    with storage.local_path(None, "p/hex") as path:
        assert (path / "h0=2" / "part.parquet").read_text() == "new 2"
    storage.delete(None, "p/hex")
    assert not storage.exists(None, "p/hex")


def test_listing_is_paginated(storage, s3_server, s3_env):
    client = s3_server.client()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda i: client.put_object(Bucket=s3_env, Key=f"many/{i:05d}", Body=b"x"), range(1100)))
    assert len(list(storage.list_objects(None, "many/"))) == 1100  # one ListObjectsV2 page holds 1000


def test_source_files_are_the_objects_etags_of_a_file_or_a_folder(storage, s3_server, s3_env):
    client = s3_server.client()
    client.put_object(Bucket=s3_env, Key="raw/one.gpkg", Body=b"v1")
    one = storage.source_files("raw/one.gpkg")
    assert one == {"": client.head_object(Bucket=s3_env, Key="raw/one.gpkg")["ETag"].strip('"')}
    assert storage.source_files(f"s3://{s3_env}/raw/one.gpkg") == one
    for name in ("a00000001.gdbtable", "a00000009.gdbtable"):
        client.put_object(Bucket=s3_env, Key=f"raw/x.gdb/{name}", Body=name.encode())
    client.put_object(Bucket=s3_env, Key="raw/x.gdb.zip", Body=b"another source beside it")
    g1 = storage.source_files("raw/x.gdb")
    assert sorted(g1) == ["a00000001.gdbtable", "a00000009.gdbtable"]  # not the .zip that shares the prefix
    client.put_object(Bucket=s3_env, Key="raw/x.gdb/a00000009.gdbtable", Body=b"re-uploaded")
    g2 = storage.source_files("raw/x.gdb")
    assert g2["a00000001.gdbtable"] == g1["a00000001.gdbtable"] and g2["a00000009.gdbtable"] != g1["a00000009.gdbtable"]
    assert storage.source_files("raw/missing.gpkg") == {}


def _duckdb(s3_server) -> duckdb.DuckDBPyConnection:
    import duckdb_extension_httpfs

    con = duckdb.connect()
    con.execute(f"LOAD '{os.path.dirname(duckdb_extension_httpfs.__file__)}/extensions/v1.5.5/httpfs.duckdb_extension'")
    host = s3_server.endpoint.removeprefix("http://")
    con.execute(f"CREATE SECRET s (TYPE s3, KEY_ID '{s3_server.env()['AWS_ACCESS_KEY_ID']}', "
                f"SECRET '{s3_server.env()['AWS_SECRET_ACCESS_KEY']}', ENDPOINT '{host}', URL_STYLE 'path', USE_SSL false, "
                "REGION 'us-east-1')")
    return con


def test_demo_pipeline_with_source_and_products_in_s3(s3_env, s3_server, tmp_path):
    ds = load_catalog()["demo"]
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        report = materialize_dataset(ds, instance)
        assert not report.failed, report.failed
        rows = {}
        for key in ("geoparquet", "hex", "table"):
            for record in instance.fetch_materializations(dg.AssetKey(["demo", key]), limit=100).records:
                m = record.asset_materialization
                rows[(key, m.partition)] = m.metadata["dagster/row_count"].value
                assert m.metadata["uri"].value.startswith(f"s3://{s3_env}/demo/")
    keys = {o["Key"] for page in s3_server.client().get_paginator("list_objects_v2").paginate(Bucket=s3_env)
            for o in page.get("Contents", [])}
    assert "raw/demo/cng_demo.gpkg" in keys  # the built source went to S3 too
    for product in ("demo/countries.parquet", "demo/lookup/continent_lookup.parquet", "demo/countries.pmtiles",
                    "demo/stac/collection.json", "demo/README.md", "catalog.json"):
        assert product in keys, product
    assert not [k for k in keys if k.startswith(".staging/")]
    # Independent readers: pyarrow's own S3 client and DuckDB's httpfs, not the storage resource.
    s3fs = fs.S3FileSystem(endpoint_override=s3_server.endpoint.removeprefix("http://"), scheme="http",
                           access_key=s3_server.env()["AWS_ACCESS_KEY_ID"], secret_key=s3_server.env()["AWS_SECRET_ACCESS_KEY"],
                           region="us-east-1")
    gp = pq.read_table(f"{s3_env}/demo/countries.parquet", filesystem=s3fs)
    assert gp.num_rows == rows[("geoparquet", "countries")] and b"geo" in gp.schema.metadata
    con = _duckdb(s3_server)
    for slug in ("countries", "continents"):
        glob = f"s3://{s3_env}/demo/hex/{slug}/**/*.parquet"
        n = con.sql(f"SELECT count(*) FROM read_parquet('{glob}', hive_partitioning=true)").fetchone()[0]
        assert n == rows[("hex", slug)] > 0
    dupes = con.sql(f"SELECT count(*) FROM (SELECT _cng_fid, h6 FROM read_parquet('s3://{s3_env}/demo/hex/countries/**/*.parquet') "
                    "GROUP BY ALL HAVING count(*) > 1)").fetchone()[0]
    assert dupes == 0
