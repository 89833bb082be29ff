"""Chunk outputs -> `h0=<cell>/part-<group>.parquet`: one file per group cell (see chunk.GROUP_SPAN), rows sorted
by cell, parents computed, the layer's attributes joined on `_cng_fid`; and the product's checks. h0 is the folder
key only, never a column inside the files (layout.HEX_PARTITION).

Memory stays bounded: one group (at most 823,543 distinct cells, times the layer's overlap) is in memory at once.
Cell columns are sorted, so they are delta-encoded (about 10x smaller than plain and faster to write); attributes
are written as dictionary indices into the layer's attribute table, never copied per cell.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import h3
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cng_assets.transforms import layout
from cng_assets.transforms.columns import BBOX, FID, GEOMETRY, output_names
from cng_assets.transforms.hex import cells as C
from cng_assets.transforms.hex.fill import HexSettings

VERSION = "4"  # bump when the consolidated layout changes (4: h0 only in the folder names)
NOT_ATTRIBUTES = {FID, GEOMETRY, BBOX}
ROW_GROUP_ROWS = 131_072
TARGET_ROWS = 2_000_000  # rows per output file, when small groups can be merged
SAMPLE_ROWS = 1000  # rows per file whose parents are re-derived with h3-py after writing


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


def _batches(chunk_dirs: list[Path], res: int) -> list[list[Path]]:
    """Chunk files in runs of consecutive group cells of one h0, up to TARGET_ROWS rows a run (a single bigger
    group stays whole). Group cells in id order cover consecutive cell ids, so runs sort independently."""
    groups = defaultdict(list)
    for d in chunk_dirs:
        for f in sorted(Path(d).glob("g=*.parquet")):
            groups[int(f.name.split("=", 1)[1].split(".", 1)[0])].append(f)
    runs, rows, h0 = [], 0, None
    for key in sorted(groups):
        n = sum(pq.read_metadata(f).num_rows for f in groups[key])
        key_h0 = int(C.parent(np.array([key], np.uint64), 0)[0])
        if not runs or key_h0 != h0 or rows + n > TARGET_ROWS:
            runs.append([])
            rows, h0 = 0, key_h0
        runs[-1].extend(groups[key])
        rows += n
    return runs


def _sort(fids: np.ndarray, cells: np.ndarray, res: int) -> np.ndarray:
    """Order by (cell, fid). Packs both into one uint64 key when they fit (one sort instead of two)."""
    cell_bits = 7 + 3 * res  # base cell + digits: everything else in an index at one resolution is constant
    fid_bits = 64 - cell_bits
    if len(fids) and fids.max() < (1 << fid_bits):
        key = ((cells >> np.uint64(3 * (15 - res))) & np.uint64((1 << cell_bits) - 1)) << np.uint64(fid_bits)
        return np.argsort(key | fids.astype(np.uint64))
    return np.lexsort((fids, cells))


def _attribute(values: pa.Array, used: pa.Array, inverse: pa.Array) -> pa.Array:
    """Per-cell attribute values as indices into the values of the features present (no per-cell copy of the
    values); Arrow cannot write a dictionary holding nulls, so such columns are copied instead."""
    present = values.take(used)
    return present.take(inverse) if present.null_count else pa.DictionaryArray.from_arrays(inverse, present)


def consolidate(chunk_dirs: list[Path], geoparquet: str, out_dir: Path, settings: HexSettings, *,
                attributes: str | list[str] = "all", chunk_rows: int) -> Consolidated:
    """Write every group into `out_dir`, then check the product: exact checks on the rows as they are written,
    and a read-back of the written files (footer row counts; parents of a sample, re-derived with h3-py)."""
    res = settings.resolution
    names = layout.hex_file_columns(res, settings.parents)
    attrs = pq.read_table(geoparquet, columns=[FID, *attribute_columns(geoparquet, attributes)])
    attrs = attrs.take(pc.sort_indices(attrs.column(FID)))
    attr_fids = np.asarray(attrs.column(FID).to_numpy())
    # a layer's own `h8` or `H0` (GeoParquet made elsewhere: ours renames them) must not clash with a cell column
    attr_values = [attrs.column(n).combine_chunks() for n in attrs.column_names[1:]]
    attr_names = list(output_names(attrs.column_names[1:]).values())
    seen = np.zeros(len(attr_fids), dtype=bool)
    dups = invalid = unknown_fids = 0
    result = Consolidated()
    for files in _batches(chunk_dirs, res):
        t = pa.concat_tables([pq.read_table(f) for f in files])
        fids, cells = np.asarray(t.column(FID).to_numpy()), np.asarray(t.column("cell").to_numpy())
        order = _sort(fids, cells, res)
        fids, cells = fids[order], cells[order]
        same = (fids[1:] == fids[:-1]) & (cells[1:] == cells[:-1])
        if settings.containment == "overlap":  # two parts of one feature may share a cell: keep it once
            keep = np.r_[True, ~same]
            fids, cells = fids[keep], cells[keep]
        else:
            dups += int(same.sum())
        invalid += int((~C.valid_at(cells, res)).sum())
        at = np.searchsorted(attr_fids, fids)
        known = (at < len(attr_fids)) & (attr_fids[np.minimum(at, len(attr_fids) - 1)] == fids)
        unknown_fids += int((~known).sum())
        seen[at[known]] = True
        h0 = int(C.parent(cells[:1], 0)[0])
        used, inverse = np.unique(np.minimum(at, len(attr_fids) - 1), return_inverse=True)
        used, inverse = pa.array(used), pa.array(inverse.astype(np.int32))
        table = pa.table([pa.array(fids), pa.array(cells), *(pa.array(C.parent(cells, int(n[1:]))) for n in names[1:]),
                          *(_attribute(values, used, inverse) for values in attr_values)],
                         names=[FID, *names, *attr_names])
        target = out_dir / f"h0={h0}" / f"part-{cells[0]}.parquet"
        target.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, target, compression="zstd", row_group_size=ROW_GROUP_ROWS, store_schema=False,
                       use_dictionary=[FID, *attr_names], column_encoding={n: "DELTA_BINARY_PACKED" for n in names})
        result.rows_per_h0[h0] = result.rows_per_h0.get(h0, 0) + len(cells)
    result.checks = [
        HexCheck("every_feature_has_cells", bool(seen.all()) and unknown_fids == 0,
                 {"features_without_cells": int((~seen).sum()), "rows_with_unknown_fid": unknown_fids,
                  "first_missing": attr_fids[~seen][:20].tolist()}),
        HexCheck("no_duplicate_cells", dups == 0, {"duplicate_fid_cell_pairs": dups}),
        HexCheck("cell_ids_valid", invalid == 0, {"invalid_rows": invalid}),
        *read_back_checks(out_dir, settings, chunk_rows),
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
    """A sample of each file's rows: parent columns and h0 folder compared with h3-py's cell_to_parent; and no file
    holds an h0 column (hive readers refuse it next to the folder key)."""
    res, wrong, holding = settings.resolution, [], []
    for f in sorted(out_dir.glob("h0=*/*.parquet")):
        pf = pq.ParquetFile(f)
        if layout.HEX_PARTITION in pf.schema_arrow.names:
            holding.append(f"{f.parent.name}/{f.name}")
        sample = pf.read_row_group(0).slice(0, SAMPLE_ROWS) if pf.metadata.num_row_groups else None
        if sample is None:
            continue
        folder_h0 = layout.hex_folder_cell(f)
        for row in sample.to_pylist():
            try:
                cell = h3.int_to_str(row[f"h{res}"])
                expected = {f"h{p}": h3.str_to_int(h3.cell_to_parent(cell, p)) for p in (*settings.parents, 0)}
                # h0 is the folder's (a product older than VERSION 4 also holds it in its files)
                ok = expected["h0"] == folder_h0 and all(row.get(k, v) == v for k, v in expected.items())
            except (h3.H3BaseException, ValueError):  # not a cell at all
                ok = False
            if not ok:
                wrong.append(row[f"h{res}"])
    return HexCheck("parents_consistent", not wrong and not holding,
                    {"sampled_rows_with_wrong_parent_or_h0_folder": len(wrong), "first": wrong[:10],
                     "files_with_an_h0_column": holding[:10]})
