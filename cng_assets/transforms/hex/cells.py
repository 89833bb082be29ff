"""Vectorised H3 index arithmetic on uint64 arrays (the bit layout is H3's public spec), plus the few geometric
primitives the fill needs, from h3ronpy.

Layout: bits 59-62 mode (1 = cell), 52-55 resolution, 45-51 base cell, then 15 three-bit digits (digit of
resolution i at bits 3*(15-i)); digits finer than the resolution are 7.
"""

from __future__ import annotations

import h3
import numpy as np
import pyarrow as pa
import shapely
from h3ronpy.vector import cells_to_coordinates, cells_to_wkb_polygons, coordinates_to_cells

U = np.uint64
RES_SHIFT, RES_MASK = U(52), U(0xF) << U(52)
BASE_SHIFT = U(45)
MODE_SHIFT = U(59)
PENTAGON_BASE_CELLS = np.array([4, 14, 24, 38, 49, 58, 63, 72, 83, 97, 107, 117], dtype=np.uint64)
KM_PER_DEG_LON, KM_PER_DEG_LAT = 111.32, 110.57  # at the equator
KM2_PER_DEG2 = KM_PER_DEG_LON * KM_PER_DEG_LAT
RES0_GNOMONIC = 0.38196601125010500003  # H3's res-0 grid unit in a face's gnomonic plane (unit sphere): RES0_U_GNOMONIC


def _digit_bits(res: int) -> U:
    """Mask of all digits finer than `res`."""
    return U((1 << (3 * (15 - res))) - 1)


def resolution(cells: np.ndarray) -> np.ndarray:
    return ((cells & RES_MASK) >> RES_SHIFT).astype(np.int8)


def parent(cells: np.ndarray, res: int) -> np.ndarray:
    """Parent at `res` (cells must be at res or finer): set the resolution, fill the finer digits with 7."""
    return (cells & ~RES_MASK) | (U(res) << RES_SHIFT) | _digit_bits(res)


def base_cell(cells: np.ndarray) -> np.ndarray:
    return (cells >> BASE_SHIFT) & U(0x7F)


def centre_child(cells: np.ndarray, res: int, child_res: int) -> np.ndarray:
    """The descendant at `child_res` of each cell at `res` whose digits res+1..child_res are all zero."""
    return (cells & ~RES_MASK & ~(_digit_bits(res) ^ _digit_bits(child_res))) | (U(child_res) << RES_SHIFT)


def is_pentagon(cells: np.ndarray, res: int) -> np.ndarray:
    """For cells all at `res`: a pentagon has a pentagon base cell and only zero digits."""
    digits = (cells >> U(3 * (15 - res))) & U((1 << (3 * res)) - 1)
    return np.isin(base_cell(cells), PENTAGON_BASE_CELLS) & (digits == U(0))


_OFFSETS: dict[tuple[int, int], np.ndarray] = {}


def _offsets(res: int, child_res: int) -> np.ndarray:
    """Every digit combination for resolutions res+1..child_res, as values to add to a cleared index."""
    key = (res, child_res)
    if key not in _OFFSETS:
        out = np.zeros(1, dtype=np.uint64)
        for r in range(res + 1, child_res + 1):
            out = (out[:, None] + (np.arange(7, dtype=np.uint64) << U(3 * (15 - r)))[None, :]).ravel()
        _OFFSETS[key] = out
    return _OFFSETS[key]


def children(cells: np.ndarray, res: int, child_res: int) -> np.ndarray:
    """All descendants at `child_res` of `cells` (all at `res`), in order. Pentagons skip their deleted digit."""
    if child_res == res or len(cells) == 0:
        return cells.copy()
    cleared = centre_child(cells, res, child_res)
    penta = is_pentagon(cells, res)
    out = (cleared[~penta, None] + _offsets(res, child_res)[None, :]).ravel()
    if penta.any():  # 12 per resolution: let h3 handle the deleted K-axis subsequence
        pent_kids = [h3.cell_to_children(h3.int_to_str(int(c)), child_res) for c in cells[penta]]
        out = np.concatenate([out, np.array([h3.str_to_int(k) for ks in pent_kids for k in ks], dtype=np.uint64)])
    return out


