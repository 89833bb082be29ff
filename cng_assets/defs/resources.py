"""Per-environment resources, chosen in one place from the environment:

- `CNG_STORAGE=local` (the embedded default): products under `CNG_DATA_DIR` (default ./data).
- `CNG_STORAGE=s3`: products in S3 at `CNG_S3_ENDPOINT` (in pods the cluster-internal endpoint,
  http://rook-ceph-rgw-nautiluss3.rook), bucket `CNG_S3_BUCKET` for datasets without one of their own. Keys come
  from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (the `aws` Secret), never from config.
- `CNG_MIRROR_ENDPOINT` (default https://data.source.coop): where datasets with a `mirror:` entry are copied.
- `CNG_PUBLIC_BASE_URL` (both): where readers fetch products, e.g. https://s3-west.nrp-nautilus.io (unset: relative).
"""

from __future__ import annotations

import os

from dagster_aws.s3 import S3Resource

from cng_assets.defs.failures import K8sPods
from cng_assets.defs.mirror import MirrorS3
from cng_assets.storage import LocalStorage, ProductStorage, S3Storage

DEFAULT_DATA_DIR = "data"


def storage_from_env(data_dir: str | None = None) -> ProductStorage:
    env = os.environ
    public = env.get("CNG_PUBLIC_BASE_URL") or None
    kind = env.get("CNG_STORAGE", "local")
    if kind == "s3":
        endpoint = env.get("CNG_S3_ENDPOINT") or None
        s3 = S3Resource(endpoint_url=endpoint, use_ssl=not (endpoint or "").startswith("http://"),
                        region_name=env.get("AWS_REGION", "us-east-1"), max_attempts=int(env.get("CNG_S3_MAX_ATTEMPTS", "8")))
        return S3Storage(s3=s3, default_bucket=env.get("CNG_S3_BUCKET", "cng-assets"), public_base_url=public)
    if kind != "local":
        raise ValueError(f"CNG_STORAGE={kind!r}: expected 'local' or 's3'")
    return LocalStorage(root=data_dir or env.get("CNG_DATA_DIR", DEFAULT_DATA_DIR), public_base_url=public)


def mirror_from_env() -> MirrorS3:
    """The mirror (source.coop) endpoint, `CNG_MIRROR_ENDPOINT`; keys from MIRROR_AWS_ACCESS_KEY_ID and
    MIRROR_AWS_SECRET_ACCESS_KEY, read when a run starts, never stored in config."""
    return MirrorS3(endpoint_url=os.environ.get("CNG_MIRROR_ENDPOINT", "https://data.source.coop"),
                    region_name=os.environ.get("CNG_MIRROR_REGION", "us-west-2"))


def resources(data_dir: str | None = None) -> dict:
    return {"storage": storage_from_env(data_dir), "mirror": mirror_from_env(), "pods": K8sPods()}
