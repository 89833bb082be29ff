"""Where products live: one interface (`ProductStorage`), a local folder or S3 behind it, chosen per environment
in `defs/resources.py`. Assets ask for keys; only this package knows paths, staging and how a product is published."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import dagster as dg

from cng_assets.transforms.product_files import ProductFiles


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str  # S3's ETag; for local files a digest of size and modification time
    modified: float | None = None  # last modified, seconds since the epoch (S3's LastModified, a file's mtime)


NOTHING = "nothing"  # the fingerprint of keys with no object under them


def fingerprint(objects: Iterable[ObjectInfo], keys: Sequence[str]) -> str:
    """A digest of what is stored at these keys (a file, or every file in a folder): each object's key, size and
    ETag. Another upload, a deletion or a file added to a folder all change it."""
    folders = tuple(k.rstrip("/") + "/" for k in keys)
    found = {o.key: o for o in objects if o.key in keys or o.key.startswith(folders)}
    if not found:
        return NOTHING
    h = hashlib.sha256()
    for k in sorted(found):
        h.update(f"{k}\0{found[k].size}\0{found[k].etag}\n".encode())
    return h.hexdigest()[:32]


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

    def sweep_staging(self, before: float) -> int:
        """Remove staging left by crashed processes (older than `before`, a time.time(), and owned by no live
        process); return how many. Only local staging is swept: S3 staging keys carry no lock that tells a live upload
        from a dead one, so they stay (see docs/runbook.md's clean-up)."""
        return 0

    @contextmanager
    def local_path(self, bucket: str | None, key: str) -> Iterator[Path]:
        """A local path to read a product (file or folder) from; local storage hands out the product itself."""
        raise NotImplementedError
        yield  # pragma: no cover

    def delete(self, bucket: str | None, key: str) -> None:
        """Remove a product or a folder of products (missing is fine)."""
        raise NotImplementedError

    def open(self, bucket: str | None, key: str) -> BinaryIO:
        """A seekable file object (on S3, reads are range requests)."""
        raise NotImplementedError

    def checksum(self, bucket: str | None, key: str) -> str | None:
        """The object's multihash (sha2-256) as recorded when it was published; None when none was."""
        return None

    def product_files(self, bucket: str | None, prefix: str) -> ProductFiles:
        """The files under `prefix` for reading in place (footers, headers, listings), keys relative to it."""
        prefix = prefix.strip("/") + "/"
        return ProductFiles(lambda: ((o.key[len(prefix):], o.size) for o in self.list_objects(bucket, prefix)),
                            lambda key: self.open(bucket, prefix + key), lambda key: self.gdal_path(bucket, prefix + key),
                            self.gdal_options(), lambda key: self.checksum(bucket, prefix + key))

    def size(self, bucket: str | None, key: str) -> int:
        raise NotImplementedError

    def exists(self, bucket: str | None, key: str) -> bool:
        raise NotImplementedError

    def source_path(self, source: str) -> str:
        """GDAL path for a catalog source; relative sources live in this storage."""
        raise NotImplementedError

    def gdal_path(self, bucket: str | None, key: str) -> str:
        """Where GDAL (pyogrio, rasterio) reads a product in place."""
        raise NotImplementedError

    def gdal_options(self) -> dict[str, str]:
        """GDAL config options that path needs (for rasterio, whose GDAL is not pyogrio's)."""
        return {}

    def list_objects(self, bucket: str | None, prefix: str) -> Iterator[ObjectInfo]:
        """Every object (file) whose key starts with `prefix`, in key order."""
        raise NotImplementedError

    def fingerprint(self, bucket: str | None, keys: Sequence[str]) -> str:
        """What is stored at these keys now (`fingerprint`)."""
        return fingerprint((o for k in keys for o in self.list_objects(bucket, k)), keys)

    def source_files(self, source: str) -> dict[str, str]:
        """The files a source is made of, relative to it ('' for a single-file source), with their ETags.
        Empty when it is missing or cannot be listed (https://, or s3:// on local storage)."""
        raise NotImplementedError

    def source_modified(self, source: str) -> float | None:
        """When the source last changed: the newest last-modified time (epoch seconds) of its files (a folder's, a
        `.gdb`'s); None when it is missing or cannot be listed, as for `source_files`."""
        raise NotImplementedError