def sort_pairs(fids: np.ndarray, cells: np.ndarray, res: int) -> tuple[np.ndarray, np.ndarray]:
    """(fids, cells) ordered by (cell, fid). When every index has the same constant bits (mode, resolution, trailing
    7s) and the fids fit beside the base cell and digits, both go into one uint64 key: one sort of plain integers,
    no gather, skipped when the rows are in order already, and runs already sorted (chunk files) merge in
    near-linear time. In-place arithmetic: fresh large arrays cost page faults."""
    field = U((1 << (7 + 3 * res)) - 1) << U(3 * (15 - res))  # base cell and digits: bits 51 down
    fid_bits = 64 - (7 + 3 * res)
    if len(cells) == 0:
        return fids.astype(np.int64), cells
    rest = cells[0] & ~field
    if fids.min() < 0 or fids.max() >= (1 << fid_bits) or ((cells & ~field) != rest).any():
        order = np.lexsort((fids, cells))
        return fids[order], cells[order]
    key = cells & field
    key <<= U(12)  # bit 51 -> 63
    key |= fids.astype(np.int64, copy=False).view(U)
    if (key[1:] < key[:-1]).any():
        key.sort(kind="stable")
    out = key >> U(12)
    out &= field
    out |= rest
    key &= U((1 << fid_bits) - 1)
    return key.view(np.int64), out


def to_u64(array) -> np.ndarray:
    """An h3ronpy/Arrow array of cell ids as a uint64 numpy array."""
    return np.asarray(pa.array(array).to_numpy(zero_copy_only=False), dtype=np.uint64)


def points_to_cells(lng: np.ndarray, lat: np.ndarray, res: int) -> np.ndarray:
    """The cell at `res` holding each point."""
    return to_u64(coordinates_to_cells(lat, lng, res))


def estimate_cells(geoms: np.ndarray, res: int) -> np.ndarray:
    """Approximate cell count per geometry (area on the sphere / average cell area)."""
    b = shapely.bounds(geoms)
    km2 = shapely.area(geoms) * KM2_PER_DEG2 * np.cos(np.radians((b[:, 1] + b[:, 3]) / 2))
    return km2 / h3.average_hexagon_area(res, "km^2")


def centres(cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(lng, lat) of each cell centre, in degrees."""
    coords = cells_to_coordinates(pa.array(cells, pa.uint64()))
    return np.asarray(coords.column("lng").to_numpy()), np.asarray(coords.column("lat").to_numpy())


def circumradius_bound(res: int) -> float:
    """An upper bound (radians) on the distance from any cell's centre at `res` to its vertices: the planar
    hexagon's in H3's face gnomonic plane, since the gnomonic projection never shortens a distance (measured:
    at most 1.0000 of it over all cells at resolutions 0-2 and 20k random cells at each of 3-13)."""
    return RES0_GNOMONIC / np.sqrt(3) / np.sqrt(7) ** res


def hexagons(cells: np.ndarray) -> np.ndarray:
    """Cell boundary polygons in lon/lat, unwrapped around each centre (so they may pass ±180)."""
    lng, _ = centres(cells)
    polys = shapely.from_wkb(np.asarray(cells_to_wkb_polygons(pa.array(cells, pa.uint64())).to_pylist(), dtype=object))
    coords, index = shapely.get_coordinates(polys, return_index=True)
    x = coords[:, 0] - lng[index]
    coords[:, 0] = lng[index] + np.where(x > 180, x - 360, np.where(x < -180, x + 360, x))
    return shapely.polygons(shapely.linearrings(coords, indices=index))


def valid_at(cells: np.ndarray, res: int) -> np.ndarray:
    """True where a uint64 is an H3 cell index at `res` (mode, resolution, base cell, digits)."""
    ok = (cells >> RES_SHIFT) == ((U(1) << (MODE_SHIFT - RES_SHIFT)) | U(res))  # reserved bits 0, mode 1, res
    ok &= (cells & _digit_bits(res)) == _digit_bits(res)  # trailing 7s
    ok &= base_cell(cells) < U(122)
    if res:  # no digit of 7 (all three bits set) within the resolution
        digits = cells >> U(3 * (15 - res))
        seven = digits & (digits >> U(1))
        seven &= digits >> U(2)
        seven &= U(int("001" * res, 2))
        ok &= seven == U(0)
    return ok
