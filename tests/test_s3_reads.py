"""STAC and docs on S3 read footers, headers, listings and the small PNGs in place, never the dataset: counted by a
relay in front of the S3 server (every client's bytes), and their outputs are the same as on local storage."""

from __future__ import annotations

import re
import shutil

import dagster as dg
import pytest

from cng_assets.catalog import load_catalog
from cng_assets.defs.publish import publish_assets
from cng_assets.defs.resources import storage_from_env
from cng_assets.runner import materialize_dataset
from cng_assets.storage import LocalStorage
from cng_assets.transforms import layout

OUTPUTS = (layout.README, layout.MAP)


def _describe(ds, storage, instance) -> str:
    """The dataset's stac and docs steps, alone, on `storage`; the run's id."""
    steps = publish_assets(ds, dg.AssetKey([ds.name, "geoparquet"]), [])[2:]
    result = dg.materialize(steps, resources={"storage": storage}, instance=instance)
    assert result.success
    return result.run_id


def _outputs(storage, ds, run_id: str) -> dict[str, str]:
    """stac/, README.md and map.html as text, with what differs between two runs (run id, generation time) masked."""
    keys = [o.key for o in storage.list_objects(ds.bucket, f"{ds.prefix}/{layout.STAC_DIR}/")]
    keys += [f"{ds.prefix}/{k}" for k in OUTPUTS if storage.exists(ds.bucket, f"{ds.prefix}/{k}")]
    out = {}
    for key in keys:
        with storage.open(ds.bucket, key) as f:
            text = f.read().decode()
        text = text.replace(run_id, "<run>")
        out[key] = re.sub(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|\+00:00)?", "<time>", text)
    return out


@pytest.mark.timeout(600)
def test_stac_and_docs_on_s3_read_a_small_part_of_the_dataset_and_match_local(s3_env, s3_server, tmp_path, monkeypatch):
    from tests.servers import CountingProxy

    ds = load_catalog()["demo"]
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        assert not materialize_dataset(ds, instance).failed
        direct = storage_from_env()
        dataset_bytes = sum(o.size for o in direct.list_objects(ds.bucket, ds.prefix + "/"))
        with direct.local_path(ds.bucket, ds.prefix) as copy:  # the same products, on local storage
            shutil.copytree(copy, tmp_path / "local" / ds.prefix)
        local = LocalStorage(root=str(tmp_path / "local"))
        ds = ds.dated("2024-05-01T00:00:00+00:00", "catalog")  # not each storage's own time of the source

        proxy = CountingProxy(s3_server.endpoint)
        try:
            monkeypatch.setenv("CNG_S3_ENDPOINT", proxy.endpoint)
            s3 = storage_from_env()
            s3_run = _describe(ds, s3, instance)
            read = proxy.received
        finally:
            proxy.close()
        local_run = _describe(ds, local, instance)

    print(f"stac + docs read {read:,} bytes from S3 of a {dataset_bytes:,}-byte dataset")
    assert read < dataset_bytes / 10, f"stac + docs read {read:,} bytes from S3 of a {dataset_bytes:,}-byte dataset"
    on_s3, on_local = _outputs(direct, ds, s3_run), _outputs(local, ds, local_run)
    assert sorted(on_s3) == sorted(on_local) and f"{ds.prefix}/{layout.README}" in on_s3
    for key in on_s3:
        assert on_s3[key] == on_local[key], key
