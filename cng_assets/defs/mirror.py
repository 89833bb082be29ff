"""Mirroring published products to a second S3 (the lab mirrors to source.coop, under other bucket names and
paths: each dataset's `mirror:` in the catalog). Only objects whose ETag changed since the last copy are copied:
the source ETag travels with each copy as object metadata, because a re-uploaded copy need not get the same ETag
(multipart). Objects gone from the source are reported, not deleted from the mirror."""

import os
from dataclasses import dataclass, field

import dagster as dg
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError
from dagster_aws.s3 import S3Resource

from cng_assets.catalog import Dataset
from cng_assets.defs.automation import AFTER_PRODUCTS
from cng_assets.defs.pods import op_tags
from cng_assets.storage import ProductStorage

SOURCE_ETAG = "source-etag"  # x-amz-meta-source-etag on every mirrored object


class MirrorS3(dg.ConfigurableResource):
    """The mirror's endpoint. Its keys are read from MIRROR_AWS_ACCESS_KEY_ID / MIRROR_AWS_SECRET_ACCESS_KEY only
    when a mirror step runs, so environments without a mirror need neither."""

    endpoint_url: str = "https://data.source.coop"
    region_name: str = "us-west-2"

    def get_client(self):
        keys = [os.environ.get(f"MIRROR_AWS_{k}") for k in ("ACCESS_KEY_ID", "SECRET_ACCESS_KEY")]
        if not all(keys):
            raise dg.Failure("the mirror's keys are not set", metadata={
                "what to do": "set MIRROR_AWS_ACCESS_KEY_ID and MIRROR_AWS_SECRET_ACCESS_KEY (a Secret in the cluster)"})
        return S3Resource(endpoint_url=self.endpoint_url, use_ssl=not self.endpoint_url.startswith("http://"),
                          region_name=self.region_name, aws_access_key_id=keys[0], aws_secret_access_key=keys[1]).get_client()


@dataclass
class SyncStats:
    copied: list[str] = field(default_factory=list)
    unchanged: int = 0
    only_in_mirror: list[str] = field(default_factory=list)
    bytes_copied: int = 0


def sync(storage: ProductStorage, bucket: str | None, prefix: str, client, dst_bucket: str, dst_prefix: str) -> SyncStats:
    stats = SyncStats()
    src_prefix, dst_prefix = prefix.strip("/") + "/", dst_prefix.strip("/") + "/"
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=dst_bucket, Prefix=dst_prefix)
    mirrored = {o["Key"]: o["ETag"].strip('"') for page in pages for o in page.get("Contents", [])}
    seen = set()
    for o in storage.list_objects(bucket, src_prefix):
        key = dst_prefix + o.key[len(src_prefix):]
        seen.add(key)
        if key in mirrored and (mirrored[key] == o.etag or _source_etag(client, dst_bucket, key) == o.etag):
            stats.unchanged += 1
            continue
        with storage.open(bucket, o.key) as f:
            client.upload_fileobj(f, dst_bucket, key, ExtraArgs={"Metadata": {SOURCE_ETAG: o.etag}},
                                  Config=TransferConfig(multipart_threshold=64 * 1024 * 1024))
        stats.copied.append(key)
        stats.bytes_copied += o.size
    stats.only_in_mirror = sorted(set(mirrored) - seen)
    return stats


def _source_etag(client, bucket: str, key: str) -> str | None:
    try:
        return client.head_object(Bucket=bucket, Key=key).get("Metadata", {}).get(SOURCE_ETAG)
    except ClientError:
        return None


def mirror_asset(ds: Dataset) -> dg.AssetsDefinition:
    target = ds.mirror

    @dg.asset(key=[ds.name, "mirror"], op_tags=op_tags(ds, "mirror"), group_name=ds.name, kinds={"s3"}, code_version="1",
              deps=[dg.AssetKey([ds.name, "stac"]), dg.AssetKey([ds.name, "docs"])], automation_condition=AFTER_PRODUCTS,
              description=f"Copies the published products to the mirror at `{target.bucket}/{target.prefix}/`, "
                          "only objects whose ETag changed.")
    def _mirror(context: dg.AssetExecutionContext, storage: ProductStorage, mirror: MirrorS3) -> dg.MaterializeResult:
        stats = sync(storage, ds.bucket, ds.prefix, mirror.get_client(), target.bucket, target.prefix)
        if stats.only_in_mirror:
            context.log.warning(f"{len(stats.only_in_mirror)} objects are only in the mirror (kept): {stats.only_in_mirror[:10]}")
        return dg.MaterializeResult(metadata={
            "copied": len(stats.copied), "unchanged": stats.unchanged, "bytes_copied": stats.bytes_copied,
            "only_in_mirror": stats.only_in_mirror[:100], "first_copied": stats.copied[:50],
            "target": f"s3://{target.bucket}/{target.prefix}/"})

    return _mirror
