"""Storage: the demo's whole asset graph on the local folder against the same on S3 (a real SeaweedFS gateway on
loopback, started here), in one run, side by side. S3 adds a request per read and a staged upload plus a
server-side copy per published file; this says what that costs end to end.

    .venv/bin/python bench/storage.py [--repeat 1]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# not bench/ itself: bench/pmtiles.py would shadow the pmtiles package
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]


def run_demo(env: dict[str, str], data_dir: str | None) -> float:
    import dagster as dg

    from cng_assets.catalog import load_catalog
    from cng_assets.runner import materialize_dataset

    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        with tempfile.TemporaryDirectory() as home, dg.instance_for_test(temp_dir=home) as instance:
            t0 = time.perf_counter()
            report = materialize_dataset(load_catalog()["demo"], instance, data_dir)
            elapsed = time.perf_counter() - t0
        if report.failed:
            raise SystemExit(f"demo failed: {report.failed}")
        return elapsed
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    from tests.servers import SeaweedS3

    with tempfile.TemporaryDirectory() as work:
        server = SeaweedS3(Path(work) / "weed").start()
        try:
            server.client().create_bucket(Bucket="bench")
            local, s3 = [], []
            for i in range(args.repeat):
                local.append(run_demo({"CNG_STORAGE": "local"}, str(Path(work) / f"data{i}")))
                s3.append(run_demo({**server.env(), "CNG_S3_BUCKET": "bench", "CNG_S3_MAX_ATTEMPTS": "3"}, None))
        finally:
            server.stop()
    print(f"demo, whole graph (29 steps), best of {args.repeat}:")
    print(f"  local folder   {min(local):7.1f} s")
    print(f"  S3 (SeaweedFS) {min(s3):7.1f} s")
    print(f"  S3 / local     {min(s3) / min(local):7.2f}x")


if __name__ == "__main__":
    main()
