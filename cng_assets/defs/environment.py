"""What runs in this environment, chosen in one place from the environment variables (the Helm values set them
on the cluster; nothing needs setting on a laptop):

- `CNG_STORAGE=local|s3` (resources.py): where products live.
- `CNG_EXECUTOR=k8s` (pods.py): each step its own pod.
- `CNG_ACTIVE_DATASETS=a,b`: the datasets whose sensors start running. By default, those whose source this
  environment can reach: `s3://` sources only with S3 storage; relative ones (in the product storage) anywhere. So a
  laptop shows the cluster's datasets (PAD-US, CPAD) with their sensors stopped, not failing every tick.
- `CNG_SENSOR_INTERVAL`: seconds between sensor evaluations (default 30). Raw uploads in S3 are listed at most
  every `CNG_RAW_INTERVAL` (default 300), since a listing of a big `.gdb` costs requests; a local source (the
  demo inbox) as often as the other sensors.
"""

from __future__ import annotations

import os

import dagster as dg

from cng_assets.catalog import Dataset
from cng_assets.transforms.sources import REMOTE_PREFIXES


def sensor_interval() -> int:
    return int(os.environ.get("CNG_SENSOR_INTERVAL", "30"))


def raw_interval(ds: Dataset) -> int:
    remote = ds.source.startswith(REMOTE_PREFIXES) or os.environ.get("CNG_STORAGE", "local") == "s3"
    return int(os.environ.get("CNG_RAW_INTERVAL", "300")) if remote else sensor_interval()


def is_active(ds: Dataset) -> bool:
    chosen = os.environ.get("CNG_ACTIVE_DATASETS")
    if chosen is not None:
        return ds.name in {n.strip() for n in chosen.split(",")}
    return not ds.source.startswith("s3://") or os.environ.get("CNG_STORAGE", "local") == "s3"


def sensor_status(ds: Dataset) -> dg.DefaultSensorStatus:
    return dg.DefaultSensorStatus.RUNNING if is_active(ds) else dg.DefaultSensorStatus.STOPPED
