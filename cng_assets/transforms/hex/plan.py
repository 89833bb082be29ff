"""Chunk planning: split a layer's hex work into at most `max_chunks` balanced, spatially compact chunks.

Work is estimated per feature (cells at the target resolution + vertices), not by row ranges. Features are taken
in file order, which the GeoParquet writer made spatial (Hilbert), so a chunk reads a contiguous run of rows and
writes few h0 partitions. A part too big for one chunk is split by the coarse H3 cells it descends from: every
cell has exactly one ancestor, so the pieces never overlap. Pieces are sized by the cells each root really holds
(sampled) and its boundary, which costs the fill most; units go to chunks as contiguous runs with the heaviest
run as light as it can be. The plan is deterministic for the same input.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import h3
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import shapely

from cng_assets.errors import CngInputError
from cng_assets.transforms.hex import cells as C
from cng_assets.transforms.hex import fill

VERSION = "2"  # bump when plans change: chunks made from older plans become stale
MAX_CHUNKS = 200  # the cluster's limit on pods per layer; never above it
# One vertex a chunk reads costs about as much as four interior output cells: 0.16 us of CPU per vertex against
# 0.033-0.042 us per interior cell (bench/chunk_balance.py: the giant polygon's pieces at res 10, 20k against 1.5 M
# vertices; the kernel fill of small parts costs ~1 us per cell, with 0.09 vertices per cell for parcels).
VERTEX_WEIGHT = 4.0
# On disk per output cell, rounded up: 0.98 B measured for coutwildrnp at resolution 9 with every attribute
# (ZSTD, sorted cells); the chunk files, which exist until consolidation, take about as much again.
BYTES_PER_CELL = 1.5
# A split part's work, in cells: one boundary edge at the target resolution costs the coarse-to-fine fill about as
# much as 750 interior cells (bench/chunk_balance.py, giant polygon at res 10: pieces of equal cell counts took
# 0.21 s with no boundary, up to 0.72 s with some; 2.5 s of refinement for 97k edges against 0.033 us per cell).
EDGE_WEIGHT = 750.0
SAMPLE_LEVELS = 3  # a split part's cells are counted from 7**3 sample centres per root

PLAN_SCHEMA = pa.schema([
    ("chunk", pa.int32()), ("row", pa.int64()), ("_cng_fid", pa.int64()),
    ("parts", pa.list_(pa.int32())),  # null: every part of the feature
    ("roots", pa.list_(pa.uint64())),  # null: no restriction; else only descendants of these cells
    ("est_cells", pa.float64()), ("vertices", pa.int64()),
])


def _batches(geoparquet: str):
    """(first row, fids, parts, part -> feature index) per batch of the layer, in file order."""
    row = 0
    # pre_buffer off: with it, iter_batches keeps every row group read so far until the loop ends
    for batch in pq.ParquetFile(geoparquet, pre_buffer=False).iter_batches(columns=["_cng_fid", "geometry"], batch_size=8192):
        geoms = shapely.from_wkb(batch.column("geometry").to_numpy(zero_copy_only=False))
        parts, index = shapely.get_parts(geoms, return_index=True)
        yield row, batch.column("_cng_fid").to_numpy(), parts, index
        row += len(geoms)


def plan_layer(geoparquet: str, res: int, *, max_chunks: int = MAX_CHUNKS,
               target_cells: float = 20_000_000) -> pa.Table:
    """One row per unit of work, each assigned to a chunk 0..n-1. Two streaming passes: estimates, then splits."""
    if not 1 <= max_chunks <= MAX_CHUNKS:
        raise ValueError(f"max_chunks must be 1..{MAX_CHUNKS}, got {max_chunks}")
    fids, cells, vertices = [], [], []
    for _, batch_fids, parts, index in _batches(geoparquet):
        n_features = len(batch_fids)
        fids.append(batch_fids)
        cells.append(np.bincount(index, fill.estimate_cells(parts, res), minlength=n_features))
        vertices.append(np.bincount(index, shapely.get_num_coordinates(parts), minlength=n_features).astype(np.int64))
    fids, cells, vertices = (np.concatenate(x) if x else np.zeros(0) for x in (fids, cells, vertices))
    work = cells + VERTEX_WEIGHT * vertices
    n = int(min(max_chunks, max(1, np.ceil(work.sum() / target_cells))))
    per = max(work.sum() / n, 1.0)

    units = {i: [{"row": i, "_cng_fid": int(fids[i]), "parts": None, "roots": None, "est_cells": float(cells[i]),
                  "vertices": int(vertices[i])}] for i in range(len(fids))}
    heavy = set(np.flatnonzero(work > per).tolist())
    if heavy:
        for first, _, parts, index in _batches(geoparquet):
            for i in heavy & set(range(first, first + int(index.max(initial=-1)) + 1)):
                units[i] = _split(units[i][0], parts[index == i - first], res, per)
    planned = [u for i in range(len(fids)) for u in units[i]]
    work = np.array([u.get("work", u["est_cells"] + VERTEX_WEIGHT * u["vertices"]) for u in planned])
    # pieces add their part's vertices each: as many chunks as pieces of up to `per` need, so none shares one
    chunks = _partition(work, int(min(max_chunks, max(n, np.ceil(work.sum() / per - 1e-9)))))
    return pa.table({"chunk": pa.array(chunks, pa.int32()),
                     **{k: pa.array([u[k] for u in planned], PLAN_SCHEMA.field(k).type) for k in PLAN_SCHEMA.names[1:]}},
                    schema=PLAN_SCHEMA)


def _split(unit: dict, parts: np.ndarray, res: int, per: float) -> list[dict]:
    """A feature heavier than one chunk: each heavy part becomes pieces by root cells; the rest stay together."""
    part_cells = fill.estimate_cells(parts, res)
    part_work = part_cells + VERTEX_WEIGHT * shapely.get_num_coordinates(parts)
    heavy = np.flatnonzero(part_work > per / 2)
    out = []
    for i in heavy:
        # every piece reads, parses and indexes the whole part: its vertices count in full, once per piece
        vertex_work = VERTEX_WEIGHT * shapely.get_num_coordinates(parts[i])
        room = max(per - vertex_work, per / 2)  # for cells, per piece: more pieces would mostly add vertex work
        roots, cells, edges = _roots(parts[i], res, int(np.ceil(part_cells[i] / room)))
        work = cells + edges * EDGE_WEIGHT
        group = _partition(work, max(1, int(np.ceil(work.sum() / room))))
        for g in range(int(group.max()) + 1):
            mine = group == g
            out.append({**unit, "parts": [int(i)], "roots": roots[mine].tolist(), "est_cells": float(cells[mine].sum()),
                        "vertices": int(shapely.get_num_coordinates(parts[i])), "work": float(work[mine].sum()) + vertex_work})
    rest = np.setdiff1d(np.arange(len(parts)), heavy)
    if len(rest):
        out.append({**unit, "parts": rest.tolist(), "roots": None, "est_cells": float(part_cells[rest].sum()),
                    "vertices": int(shapely.get_num_coordinates(parts[rest]).sum())})
    return out


def _roots(part, res: int, pieces: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Root cells to split a part into about `pieces`, with the cells and boundary edges under each. Cells: the
    centres of the roots' descendants SAMPLE_LEVELS down that lie inside the part, times the cells each stands for
    (a root's share of the part's roots is no measure: along the boundary most of a root lies outside)."""
    root_res = fill.root_resolution(part, res)
    roots = fill.cover(part, root_res)
    while len(roots) < 8 * pieces and root_res < res:  # enough roots to balance the pieces
        root_res += 1
        roots = fill.cover(part, root_res)
    mid = min(res, root_res + SAMPLE_LEVELS)
    shapely.prepare(part)
    samples = C.children(roots, root_res, mid)
    lng, lat = C.centres(samples)
    inside = C.parent(samples[shapely.contains_xy(part, lng, lat)], root_res)
    cells = np.bincount(np.searchsorted(roots, inside), minlength=len(roots)) * 7.0 ** (res - mid)
    return roots, cells, _edges(part, roots, root_res) / h3.average_hexagon_edge_length(res, "km")


