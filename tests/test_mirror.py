"""Mirroring to a second S3 server (another SeaweedFS on loopback standing in for source.coop): other bucket and
path, only changed objects copied, objects gone from the source reported and kept."""

from __future__ import annotations

import dagster as dg
import pytest

from cng_assets.catalog import Dataset
from cng_assets.defs.mirror import MirrorS3, mirror_asset, sync
from cng_assets.defs.resources import storage_from_env


@pytest.fixture(scope="module")
def mirror_server(tmp_path_factory):
    from tests.servers import SeaweedS3

    server = SeaweedS3(tmp_path_factory.mktemp("mirror")).start()
    server.client().create_bucket(Bucket="coop")
    yield server
    server.stop()


def test_sync_copies_only_changed_objects(s3_env, s3_server, mirror_server):
    storage = storage_from_env()
    src = s3_server.client()
    for key, body in {"ds/a.parquet": b"a" * 100, "ds/hex/h0=1/p.parquet": b"h", "ds/README.md": b"# r"}.items():
        src.put_object(Bucket=s3_env, Key=key, Body=body)
    dst = mirror_server.client()
    first = sync(storage, None, "ds", dst, "coop", "lab/ds-v1")
    assert sorted(first.copied) == ["lab/ds-v1/README.md", "lab/ds-v1/a.parquet", "lab/ds-v1/hex/h0=1/p.parquet"]
    assert dst.get_object(Bucket="coop", Key="lab/ds-v1/hex/h0=1/p.parquet")["Body"].read() == b"h"
    again = sync(storage, None, "ds", dst, "coop", "lab/ds-v1")
    assert again.copied == [] and again.unchanged == 3
    src.put_object(Bucket=s3_env, Key="ds/README.md", Body=b"# changed")
    src.delete_object(Bucket=s3_env, Key="ds/a.parquet")
    third = sync(storage, None, "ds", dst, "coop", "lab/ds-v1")
    assert third.copied == ["lab/ds-v1/README.md"] and third.only_in_mirror == ["lab/ds-v1/a.parquet"]
    assert dst.head_object(Bucket="coop", Key="lab/ds-v1/a.parquet")  # kept, not deleted


def test_mirror_asset_uses_the_catalog_mapping(s3_env, s3_server, mirror_server, tmp_path, monkeypatch):
    ds = Dataset(name="m", title="m", source="raw/x.gpkg", prefix="m", datetime="2020-01-01",
                 mirror={"bucket": "coop", "prefix": "lab/m"})
    s3_server.client().put_object(Bucket=s3_env, Key="m/README.md", Body=b"# m")
    monkeypatch.setenv("MIRROR_AWS_ACCESS_KEY_ID", "cng-test-key")
    monkeypatch.setenv("MIRROR_AWS_SECRET_ACCESS_KEY", "cng-test-secret")
    mirror = MirrorS3(endpoint_url=mirror_server.endpoint, region_name="us-east-1")
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        result = dg.materialize([mirror_asset(ds)], instance=instance, selection=[dg.AssetKey(["m", "mirror"])],
                                resources={"storage": storage_from_env(), "mirror": mirror})
    meta = result.asset_materializations_for_node("m__mirror")[0].metadata
    assert meta["copied"].value == 1 and meta["target"].value == "s3://coop/lab/m/"
