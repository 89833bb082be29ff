"""The storage, not the instance, says what exists. Each materialization records (as metadata) the fingerprint of
what it left in storage (its products' keys, sizes and ETags), and `layers` the fingerprint of the source's files it
read; `StorageCheck` compares both with the storage now, for `status`, `reprocess --stale` and `cng-assets run`. A
product deleted, replaced behind the project's back or absent from another product folder is then not fresh,
and nor is a layer inventory read from a source that has changed since (a layer added, rows added)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

import dagster as dg

from cng_assets.catalog import Dataset
from cng_assets.dagster_private import PINNED_PREFIX
from cng_assets.storage import ProductStorage
from cng_assets.storage.base import NOTHING, fingerprint
from cng_assets.transforms.sources import remote_version

STORED = PINNED_PREFIX + "stored"  # {"bucket", "keys", "fingerprint"}: the products, as they were when made
SOURCE = PINNED_PREFIX + "source"  # {"source", "fingerprint"}: the source's files, as they were when read
CAUSE = "storage: "  # how the causes this module finds begin


def stored(storage: ProductStorage, bucket: str | None, *keys: str) -> dict[str, dg.MetadataValue]:
    """Metadata that pins a materialization to what it left at these keys (nothing there is pinned too)."""
    return {STORED: dg.MetadataValue.json({"bucket": bucket, "keys": list(keys),
                                           "fingerprint": storage.fingerprint(bucket, keys)})}


def source_files(storage: ProductStorage, source: str) -> dict[str, str]:
    """The source's files with their ETags ('' for a single file); empty when it is missing."""
    files = storage.source_files(source)
    if not files and (version := remote_version(source)):
        files = {"": version}
    return files


def _source_fingerprint(storage: ProductStorage, source: str) -> str:
    files = source_files(storage, source)
    return hashlib.sha256(json.dumps(sorted(files.items())).encode()).hexdigest()[:32] if files else NOTHING


def source_read(storage: ProductStorage, ds: Dataset) -> dict[str, dg.MetadataValue]:
    """Metadata that pins a discovery to the source's files as it read them."""
    return {SOURCE: dg.MetadataValue.json({"source": ds.source, "fingerprint": _source_fingerprint(storage, ds.source)})}


class StorageCheck:
    """Whether what a materialization pinned is still so. Each (bucket, top folder) of products is listed once,
    for every partition under it."""

    def __init__(self, storage: ProductStorage):
        self.storage = storage
        self._listings: dict[tuple[str | None, str], list] = {}

    def _objects(self, bucket: str | None, key: str) -> list:
        top = key.split("/")[0]
        if (bucket, top) not in self._listings:
            self._listings[(bucket, top)] = list(self.storage.list_objects(bucket, top))
        return self._listings[(bucket, top)]

    def __call__(self, pins: Mapping[str, dict]) -> tuple[bool, str] | None:
        """(missing, why) when the storage disagrees with an event's pins; None when it agrees, or nothing is
        pinned (events made before pins, or by the legacy audit)."""
        if read := pins.get(SOURCE):
            if _source_fingerprint(self.storage, read["source"]) != read["fingerprint"]:
                return False, f"{CAUSE}the source {read['source']} changed since it was read"
        if (pinned := pins.get(STORED)) is None:
            return None
        bucket, keys = pinned["bucket"], pinned["keys"]
        now = fingerprint((o for k in keys for o in self._objects(bucket, k)), keys)
        if now == pinned["fingerprint"]:
            return None
        where = ", ".join(self.storage.uri(bucket, k) for k in keys)
        if now == NOTHING:
            return True, f"{CAUSE}not there: {where} (deleted, or another product folder)"
        return False, f"{CAUSE}changed since it was made: {where}"