def _edges(part, roots: np.ndarray, root_res: int) -> np.ndarray:
    """Kilometres of the part's boundary under each root, each segment counted where it starts (segments are first
    cut shorter than a root's edge)."""
    step = np.degrees(h3.average_hexagon_edge_length(root_res, "km") / 6371)
    xy, ring = shapely.get_coordinates(shapely.get_parts(shapely.boundary(shapely.segmentize(part, step))),
                                       return_index=True)
    start = np.flatnonzero(ring[1:] == ring[:-1])
    km = np.hypot(np.diff(xy[:, 0])[start] * np.cos(np.radians(xy[start, 1])) * C.KM_PER_DEG_LON,
                  np.diff(xy[:, 1])[start] * C.KM_PER_DEG_LAT)
    at = C.points_to_cells(xy[start, 0], xy[start, 1], root_res)
    hit = np.minimum(np.searchsorted(roots, at), len(roots) - 1)
    return np.bincount(hit, km * (roots[hit] == at), minlength=len(roots))


def _partition(work: np.ndarray, n: int) -> np.ndarray:
    """Group per unit: at most `n` contiguous runs (spatial order is kept) whose heaviest is as light as it can
    be, so two heavy neighbours share a group only when no cut would keep both lighter. Greedy filling to a
    capacity, with the least capacity that fits in `n` found by bisection: greedy fits `n` at total/n + max."""
    if not len(work):
        return np.zeros(0, np.int64)
    ends = np.cumsum(work)

    def starts(capacity: float) -> list[int]:
        out = [0]
        while True:
            base = ends[out[-1] - 1] if out[-1] else 0.0
            nxt = max(out[-1] + 1, int(np.searchsorted(ends, base + capacity, side="right")))
            if nxt >= len(work) or len(out) > n:
                return out
            out.append(nxt)

    lo, hi = max(ends[-1] / n, float(work.max())), ends[-1] / n + float(work.max())
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if len(starts(mid)) <= n else (mid, hi)
    cuts = starts(hi)
    return np.repeat(np.arange(len(cuts)), np.diff(np.r_[cuts, len(work)]))


