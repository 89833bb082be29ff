"""Chunk outputs -> `h0=<cell>/part-<first cell>.parquet`: one file per unit (consecutive group cells, see
chunk.GROUP_SPAN), the chunks' sorted runs merged by cell, parents computed, the layer's attributes joined on
`_cng_fid`; and the product's checks. h0 is the folder key only, never a column inside the files
(layout.HEX_PARTITION).

Memory stays bounded: each worker holds one unit (at most TARGET_ROWS rows, or one group of at most 823,543
distinct cells times the layer's overlap).
Cell columns are sorted, so they are delta-encoded (about 10x smaller than plain and faster to write); attributes
are written as dictionary indices into the layer's attribute table, never copied per cell.
"""

from __future__ import annotations

from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import h3ronpy
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cng_assets.transforms import layout
from cng_assets.transforms.columns import BBOX, FID, GEOMETRY, output_names
from cng_assets.transforms.cpus import usable_cpus
from cng_assets.transforms.hex import cells as C
from cng_assets.transforms.hex import chunk, runs
from cng_assets.transforms.hex.fill import HexSettings
from cng_assets.transforms.verify import hex as hex_check

VERSION = "4"  # bump when the consolidated layout changes (4: h0 only in the folder names)
NOT_ATTRIBUTES = {FID, GEOMETRY, BBOX}
ROW_GROUP_ROWS = 131_072
TARGET_ROWS = 2_000_000  # rows per output file, when small groups can be merged
SAMPLE_ROWS = 16_384  # rows per file the parent check re-derives (its first)


@dataclass
class HexCheck:
    name: str
    passed: bool
    detail: dict


@dataclass
class Consolidated:
    rows_per_h0: dict[int, int] = field(default_factory=dict)
    checks: list[HexCheck] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)


def attribute_columns(geoparquet: str, attributes: str | list[str]) -> list[str]:
    names = [n for n in pq.read_schema(geoparquet).names if n not in NOT_ATTRIBUTES]
    if attributes == "all":
        return names
    if attributes == "none":
        return []
    missing = [a for a in attributes if a not in names]
    if missing:
        raise ValueError(f"hex attributes {missing} are not columns of the layer (it has {names})")
    return list(attributes)


def _units(chunk_dirs: list[Path]) -> list[list[Path]]:
    """Chunk files in runs of consecutive group cells of one h0, up to TARGET_ROWS rows a run (a single bigger
    group stays whole): the units consolidation writes independently, one output file each. Group cells in id
    order cover consecutive cell ids, so units sort independently. Rows per file come from the chunk markers."""
    groups, rows = defaultdict(list), defaultdict(int)
    for d in chunk_dirs:
        for key, path, n in chunk.files(d):
            groups[key].append(path)
            rows[key] += n
    units, size, h0 = [], 0, None
    for key in sorted(groups):
        key_h0 = int(C.parent(np.array([key], np.uint64), 0)[0])
        if not units or key_h0 != h0 or size + rows[key] > TARGET_ROWS:
            units.append([])
            size, h0 = 0, key_h0
        units[-1].extend(groups[key])
        size += rows[key]
    return units


