"""What runs in this environment, chosen in one place from the environment variables (the Helm values set them
on the cluster; nothing needs setting on a laptop):

- `CNG_STORAGE=local|s3` (resources.py): where products live.
- `CNG_EXECUTOR=k8s` (pods.py): each step its own pod.
- `CNG_DATASETS=a,b` (or `all`): the catalog datasets the code location loads. By default, those whose source
  this environment reaches: `s3://` sources only with S3 storage; relative ones (in the product storage)
  anywhere. So a laptop shows the demo and the inbox, not the cluster's datasets (PAD-US, CPAD) that it cannot
  run, and "Materialize all" means what it says. Loaded anyway (`all`), those show with their sensors stopped.
- `CNG_SENSOR_INTERVAL`: seconds between sensor evaluations (default 30). Raw uploads in S3 are listed at most
  every `CNG_RAW_INTERVAL` (default 300), since a listing of a big `.gdb` costs requests; a local source (the
  demo inbox) as often as the other sensors.
"""

from __future__ import annotations

import os

import dagster as dg

from cng_assets.catalog import Dataset
from cng_assets.errors import CngInputError
from cng_assets.transforms.sources import REMOTE_PREFIXES


def sensor_interval() -> int:
    return int(os.environ.get("CNG_SENSOR_INTERVAL", "30"))


def raw_interval(ds: Dataset) -> int:
    remote = ds.source.startswith(REMOTE_PREFIXES) or os.environ.get("CNG_STORAGE", "local") == "s3"
    return int(os.environ.get("CNG_RAW_INTERVAL", "300")) if remote else sensor_interval()


def reaches(ds: Dataset) -> bool:
    """Whether this environment can read the dataset's source."""
    return not ds.source.startswith("s3://") or os.environ.get("CNG_STORAGE", "local") == "s3"


def loaded_datasets(catalog: dict[str, Dataset]) -> list[Dataset]:
    """The datasets the code location loads (CNG_DATASETS), those this environment reaches first."""
    chosen = os.environ.get("CNG_DATASETS", "").strip()
    if chosen == "all":
        names = list(catalog)
    elif chosen:
        names = [n.strip() for n in chosen.split(",") if n.strip()]
        unknown = sorted(set(names) - set(catalog))
        if unknown:
            raise CngInputError(f"CNG_DATASETS names {unknown}, which the catalog does not have",
                                hint=f"name some of {', '.join(sorted(catalog))}, or `all`")
    else:
        names = [n for n, ds in catalog.items() if reaches(ds)]
    return sorted((catalog[n] for n in names), key=lambda ds: (not reaches(ds), ds.name))


def sensor_status(ds: Dataset) -> dg.DefaultSensorStatus:
    return dg.DefaultSensorStatus.RUNNING if reaches(ds) else dg.DefaultSensorStatus.STOPPED
