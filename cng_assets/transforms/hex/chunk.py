"""Run one chunk of a hex plan: its features' cells, written as `(_cng_fid, cell)` rows sorted by cell in
`g=<cell>.<n>.arrow` files (runs.py), one per group cell (a coarse ancestor), for consolidation to merge group by
group.

Memory stays bounded: the chunk reads only the row groups it needs, cells come from the fill in batches, and
at most `batch_cells` rows are buffered before they are written.
"""

from __future__ import annotations

import json
import resource
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import shapely

from cng_assets.transforms.columns import FID
from cng_assets.transforms.hex import cells as C
from cng_assets.transforms.hex import fill, runs
from cng_assets.transforms.hex.fill import HexSettings

VERSION = "2"  # the fill engine and chunk output: bump when either could differ (2: sorted Arrow IPC runs)
MARKER = "_chunk.json"  # written last: which plan the chunk was made from, its stats and its files' rows


GROUP_SPAN = 7  # a group cell has at most 7**7 (823,543) descendants: what consolidation sorts at once
CHUNK_SCHEMA = pa.schema([(FID, pa.int64()), ("cell", pa.uint64())])


def group_resolution(settings: HexSettings) -> int:
    return max(0, settings.resolution - GROUP_SPAN)


@dataclass
class ChunkStats:
    features: int = 0
    parts: int = 0
    cells: int = 0
    representative_cells: int = 0  # parts with no cell centre inside, given the cell of a point on them
    groups: int = 0
    seconds: float = 0.0
    peak_rss_mib: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