class _Attributes:
    """The layer's attribute rows by `_cng_fid`, looked up directly (a position table) when the fids are dense, as
    this project's are; by binary search otherwise."""

    def __init__(self, geoparquet: str, columns: list[str]):
        table = pq.read_table(geoparquet, columns=[FID, *columns])
        table = table.take(pc.sort_indices(table.column(FID)))
        self.fids = np.asarray(table.column(FID).to_numpy())
        self.values = [table.column(n).combine_chunks() for n in columns]
        # a layer's own `h8` or `H0` (GeoParquet made elsewhere: ours renames them) must not clash with a cell column
        self.names = list(output_names(columns).values())
        self.seen = np.zeros(len(self.fids), dtype=bool)  # set by every unit (threads only ever set True)
        self.lo = int(self.fids[0]) if len(self.fids) else 0
        span = int(self.fids[-1]) - self.lo + 1 if len(self.fids) else 0
        self.table = None
        if span <= 4 * len(self.fids) + 1024:
            self.table = np.full(span, -1, np.int64)
            self.table[self.fids - self.lo] = np.arange(len(self.fids))

    def positions(self, fids: np.ndarray) -> np.ndarray:
        """Row of each fid in the attribute table, -1 where the layer has no such feature."""
        if not len(self.fids):
            return np.full(len(fids), -1, np.int64)
        if self.table is not None:
            i = fids - self.lo
            if i.min() >= 0 and i.max() < len(self.table):
                return self.table[i]
            inside = (i >= 0) & (i < len(self.table))
            return np.where(inside, self.table[np.where(inside, i, 0)], -1)
        at = np.minimum(np.searchsorted(self.fids, fids), len(self.fids) - 1)
        return np.where(self.fids[at] == fids, at, -1)

    def columns(self, at: np.ndarray) -> list[pa.Array]:
        """Per-cell values as indices into the values of the features present (no per-cell copy of the values);
        Arrow cannot write a dictionary holding nulls, so such columns are copied instead."""
        present = np.zeros(len(self.fids), dtype=bool)
        present[at] = True
        used = np.flatnonzero(present)
        inverse = pa.array((np.cumsum(present) - 1)[at].astype(np.int32))
        out = []
        for values in self.values:
            kept = values.take(pa.array(used))
            out.append(kept.take(inverse) if kept.null_count else pa.DictionaryArray.from_arrays(inverse, kept))
        return out


@dataclass
class _Unit:
    h0: int
    rows: int
    duplicates: int
    invalid: int
    unknown_fids: int


def _write_unit(files: list[Path], attrs: _Attributes, out_dir: Path, settings: HexSettings) -> _Unit:
    """Merge one unit's sorted runs by (cell, fid), add parents and attributes, write one file; count what the
    checks need."""
    res = settings.resolution
    names = layout.hex_file_columns(res, settings.parents)
    tables = [runs.read(f) for f in files]
    fids = np.concatenate([np.asarray(t.column(FID).to_numpy()) for t in tables])
    cells = np.concatenate([np.asarray(t.column("cell").to_numpy()) for t in tables])
    del tables
    invalid = int((~C.valid_at(cells, res)).sum())
    fids, cells = C.sort_pairs(fids, cells, res)
    same = np.flatnonzero(cells[1:] == cells[:-1])  # few: a cell shared by features (or a duplicate)
    same = same[fids[same + 1] == fids[same]] + 1
    duplicates = 0
    if settings.containment == "overlap":  # two parts of one feature may share a cell: keep it once
        fids, cells = np.delete(fids, same), np.delete(cells, same)
    else:
        duplicates = len(same)
    at = attrs.positions(fids)
    known = at >= 0
    attrs.seen[at[known]] = True
    h0 = int(C.parent(cells[:1], 0)[0])
    table = pa.table([pa.array(fids), pa.array(cells), *(pa.array(C.parent(cells, int(n[1:]))) for n in names[1:]),
                      *attrs.columns(np.where(known, at, 0))], names=[FID, *names, *attrs.names])
    target = out_dir / f"h0={h0}" / f"part-{cells[0]}.parquet"
    target.parent.mkdir(parents=True, exist_ok=True)
    # statistics for the id and cell columns only: readers prune row groups by cell ranges, never by an attribute
    # of cells in cell order (whose min/max span nearly everything); measured on 2M parcel cells with 9 attributes,
    # writing attribute statistics cost 28% of the write
    pq.write_table(table, target, compression="zstd", row_group_size=ROW_GROUP_ROWS, store_schema=False,
                   use_dictionary=[FID, *attrs.names], write_statistics=[FID, *names],
                   column_encoding={n: "DELTA_BINARY_PACKED" for n in names})
    return _Unit(h0, len(cells), duplicates, invalid, int((~known).sum()))


