"""Polygons -> H3 cells, exactly as centre containment (or overlap) defines them, in bounded memory.

Small parts go to the compiled lattice fill (`lattice.py`), or where it does not apply to h3ronpy's kernel.
Large parts are filled from coarse cells down: a coarse cell whose
hexagon, scaled by SCALE about its centre, lies inside the polygon has every descendant's centre inside (measured:
descendant centres never reach past 1.16x the hexagon for resolution >= 2; the recursion starts at >= 3), so its
descendants are enumerated arithmetically; one disjoint from the polygon is skipped; only cells along the
boundary are refined, and at the target resolution their centres are tested. Output comes in batches.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import h3
import h3ronpy
import numpy as np
import pyarrow as pa
import shapely
from h3ronpy.vector import ContainmentMode, wkb_to_cells

from cng_assets.transforms.hex import cells as C
from cng_assets.transforms.hex.cells import estimate_cells
from cng_assets.transforms.hex.lattice import lattice_fill

SCALE = {"center": 1.5, "overlap": 2.0}
KERNEL_MODE = {"center": ContainmentMode.ContainsCentroid, "overlap": ContainmentMode.Covers}
MIN_ROOT_RES = 3  # below it lon/lat distortion makes the scaled-hexagon bound unsafe
KERNEL_MAX_CELLS = 20_000  # parts estimated above this use the coarse-to-fine fill
BLOCK = 50_000  # frontier cells classified at once


@dataclass(frozen=True)
class HexSettings:
    resolution: int = 10
    parents: tuple[int, ...] = (9, 8, 0)
    containment: str = "center"
    batch_cells: int = 2_000_000  # rows per output batch: bounds memory


def kernel_fill(parts: np.ndarray, res: int, containment: str) -> tuple[np.ndarray, np.ndarray]:
    """(part index, cell) for parts small enough to fill in one go: centre containment on the compiled lattice
    fill where it applies (`lattice.py`), the rest and overlap with h3ronpy's kernel."""
    if containment != "center" or len(parts) == 0:
        return _h3ronpy_fill(parts, res, containment)
    index, cells, left = lattice_fill(parts, res)
    rest = np.flatnonzero(left)
    if len(rest) == 0:
        return index, cells
    k_index, k_cells = _h3ronpy_fill(parts[rest], res, containment)
    return np.concatenate([index, rest[k_index]]), np.concatenate([cells, k_cells])


def _h3ronpy_fill(parts: np.ndarray, res: int, containment: str) -> tuple[np.ndarray, np.ndarray]:
    if len(parts) == 0:
        return np.empty(0, np.int64), np.empty(0, np.uint64)
    lists = wkb_to_cells(pa.array(shapely.to_wkb(parts)), res, containment_mode=KERNEL_MODE[containment])
    lists = pa.array(lists)
    counts = np.asarray(lists.value_lengths().fill_null(0).to_numpy(zero_copy_only=False), dtype=np.int64)
    return np.repeat(np.arange(len(parts)), counts), C.to_u64(lists.flatten())


def root_resolution(part, res: int) -> int:
    """The finest resolution (>= MIN_ROOT_RES) at which the part spans a few dozen cells at most."""
    est = estimate_cells(np.array([part]), res)[0]
    floor = min(res, MIN_ROOT_RES)  # never finer than the target itself (coarse targets, e.g. resolution 2)
    for r in range(res, floor - 1, -1):
        if est / 7 ** (res - r) <= 50:
            return r
    return floor


def cover(part, res: int) -> np.ndarray:
    """Cells at `res` whose scaled hexagons may touch `part`: a cover of its bbox (in slices narrower than 180°,
    which H3 would read as crossing the antimeridian), grown by one ring, plus the pole cells if it reaches one."""
    xmin, ymin, xmax, ymax = part.bounds
    edges = np.linspace(xmin, xmax, max(2, int(np.ceil((xmax - xmin) / 60)) + 1))
    boxes = [shapely.box(a, ymin, b, ymax) if b > a and ymax > ymin else shapely.Point(a, ymin).buffer(1e-9)
             for a, b in zip(edges[:-1], edges[1:])]
    found = C.to_u64(wkb_to_cells(pa.array(shapely.to_wkb(boxes)), res, ContainmentMode.Covers, flatten=True))
    poles = [h3.str_to_int(h3.latlng_to_cell(lat, 0, res)) for lat in (90, -90) if abs(lat - ymax) < 1 or abs(lat - ymin) < 1]
    found = np.unique(np.concatenate([found, np.array(poles, dtype=np.uint64)]))
    return np.unique(C.to_u64(h3ronpy.grid_disk(pa.array(found, pa.uint64()), 1, flatten=True)))


def _wrapped(part):
    """The part plus copies shifted by ±360°, for testing hexagons unwrapped across the antimeridian."""
    xmin, _, xmax, _ = part.bounds
    if xmin > -179 and xmax < 179:
        return part
    shifted = [shapely.transform(part, lambda c, dx=dx: c + np.array([dx, 0.0])) for dx in (-360.0, 360.0)]
    return shapely.union_all([part, *shifted])


def _descendants(cells: np.ndarray, res: int, target: int, batch: int) -> Iterator[np.ndarray]:
    """All descendants at `target`, at most about `batch` at a time."""
    if len(cells) == 0:
        return
    k = target - res
    if 7**k > batch:  # go down part of the way first, so one cell's descendants fit a batch
        step = res + max(1, k - int(np.log(batch) / np.log(7)))
        for i in range(0, len(cells), 64):
            yield from _descendants(C.children(cells[i:i + 64], res, step), step, target, batch)
        return
    per = max(1, batch // 7**k)
    for i in range(0, len(cells), per):
        yield C.children(cells[i:i + per], res, target)


def large_fill(part, res: int, containment: str, roots: np.ndarray | None = None,
               batch: int = 2_000_000) -> Iterator[np.ndarray]:
    """Cells of one polygon, coarse to fine, in batches. `roots` (all one resolution) restricts the fill to their
    descendants: how a huge feature is split across chunks."""
    shapely.prepare(part)
    test = _wrapped(part)
    shapely.prepare(test)
    if roots is None:
        r0 = root_resolution(part, res)
        roots = cover(part, r0)
    else:
        r0 = int(C.resolution(roots[:1])[0])
    stack = [(roots, r0)]
    while stack:
        cells, r = stack.pop()
        if len(cells) > BLOCK:
            stack.extend((cells[i:i + BLOCK], r) for i in range(0, len(cells), BLOCK))
            continue
        if r == res:
            if containment == "center":
                lng, lat = C.centres(cells)
                keep = shapely.contains_xy(part, lng, lat)
            else:
                keep = shapely.intersects(test, C.hexagons(cells)[0])
            if keep.any():
                yield cells[keep]
            continue
        hexes, unreliable = C.hexagons(cells, SCALE[containment])
        inside = shapely.contains(test, hexes) & ~unreliable
        boundary = ~inside & (shapely.intersects(test, hexes) | unreliable)
        yield from _descendants(cells[inside], r, res, batch)
        if boundary.any():
            stack.append((C.children(cells[boundary], r, r + 1), r + 1))
