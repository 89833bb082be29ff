"""Polygons -> H3 cells, exactly as centre containment (or overlap) defines them, in bounded memory.

Small parts go to the compiled lattice fill (`lattice.py`), or where it does not apply to h3ronpy's kernel.
Large parts are filled from coarse cells down. Every descendant's centre lies within a spherical cap around its
coarse cell's centre (radius: REACH times the circumradius bound, `cells.circumradius_bound`; measured, they
reach 1.02 of it), so the lon/lat box around that cap decides the whole cell: a box no edge of the polygon touches
(`edges.py`) lies inside or outside, as its centre does, and an inside cell's descendants are enumerated
arithmetically; only cells whose box an edge touches are refined, and at the target resolution their centres
are tested. Output comes in batches.
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
from cng_assets.transforms.hex.edges import EdgeGrid
from cng_assets.transforms.hex.lattice import lattice_fill

REACH = {"center": 1.3, "overlap": 2.0}  # cap radius / circumradius bound; overlap adds the cells' own extent (<1.4)
KERNEL_MODE = {"center": ContainmentMode.ContainsCentroid, "overlap": ContainmentMode.Covers}
MIN_ROOT_RES = 3  # coarser roots gain nothing: their caps are tens of degrees wide, so nearly all are refined
POLAR = 89.0  # a cap reaching this latitude has no useful lon/lat box: refined, until the centre test
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


def cap_boxes(cells: np.ndarray, res: int, reach: float):
    """Per cell: the lon/lat box (x0, y0, x1, y1) around the cap of `reach` times the circumradius bound about its
    centre (unwrapped: it may pass ±180), its centre, and whether the cap comes near a pole (no useful box)."""
    lng, lat = C.centres(cells)
    a = reach * C.circumradius_bound(res)
    dlat = np.degrees(a)
    polar = np.abs(lat) + dlat >= POLAR
    dlng = np.degrees(np.arcsin(np.minimum(1.0, np.sin(a) / np.cos(np.radians(np.where(polar, 0.0, lat))))))
    return (lng - dlng, lat - dlat, lng + dlng, lat + dlat), (lng, lat), polar


def classify(cells: np.ndarray, res: int, reach: float, test, grid: EdgeGrid) -> tuple[np.ndarray, np.ndarray]:
    """(inside, boundary) masks of cells at `res`: every descendant's centre inside `test` (unwrapped), or some
    may be. The rest have no descendant centre in it."""
    box, (lng, lat), polar = cap_boxes(cells, res, reach)
    boundary = grid.touched(*box) | polar
    inside = np.zeros(len(cells), bool)
    clear = np.flatnonzero(~boundary)
    inside[clear] = shapely.contains_xy(test, lng[clear], lat[clear])
    return inside, boundary


def _clip(roots: np.ndarray, res: int, reach: float) -> tuple[float, float, float, float] | None:
    """A box holding the cap boxes of every descendant of `roots`: their centres lie within 1.02 bounds of a
    root's centre and their caps within reach/sqrt(7) more, so a cap of 2 x reach about each root holds them. None
    (index every edge) near a pole, or across ±180, where a descendant's centre may come out on the other side."""
    (x0, y0, x1, y1), _, polar = cap_boxes(roots, res, 2 * reach)
    if polar.any() or x0.min() < -180 or x1.max() > 180:
        return None
    return x0.min(), y0.min(), x1.max(), y1.max()


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
        grid = EdgeGrid(test)
    else:  # a piece of a split feature: only the edges near its roots matter
        r0 = int(C.resolution(roots[:1])[0])
        grid = EdgeGrid(test, _clip(roots, r0, REACH[containment]))
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
                keep = shapely.intersects(test, C.hexagons(cells))
            if keep.any():
                yield cells[keep]
            continue
        inside, boundary = classify(cells, r, REACH[containment], test, grid)
        yield from _descendants(cells[inside], r, res, batch)
        if boundary.any():
            stack.append((C.children(cells[boundary], r, r + 1), r + 1))
