"""Read access to one dataset's products by key relative to its folder, for what describes them (facts, STAC, the
README): listings with sizes, seekable file objects, checksums and GDAL paths, so that on S3 a reader fetches
Parquet footers, COG headers and small PNGs by range request instead of downloading the dataset.
Pure: the storage side (defs) supplies the functions; `LocalFiles` serves a local folder."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO

import pyarrow as pa

TAIL = 8  # a Parquet file ends with the footer's length (4 bytes, little-endian) and b"PAR1"


class ProductFiles:
    """The files under one folder: `listing` gives (key, size) for every file once (relative keys, '/'-separated);
    `opener(key)` a seekable binary file; `checksum(key)` a multihash or None (then the file is hashed here)."""

    def __init__(self, listing: Callable[[], Iterable[tuple[str, int]]], opener: Callable[[str], BinaryIO],
                 gdal_path: Callable[[str], str], gdal_options: dict[str, str] | None = None,
                 checksum: Callable[[str], str | None] | None = None):
        self._listing, self._sizes = listing, None
        self.open, self.gdal_path, self.gdal_options = opener, gdal_path, gdal_options or {}
        self._checksum = checksum or (lambda key: None)

    @property
    def sizes(self) -> dict[str, int]:
        if self._sizes is None:  # one listing for the whole folder
            self._sizes = dict(self._listing())
        return self._sizes

    def files(self, key: str) -> dict[str, int]:
        """{key: size} of the file `key`, or of every file under the folder `key` (a trailing '/' or not)."""
        key = key.rstrip("/")
        if key in self.sizes:
            return {key: self.sizes[key]}
        return {k: n for k, n in self.sizes.items() if k.startswith(key + "/")}

    def checksum(self, key: str) -> str:
        """The file's multihash (sha2-256): as recorded by the storage, else hashed while streaming it."""
        recorded = self._checksum(key)
        if recorded:
            return recorded
        with self.open(key) as f:
            return multihash_sha256(f)

    def footer(self, key: str) -> pa.BufferReader:
        """The Parquet file's footer alone, as a file pq.read_metadata/read_schema accept: two small range reads,
        where pyarrow's own reader fetches the last 64 KiB (a small file whole)."""
        with self.open(key) as f:
            f.seek(-TAIL, 2)
            tail = f.read(TAIL)
            if tail[4:] != b"PAR1":
                raise ValueError(f"{key} is not a Parquet file")
            n = int.from_bytes(tail[:4], "little")
            f.seek(-TAIL - n, 2)
            return pa.BufferReader(b"PAR1" + f.read(n) + tail)


def multihash_sha256(f: BinaryIO) -> str:
    h = hashlib.sha256()
    for block in iter(lambda: f.read(1 << 20), b""):
        h.update(block)
    return "1220" + h.hexdigest()


def local_files(root: str | Path) -> ProductFiles:
    root = Path(root)

    def listing():
        for p in root.rglob("*"):
            if p.is_file():
                yield p.relative_to(root).as_posix(), p.stat().st_size

    return ProductFiles(listing, lambda key: open(root / key, "rb"), lambda key: str(root / key))


def as_files(root: str | Path | ProductFiles) -> ProductFiles:
    return root if isinstance(root, ProductFiles) else local_files(root)
