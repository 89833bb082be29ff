"""Products in a local folder: the embedded default on a laptop and in tests."""

from __future__ import annotations

import fcntl
import glob
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from cng_assets.storage.base import ObjectInfo, ProductStorage
from cng_assets.transforms.folders import file_version, local_files, local_modified
from cng_assets.transforms.sources import REMOTE_PREFIXES, gdal_path

STAGING = ".staging"


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
        # process killed mid-write leaves nothing half-written beside the products. The owner holds a lock on
        # the folder while it lives; the kernel drops it when the process dies, however it dies.
        staging = self.root_path / STAGING / uuid.uuid4().hex
        staging.mkdir(parents=True)
        lock = os.open(staging, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(lock, fcntl.LOCK_SH)
            yield staging
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            os.close(lock)

    def sweep_staging(self, before: float) -> int:
        swept = 0
        for path in (self.root_path / STAGING).glob("*"):
            try:
                if path.stat().st_mtime >= before:  # it may be between its mkdir and its lock
                    continue
                fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
            except (FileNotFoundError, NotADirectoryError):  # its owner removed it just now
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                shutil.rmtree(path, ignore_errors=True)
                swept += 1
            except BlockingIOError:  # a live owner holds its lock
                pass
            finally:
                os.close(fd)
        return swept

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

    def gdal_path(self, bucket: str | None, key: str) -> str:
        return str(self.path(bucket, key))

    def list_objects(self, bucket: str | None, prefix: str) -> Iterator[ObjectInfo]:
        base = self.path(bucket, "")
        start = self.path(bucket, prefix)
        if start.is_dir():
            paths = start.rglob("*")
        elif start.parent.is_dir():  # a file's key, or part of a name: only the entries whose names start so
            named = start.parent.glob(glob.escape(start.name) + "*")
            paths = (q for e in named for q in ([e] if e.is_file() else [e, *e.rglob("*")]))
        else:
            return
        for p in sorted(paths):
            key = p.relative_to(base).as_posix()
            if p.is_file() and key.startswith(prefix) and not key.startswith(STAGING + "/"):
                yield _info(p, key)

    def _source(self, source: str) -> Path | None:
        if source.startswith(REMOTE_PREFIXES):
            return None
        path = Path(source).expanduser()
        return path if path.is_absolute() else self.root_path / path

    def source_files(self, source: str) -> dict[str, str]:
        path = self._source(source)
        if path is not None and path.is_file():
            return {"": _info(path, "").etag}
        return local_files(str(path)) if path is not None and path.is_dir() else {}

    def source_modified(self, source: str) -> float | None:
        path = self._source(source)
        return None if path is None else local_modified(path)


def _info(path: Path, key: str) -> ObjectInfo:
    st = path.stat()
    return ObjectInfo(key, st.st_size, file_version(st), st.st_mtime)
