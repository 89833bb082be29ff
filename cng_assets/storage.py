"""Where products live. One interface, chosen per environment in `defs/resources.py`: a local folder here,
S3 later. Assets ask for keys; only this module knows paths, staging and how a product is published."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import dagster as dg

from cng_assets.transforms.sources import gdal_path


class ProductStorage(dg.ConfigurableResource):
    """Products are addressed by (bucket, key); bucket None means the storage's default place."""

    # Where readers fetch published products (STAC and doc hrefs), e.g. https://s3-west.nrp-nautilus.io;
    # None: hrefs relative to the dataset folder.
    public_base_url: str | None = None

    def href_base(self, bucket: str | None, prefix: str) -> str:
        if not self.public_base_url:
            return ""
        return f"{self.public_base_url.rstrip('/')}/{bucket + '/' if bucket else ''}{prefix.strip('/')}/"

    def uri(self, bucket: str | None, key: str) -> str:
        raise NotImplementedError

    @contextmanager
    def publish(self, bucket: str | None, key: str) -> Iterator[Path]:
        """Yield a local scratch path to write; on success it becomes the product in one step, on error it
        is removed. Readers never see a partial product."""
        raise NotImplementedError
        yield  # pragma: no cover

    @contextmanager
    def publish_dir(self, bucket: str | None, key: str) -> Iterator[Path]:
        """Like `publish`, for a folder of files (a partitioned product): all of it replaces the old one at once."""
        raise NotImplementedError
        yield  # pragma: no cover

    @contextmanager
    def local_path(self, bucket: str | None, key: str) -> Iterator[Path]:
        """A local path to read a product (file or folder) from; local storage hands out the product itself."""
        raise NotImplementedError
        yield  # pragma: no cover

    def delete(self, bucket: str | None, key: str) -> None:
        """Remove a product or a folder of products (missing is fine)."""
        raise NotImplementedError

    def open(self, bucket: str | None, key: str) -> BinaryIO:
        raise NotImplementedError

    def size(self, bucket: str | None, key: str) -> int:
        raise NotImplementedError

    def exists(self, bucket: str | None, key: str) -> bool:
        raise NotImplementedError

    def source_path(self, source: str) -> str:
        """GDAL path for a catalog source; relative sources live in this storage."""
        raise NotImplementedError


class LocalStorage(ProductStorage):
    """Products under a local folder, laid out like the buckets: `<root>/<bucket>/<key>`."""

    root: str = "data"

    @property
    def root_path(self) -> Path:
        return Path(self.root).expanduser().resolve()

    def path(self, bucket: str | None, key: str) -> Path:
        return self.root_path / bucket / key if bucket else self.root_path / key

    def uri(self, bucket: str | None, key: str) -> str:
        return str(self.path(bucket, key))

    @contextmanager
    def publish(self, bucket: str | None, key: str) -> Iterator[Path]:
        final = self.path(bucket, key)
        with self._staging() as staging:
            tmp = staging / final.name
            yield tmp
            if not tmp.exists():
                raise RuntimeError(f"nothing was written for {key}")
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, final)

    @contextmanager
    def _staging(self) -> Iterator[Path]:
        # Under the root (same filesystem, so renames are atomic) but outside the product folders, so even a
        # process killed mid-write leaves nothing half-written beside the products.
        staging = self.root_path / ".staging" / uuid.uuid4().hex
        staging.mkdir(parents=True)
        try:
            yield staging
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    @contextmanager
    def publish_dir(self, bucket: str | None, key: str) -> Iterator[Path]:
        final = self.path(bucket, key)
        with self._staging() as staging:
            new = staging / "new"
            new.mkdir()
            yield new
            final.parent.mkdir(parents=True, exist_ok=True)
            if final.exists():  # two renames: readers see the old set or the new one, never a mix
                os.replace(final, staging / "old")
            os.replace(new, final)

    @contextmanager
    def local_path(self, bucket: str | None, key: str) -> Iterator[Path]:
        yield self.path(bucket, key)

    def delete(self, bucket: str | None, key: str) -> None:
        path = self.path(bucket, key)
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)

    def open(self, bucket: str | None, key: str) -> BinaryIO:
        return open(self.path(bucket, key), "rb")

    def size(self, bucket: str | None, key: str) -> int:
        return self.path(bucket, key).stat().st_size

    def exists(self, bucket: str | None, key: str) -> bool:
        return self.path(bucket, key).exists()

    def source_path(self, source: str) -> str:
        return gdal_path(source, base_dir=self.root_path)

    def source_path_for_writing(self, source: str) -> Path:
        """Where a generated source (relative `source`) is written."""
        return self.root_path / source