def consolidate(chunk_dirs: list[Path], geoparquet: str, out_dir: Path, settings: HexSettings, *,
                attributes: str | list[str] = "all", chunk_rows: int, workers: int | None = None) -> Consolidated:
    """Write every unit into `out_dir`, `workers` at a time (threads: the sort, the bit arithmetic and the Parquet
    writer release the GIL, and the attribute table is shared; default: the CPUs this process may use), then
    check the product: exact checks on the rows as they are written, and a read-back of the written files
    (footer row counts; parents of a sample, re-derived independently)."""
    attrs = _Attributes(geoparquet, attribute_columns(geoparquet, attributes))
    units = _units(chunk_dirs)
    with ThreadPoolExecutor(max_workers=workers or usable_cpus()) as pool:
        done = list(pool.map(lambda files: _write_unit(files, attrs, out_dir, settings), units))
    result = Consolidated()
    for u in done:
        result.rows_per_h0[u.h0] = result.rows_per_h0.get(u.h0, 0) + u.rows
    dups, invalid, unknown_fids = (sum(getattr(u, k) for u in done) for k in ("duplicates", "invalid", "unknown_fids"))
    seen = attrs.seen
    result.checks = [
        HexCheck("every_feature_has_cells", bool(seen.all()) and unknown_fids == 0,
                 {"features_without_cells": int((~seen).sum()), "rows_with_unknown_fid": unknown_fids,
                  "first_missing": attrs.fids[~seen][:20].tolist()}),
        HexCheck("no_duplicate_cells", dups == 0, {"duplicate_fid_cell_pairs": dups}),
        HexCheck("cell_ids_valid", invalid == 0, {"invalid_rows": invalid}),
        *read_back_checks(out_dir, settings, chunk_rows),
        *hex_check.source_checks(geoparquet, out_dir, settings),
    ]
    return result


def read_back_checks(out_dir: Path, settings: HexSettings, chunk_rows: int) -> list[HexCheck]:
    """Checks on the files as written: row counts from the footers, and the parents of a sample of rows."""
    written = sum(pq.read_metadata(f).num_rows for f in out_dir.glob("h0=*/*.parquet"))
    # overlap mode removes cells two parts of one feature share, so it may end with fewer rows than the chunks
    rows_ok = written == chunk_rows if settings.containment == "center" else written <= chunk_rows
    return [parents_check(out_dir, settings),
            HexCheck("rows_match_chunks", rows_ok, {"written_rows": written, "chunk_rows": chunk_rows})]


def parents_check(out_dir: Path, settings: HexSettings) -> HexCheck:
    """A sample of each file's rows (its first SAMPLE_ROWS): parent columns and h0 folder compared with h3ronpy's
    change_resolution (H3's own rules, not this project's bit arithmetic); and no file holds an h0 column (hive
    readers refuse it next to the folder key)."""
    res, wrong, first, holding, sampled = settings.resolution, 0, [], [], 0
    levels = list(dict.fromkeys((*settings.parents, 0)))  # h0 is a parent too (or among them)
    for f in sorted(out_dir.glob("h0=*/*.parquet")):
        pf = pq.ParquetFile(f)
        if layout.HEX_PARTITION in pf.schema_arrow.names:
            holding.append(f"{f.parent.name}/{f.name}")
        if not pf.metadata.num_row_groups:
            continue
        names = [n for n in (f"h{res}", *(f"h{p}" for p in levels)) if n in pf.schema_arrow.names]
        sample = next(pf.iter_batches(batch_size=SAMPLE_ROWS, columns=names))  # the cell columns only
        cells = np.asarray(sample.column(f"h{res}").to_numpy())
        ok = np.asarray(pa.array(h3ronpy.cells_valid(pa.array(cells), booleanarray=True)).to_numpy(zero_copy_only=False))
        ok = ok.astype(bool)
        valid = pa.array(np.where(ok, cells, cells[ok][0] if ok.any() else 0))  # h3ronpy raises on an invalid id
        for p in levels if ok.any() else ():
            expected = np.asarray(pa.array(h3ronpy.change_resolution(valid, p)).to_numpy())
            if f"h{p}" in sample.column_names:  # h0 too, in a product older than VERSION 4
                ok &= np.asarray(sample.column(f"h{p}").to_numpy()) == expected
            if p == 0:
                ok &= expected == np.uint64(layout.hex_folder_cell(f))
        sampled += len(ok)
        wrong += int((~ok).sum())
        first.extend(cells[~ok][:10].tolist())
    return HexCheck("parents_consistent", not wrong and not holding,
                    {"sampled_rows": sampled, "sampled_rows_with_wrong_parent_or_h0_folder": wrong,
                     "first": first[:10], "files_with_an_h0_column": holding[:10]})
