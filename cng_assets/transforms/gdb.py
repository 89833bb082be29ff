"""Per-layer data versions of a source. A FileGDB folder holds one set of files per table,
`a<table id as 8 hex digits>.<ext>`, the id being the table's row in GDB_SystemCatalog; so a re-upload that
touches only some files changes only those tables' layers. Files outside that scheme (`gdb`, `timestamps`)
change on every edit and say nothing about which table changed."""

from __future__ import annotations

import hashlib
import re
import warnings

import pyogrio

TABLE_FILE = re.compile(r"^a([0-9a-f]{8})\.", re.IGNORECASE)
ITEMS_TABLE = "GDB_Items"  # layer definitions and coded-value domains


def table_names(path: str) -> dict[int, str]:
    """Table id -> table name, from GDB_SystemCatalog (GDAL lists system tables with LIST_ALL_TABLES)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        df = pyogrio.read_dataframe(path, layer="GDB_SystemCatalog", read_geometry=False, fid_as_index=True,
                                    LIST_ALL_TABLES="YES")
    return {int(fid): str(name) for fid, name in df["Name"].items()}


def layer_versions(objects: dict[str, str], layers: dict[str, str], domain_keys: list[str], path: str) -> dict[str, str]:
    """A data version per layer partition key. `objects` maps the source's files (keys relative to the source,
    '' for a single-file source) to ETags; `layers` maps layer names to partition keys.

    A FileGDB folder: a digest over the layer's own table files, so re-uploading one table changes one layer;
    coded-value domain tables follow GDB_Items. Any other source is one file: every layer has its ETag."""
    if set(objects) == {""}:
        return {key: objects[""] for key in [*layers.values(), *domain_keys]}
    ids = {name: i for i, name in table_names(path).items()}
    by_table: dict[int, list[str]] = {}
    for rel, etag in objects.items():
        m = TABLE_FILE.match(rel.rsplit("/", 1)[-1])
        if m:
            by_table.setdefault(int(m.group(1), 16), []).append(f"{rel}\t{etag}")

    def digest(table_id: int | None) -> str:
        lines = sorted(by_table.get(table_id, [])) if table_id is not None else []
        return "sha256:" + hashlib.sha256("\n".join(lines).encode()).hexdigest()[:32]

    versions = {key: digest(ids.get(name)) for name, key in layers.items()}
    items = digest(ids.get(ITEMS_TABLE))
    return versions | {key: items for key in domain_keys}
