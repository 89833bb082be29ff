"""Run one chunk of a hex plan: its features' cells with parents, written as `h0=<cell>/part.parquet` files.

Memory stays bounded: the chunk reads only the row groups it needs, cells come from the fill in batches, and
each batch is written out before the next is made.
"""

from __future__ import annotations

import json
import resource
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import shapely

from cng_assets.transforms.hex import cells as C
from cng_assets.transforms.hex import fill
from cng_assets.transforms.hex.fill import HexSettings

VERSION = "1"  # the fill engine and chunk output: bump when cells could differ
FID = "_cng_fid"
MARKER = "_chunk.json"  # written last: which plan the chunk was made from, and its stats


def hex_schema(settings: HexSettings) -> pa.Schema:
    return pa.schema([(FID, pa.int64())] + [(f"h{r}", pa.uint64()) for r in (settings.resolution, *settings.parents)])


@dataclass
class ChunkStats:
    features: int = 0
    parts: int = 0
    cells: int = 0
    representative_cells: int = 0  # parts with no cell centre inside, given the cell of a point on them
    h0_partitions: int = 0
    seconds: float = 0.0
    peak_rss_mib: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


class _H0Writers:
    """One open Parquet writer per h0 cell; rows get their parents here."""

    def __init__(self, out_dir: Path, settings: HexSettings):
        self.out_dir, self.settings, self.schema = out_dir, settings, hex_schema(settings)
        self.writers: dict[int, pq.ParquetWriter] = {}
        self.rows = 0

    def write(self, fids: np.ndarray, cells: np.ndarray) -> None:
        if len(cells) == 0:
            return
        cols = [fids.astype(np.int64), cells] + [C.parent(cells, p) for p in self.settings.parents]
        h0 = C.parent(cells, 0)
        order = np.argsort(h0, kind="stable")
        h0 = h0[order]
        bounds = np.flatnonzero(np.diff(h0)) + 1
        for lo, hi in zip(np.r_[0, bounds], np.r_[bounds, len(h0)]):
            key = int(h0[lo])
            if key not in self.writers:
                path = self.out_dir / f"h0={key}" / "part.parquet"
                path.parent.mkdir(parents=True, exist_ok=True)
                self.writers[key] = pq.ParquetWriter(path, self.schema, compression="zstd")
            idx = order[lo:hi]
            self.writers[key].write_table(pa.table([pa.array(c[idx]) for c in cols], schema=self.schema))
        self.rows += len(cells)

    def close(self) -> None:
        for w in self.writers.values():
            w.close()


def _read_rows(geoparquet: str, rows: np.ndarray) -> dict[int, object]:
    """Geometries of the given file rows, reading only the row groups that hold them."""
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


def run_chunk(geoparquet: str, units: pa.Table, settings: HexSettings, out_dir: str | Path,
              plan_digest: str = "") -> ChunkStats:
    """Fill every unit of one chunk (rows of the plan) into `out_dir`, then write the marker naming the plan.
    A chunk with no units writes only the marker."""
    start = time.time()
    out_dir = Path(out_dir)
    res, mode = settings.resolution, settings.containment
    stats = ChunkStats(features=len(set(units.column(FID).to_pylist())))
    writers = _H0Writers(out_dir, settings)
    geoms = _read_rows(geoparquet, np.asarray(units.column("row").to_numpy()))
    small_parts, small_fids, small_units = [], [], []
    empty_checks = []  # (fid, feature geometry, part) for parts that may hold no cell centre
    for u in units.to_pylist():
        feature = geoms[u["row"]]
        parts = shapely.get_parts(feature)
        parts = parts[u["parts"]] if u["parts"] is not None else parts
        stats.parts += len(parts)
        if u["roots"] is not None:  # a piece of a huge part: only the descendants of its roots
            for batch in fill.large_fill(parts[0], res, mode, np.array(u["roots"], np.uint64), settings.batch_cells):
                writers.write(np.full(len(batch), u[FID]), batch)
            continue
        est = fill.estimate_cells(parts, res)
        wide = (shapely.bounds(parts)[:, 2] - shapely.bounds(parts)[:, 0]) > 180
        for part, e, w in zip(parts, est, wide):
            if e > fill.KERNEL_MAX_CELLS or w:
                n = 0
                for batch in fill.large_fill(part, res, mode, batch=settings.batch_cells):
                    writers.write(np.full(len(batch), u[FID]), batch)
                    n += len(batch)
                if n == 0:
                    empty_checks.append((u[FID], feature, part))
            else:
                small_parts.append(part)
                small_fids.append(u[FID])
                small_units.append(feature)
    _write_small(small_parts, small_fids, small_units, settings, writers, empty_checks)
    stats.representative_cells = _write_representatives(empty_checks, settings, writers)
    writers.close()
    stats.cells = writers.rows
    stats.h0_partitions = len(writers.writers)
    stats.seconds = round(time.time() - start, 3)
    stats.peak_rss_mib = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MARKER).write_text(json.dumps({"plan": plan_digest, **stats.to_dict()}))
    return stats


def read_marker(chunk_dir: Path) -> dict | None:
    path = Path(chunk_dir) / MARKER
    return json.loads(path.read_text()) if path.exists() else None


def _write_small(parts, fids, features, settings: HexSettings, writers: _H0Writers, empty_checks: list) -> None:
    """Kernel fill in groups whose estimated output fits one batch."""
    if not parts:
        return
    parts, fids = np.array(parts, dtype=object), np.array(fids, dtype=np.int64)
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
        for i in np.setdiff1d(np.arange(len(idx)), part_index):
            empty_checks.append((fids[idx[i]], features[idx[i]], parts[idx[i]]))


def _write_representatives(empty_checks: list, settings: HexSettings, writers: _H0Writers) -> int:
    """No part is lost: a part with no cell centre inside gets the cell of a point on its surface, unless that
    cell's centre lies in another part of the feature (then that part already produced it)."""
    seen: set[tuple[int, int]] = set()
    for fid, feature, part in empty_checks:
        cell = fill.representative_cell(part, settings.resolution)
        lng, lat = C.centres(np.array([cell], np.uint64))
        if (fid, cell) in seen or shapely.contains_xy(feature, lng[0], lat[0]):
            continue
        seen.add((fid, cell))
        writers.write(np.array([fid]), np.array([cell], np.uint64))
    return len(seen)