class _GroupWriters:
    """Buffers (fid, cell) rows; each flush sorts them by (cell, fid) and appends one sorted run (a record batch)
    per group cell to `g=<cell>.<n>.arrow`. At most MAX_OPEN files stay open (an IPC writer holds only its file
    and footer index, so many can: a national layer touches ~1,000 res-3 groups, and every closed-and-reopened group
    is one more object on S3); a group written again after its file was closed gets a new file. `files` keeps every
    file's rows, for the marker."""

    MAX_OPEN = max(64, min(2048, resource.getrlimit(resource.RLIMIT_NOFILE)[0] // 2))  # half the descriptors at most

    def __init__(self, out_dir: Path, settings: HexSettings):
        self.out_dir, self.res, self.flush_rows = out_dir, settings.resolution, settings.batch_cells
        self.group_res = group_resolution(settings)
        self.writers: OrderedDict[str, pa.ipc.RecordBatchFileWriter] = OrderedDict()
        self.opened: dict[int, int] = {}  # files so far per group cell
        self.files: dict[str, int] = {}
        self.pending: list[tuple[np.ndarray, np.ndarray]] = []
        self.buffered = self.rows = 0

    def write(self, fids: np.ndarray, cells: np.ndarray) -> None:
        self.pending.append((np.broadcast_to(np.asarray(fids, np.int64), cells.shape), cells))
        self.buffered += len(cells)
        if self.buffered >= self.flush_rows:
            self.flush()

    def flush(self) -> None:
        if not self.buffered:
            return
        fids, cells = C.sort_pairs(np.concatenate([f for f, _ in self.pending]),
                                   np.concatenate([c for _, c in self.pending]), self.res)
        self.pending, self.buffered = [], 0
        groups = C.parent(cells, self.group_res)  # sorted cells: each group is one run
        cut = np.flatnonzero(groups[1:] != groups[:-1]) + 1
        for lo, hi in zip(np.r_[0, cut], np.r_[cut, len(groups)]):
            name = self._writer(int(groups[lo]))
            self.writers[name].write_table(pa.table([fids[lo:hi], cells[lo:hi]], schema=CHUNK_SCHEMA))
            self.files[name] += int(hi - lo)
        self.rows += len(cells)

    def _writer(self, key: int) -> str:
        name = _file_name(key, self.opened.get(key, 0) - 1)  # the group's latest file, if it is still open
        if name in self.writers:
            self.writers.move_to_end(name)
            return name
        if len(self.writers) >= self.MAX_OPEN:
            self.writers.popitem(last=False)[1].close()
        name = _file_name(key, self.opened.get(key, 0))
        self.opened[key] = self.opened.get(key, 0) + 1
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.writers[name] = runs.open_writer(self.out_dir / name, CHUNK_SCHEMA)
        self.files[name] = 0
        return name

    def close(self) -> None:
        self.flush()
        for w in self.writers.values():
            w.close()


def _file_name(group: int, n: int) -> str:
    return f"g={group}.{n}.arrow"


def files(chunk_dir: Path) -> list[tuple[int, Path, int]]:
    """(group cell, path, rows) of every file the chunk wrote, from its marker."""
    listed = json.loads((Path(chunk_dir) / MARKER).read_text())["files"]
    return [(int(name.split("=", 1)[1].split(".", 1)[0]), Path(chunk_dir) / name, rows) for name, rows in listed.items()]


def _read_rows(geoparquet: str | BinaryIO, rows: np.ndarray) -> dict[int, object]:
    """Geometries of the given file rows, reading only the row groups that hold them (range reads, given a file
    opened on S3)."""
    pf = pq.ParquetFile(geoparquet)
    sizes = [pf.metadata.row_group(i).num_rows for i in range(pf.metadata.num_row_groups)]
    starts = np.concatenate([[0], np.cumsum(sizes)])
    wanted = np.unique(np.searchsorted(starts, rows, side="right") - 1)
    out = {}
    for g in wanted:
        table = pf.read_row_group(int(g), columns=["geometry"])
        geoms = shapely.from_wkb(table.column("geometry").to_numpy(zero_copy_only=False))
        for r in rows[(rows >= starts[g]) & (rows < starts[g + 1])]:
            out[int(r)] = geoms[r - starts[g]]
    return out


def run_chunk(geoparquet: str | BinaryIO, units: pa.Table, settings: HexSettings, out_dir: str | Path,
              plan_digest: str = "") -> ChunkStats:
    """Fill every unit of one chunk (rows of the plan) into `out_dir`, then write the marker naming the plan.
    A chunk with no units writes only the marker."""
    start = time.time()
    out_dir = Path(out_dir)
    res, mode = settings.resolution, settings.containment
    stats = ChunkStats(features=len(set(units.column(FID).to_pylist())))
    writers = _GroupWriters(out_dir, settings)
    rows = np.asarray(units.column("row").to_numpy())
    fids = np.asarray(units.column(FID).to_numpy())
    by_row = _read_rows(geoparquet, rows)
    features = np.array([by_row[r] for r in rows], dtype=object)
    has_roots = np.asarray(units.column("roots").is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    part_lists = units.column("parts").to_pylist()

    for i in np.flatnonzero(has_roots):  # a piece of a huge part: only the descendants of its roots
        part = shapely.get_parts(features[i])[part_lists[i][0]]
        roots = np.array(units.column("roots")[int(i)].as_py(), np.uint64)
        for batch in fill.large_fill(part, res, mode, roots, settings.batch_cells):
            writers.write(fids[i], batch)
        stats.parts += 1

    whole = np.flatnonzero(~has_roots)
    parts, index = shapely.get_parts(features[whole], return_index=True)
    part_no = np.arange(len(index)) - np.searchsorted(index, index)
    listed = np.ones(len(index), dtype=bool)
    for j in [j for j in range(len(whole)) if part_lists[whole[j]] is not None]:  # the rest of a split feature
        mine = index == j
        listed[mine] = np.isin(part_no[mine], part_lists[whole[j]])
    parts, owner = parts[listed], whole[index[listed]]  # owner: the unit each part belongs to
    stats.parts += len(parts)
    bounds = shapely.bounds(parts) if len(parts) else np.zeros((0, 4))
    large = (fill.estimate_cells(parts, res) > fill.KERNEL_MAX_CELLS) | (bounds[:, 2] - bounds[:, 0] > 180)
    empty_checks = []  # (fid, feature, part) for parts that may hold no cell centre
    for k in np.flatnonzero(large):
        n = 0
        for batch in fill.large_fill(parts[k], res, mode, batch=settings.batch_cells):
            writers.write(fids[owner[k]], batch)
            n += len(batch)
        if n == 0:
            empty_checks.append((fids[owner[k]], features[owner[k]], parts[k]))
    small = np.flatnonzero(~large)
    _write_small(parts[small], fids[owner[small]], features[owner[small]], settings, writers, empty_checks)
    stats.representative_cells = _write_representatives(empty_checks, settings, writers)
    writers.close()
    stats.cells = writers.rows
    stats.groups = len(writers.opened)
    stats.seconds = round(time.time() - start, 3)
    stats.peak_rss_mib = _peak_rss_mib()
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MARKER).write_text(json.dumps({"plan": plan_digest, "version": VERSION, **stats.to_dict(),
                                              "files": writers.files}))
    return stats


def _peak_rss_mib() -> float:
    """This process's peak resident memory (a chunk pod's, on the cluster). VmHWM starts afresh with the process
    image; ru_maxrss would carry the parent's peak over through fork and exec."""
    try:
        with open("/proc/self/status") as f:
            return round(int(next(x for x in f if x.startswith("VmHWM")).split()[1]) / 1024, 1)
    except (OSError, StopIteration):
        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def read_marker(chunk_dir: Path, plan_digest: str) -> dict | None:
    """The chunk's marker, or None when there is none, or the chunk was made from another plan or by another VERSION
    of this module (whose files consolidation cannot read)."""
    path = Path(chunk_dir) / MARKER
    marker = json.loads(path.read_text()) if path.exists() else None
    current = marker is not None and (marker["plan"], marker.get("version")) == (plan_digest, VERSION)
    return marker if current else None


def _write_small(parts: np.ndarray, fids: np.ndarray, features: np.ndarray, settings: HexSettings,
                 writers: _GroupWriters, empty_checks: list) -> None:
    """Kernel fill in groups whose estimated output fits one batch."""
    if not len(parts):
        return
    est = np.maximum(fill.estimate_cells(parts, settings.resolution), 1)
    group = np.floor(np.cumsum(est) / settings.batch_cells).astype(np.int64)
    for g in np.unique(group):
        idx = np.flatnonzero(group == g)
        part_index, cells = fill.kernel_fill(parts[idx], settings.resolution, settings.containment)
        batch_fids = fids[idx][part_index]
        if settings.containment == "overlap":  # neighbouring parts of one feature can share a cell
            pairs = np.unique(np.column_stack([batch_fids.astype(np.uint64), cells]), axis=0)
            batch_fids, cells = pairs[:, 0].astype(np.int64), pairs[:, 1]
        writers.write(batch_fids, cells)
        filled = np.zeros(len(idx), bool)
        filled[part_index] = True
        for i in np.flatnonzero(~filled):
            empty_checks.append((fids[idx[i]], features[idx[i]], parts[idx[i]]))


def _write_representatives(empty_checks: list, settings: HexSettings, writers: _GroupWriters) -> int:
    """No part is lost: a part with no cell centre inside gets the cell of a point on its surface, unless that
    cell's centre lies in another part of the feature (then that part already produced it)."""
    if not empty_checks:
        return 0
    fids = np.array([f for f, _, _ in empty_checks], np.int64)
    features = np.array([g for _, g, _ in empty_checks], dtype=object)
    points = shapely.point_on_surface(np.array([p for _, _, p in empty_checks], dtype=object))
    cells = C.points_to_cells(shapely.get_x(points), shapely.get_y(points), settings.resolution)
    lng, lat = C.centres(cells)
    keep = ~shapely.contains_xy(features, lng, lat)
    pairs = np.unique(np.column_stack([fids[keep].astype(np.uint64), cells[keep]]), axis=0)
    writers.write(pairs[:, 0].astype(np.int64), pairs[:, 1])
    return len(pairs)