def plan_digest(plan: pa.Table) -> str:
    """Identifies a plan, so consolidation can refuse chunk outputs made from another one."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, plan.schema) as writer:
        writer.write_table(plan)
    return hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()[:16]


@dataclass(frozen=True)
class PlanEstimate:
    cells: int
    bytes: int
    chunks: int

    def __str__(self) -> str:
        return f"about {_si(self.cells)} cells, {_si(self.bytes)}B on disk, {self.chunks} chunk{'s' * (self.chunks != 1)}"


def _si(n: float) -> str:
    for unit in ("", "k", "M", "G", "T"):
        if abs(n) < 1000:
            return f"{n:.3g} {unit}".rstrip()
        n /= 1000
    return f"{n:.3g} P"


def estimate(plan: pa.Table) -> PlanEstimate:
    """The work a plan holds, from its per-unit cell estimates (shown before hexing, and checked against a budget)."""
    cells = float(pc.sum(plan.column("est_cells")).as_py() or 0)
    return PlanEstimate(round(cells), round(cells * BYTES_PER_CELL), chunk_count(plan))


def chunk_count(plan: pa.Table) -> int:
    return int(pc.max(plan.column("chunk")).as_py() or 0) + 1 if plan.num_rows else 1


def check_budget(est: PlanEstimate, max_cells: int, res: int) -> None:
    """Refuse a plan above the layer's cell budget before any chunk runs, saying what it would take."""
    if est.cells > max_cells:
        raise CngInputError(
            f"the hex plan at resolution {res} is {est}, above the budget of {max_cells:,} cells",
            hint=f"use a coarser `h3.resolution` (each step down makes about 7x fewer cells), or, if the layer "
                 f"really needs it, raise `h3.max_cells` in the catalog entry (`--max-cells` on `cng-assets run` "
                 f"and `cng-assets hex`) to at least {est.cells:,}")
