"""The written hex files against the GeoParquet they came from, by a path that shares nothing with the fill.

Presence: every fid with a geometry has at least one row in the files (read back: the `_cng_fid` column only).
Area: for features large against a cell (at least MIN_CELLS cells' worth, by their geodesic area on H3's own
authalic sphere, pyproj), the summed areas of their cells (h3ronpy's per-cell areas: H3 cells of one resolution
differ by up to 2x in area, so the average would not do) must match the feature's area, within what the
containment rule allows: a cell counts when its centre is inside (center), so the cells lie between the feature
shrunk and grown by a cell's circumradius R, i.e. within perimeter * R (+ pi R^2) of its area; a cell counts when it
touches (overlap), so the cells cover the feature and lie within 2R of it; plus TOLERANCE for the sphere's and H3's
irregularities. A lost or halved feature is far outside that for any compact feature of MIN_CELLS cells and more.

Memory stays O(features): counts and areas are accumulated per file, per batch, by fid position.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import h3
import h3ronpy
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import shapely
from pyproj import Geod

from cng_assets.transforms.columns import FID
from cng_assets.transforms.hex import cells as C
from cng_assets.transforms.hex.fill import HexSettings

MIN_CELLS = 50  # features with fewer cells' worth of area only need to be present
TOLERANCE = 0.05
SPHERE = Geod(a=6371007.181, f=0)  # H3's authalic sphere: cell areas and feature areas on the same surface
HEXAGON = 3 * math.sqrt(3) / 2  # a regular hexagon's area / circumradius^2
LISTED = 20


def source_checks(geoparquet: str | Path, out_dir: Path, settings: HexSettings) -> list:
    from cng_assets.transforms.hex.consolidate import HexCheck  # the checks' common shape

    fids, areas, perimeters = _source(geoparquet, settings.resolution)
    counts, cell_area = _product(out_dir, settings.resolution, fids, ~np.isnan(areas))
    absent = fids[counts == 0]
    present = HexCheck("every_source_fid_in_files", not len(absent), {
        "source_features": len(fids), "features_in_files": int((counts > 0).sum()),
        "features_absent": len(absent), "first_absent": absent[:LISTED].tolist()})

    tested = ~np.isnan(areas) & (counts > 0)
    area, perimeter, cells = areas[tested], perimeters[tested], cell_area[tested]
    radius = np.sqrt(cells / counts[tested] / HEXAGON)  # the circumradius of the feature's own cells
    if settings.containment == "center":
        low, high = area - perimeter * radius, area + perimeter * radius + np.pi * radius ** 2
    else:
        low, high = area, area + 2 * perimeter * radius + 4 * np.pi * radius ** 2
    low, high = np.maximum(low, 0) * (1 - TOLERANCE), high * (1 + TOLERANCE)
    bad = (cells < low) | (cells > high)
    ratio = cells / area
    worst = int(np.argmax(np.abs(ratio - 1))) if len(ratio) else None
    sized = HexCheck("cells_match_feature_areas", not bad.any() and not len(absent), {
        "features_tested": int(tested.sum()), "min_cells_tested": MIN_CELLS, "containment": settings.containment,
        "features_outside_tolerance": int(bad.sum()), "features_absent_untested": len(absent),
        "worst_cells_to_area_ratio": round(float(ratio[worst]), 4) if worst is not None else None,
        "worst_allowed": [round(float(low[worst] / area[worst]), 4), round(float(high[worst] / area[worst]), 4)]
        if worst is not None else None,
        "first_outside": [{"fid": int(f), "area_km2": round(float(a) / 1e6, 4), "cells_km2": round(float(c) / 1e6, 4),
                           "allowed_km2": [round(float(lo) / 1e6, 4), round(float(hi) / 1e6, 4)]}
                          for f, a, c, lo, hi in list(zip(fids[tested][bad], area[bad], cells[bad], low[bad],
                                                          high[bad]))[:LISTED]]})
    return [present, sized]


def _source(geoparquet: str | Path, res: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sorted fids with a geometry; geodesic area and perimeter (m², m) of those with MIN_CELLS cells' worth of
    area, NaN for the rest. Candidates are picked by their box's area on the sphere (never below the feature's),
    so only they are measured."""
    pf = pq.ParquetFile(geoparquet)
    geom_col = json.loads(pf.metadata.metadata[b"geo"])["primary_column"]
    smallest_cell = h3.average_hexagon_area(res, "m^2") / 2  # H3 cells of one resolution: within 2x of each other
    fids, areas, perimeters = [], [], []
    for batch in pf.iter_batches(columns=[FID, geom_col], batch_size=8192):
        geoms = shapely.from_wkb(batch.column(1).to_numpy(zero_copy_only=False))
        has = ~(shapely.is_missing(geoms) | shapely.is_empty(geoms))
        geoms = geoms[has]
        fids.append(np.asarray(batch.column(0).to_numpy(zero_copy_only=False))[has])
        x0, y0, x1, y1 = shapely.bounds(geoms).T
        box = SPHERE.a ** 2 * np.radians(x1 - x0) * np.abs(np.sin(np.radians(y1)) - np.sin(np.radians(y0)))
        a, p = np.full(len(geoms), np.nan), np.full(len(geoms), np.nan)
        for i in np.flatnonzero(box >= MIN_CELLS * smallest_cell):
            area, perimeter = SPHERE.geometry_area_perimeter(geoms[i])
            if abs(area) >= MIN_CELLS * smallest_cell:
                a[i], p[i] = abs(area), perimeter
        areas.append(a)
        perimeters.append(p)
    if not fids:
        return np.empty(0, np.int64), np.empty(0), np.empty(0)
    fids, areas, perimeters = np.concatenate(fids), np.concatenate(areas), np.concatenate(perimeters)
    order = np.argsort(fids)
    return fids[order], areas[order], perimeters[order]


def _product(out_dir: Path, res: int, fids: np.ndarray, measured: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows per source fid in the written files, and the summed cell areas (m²) of the measured features."""
    counts, areas = np.zeros(len(fids), np.int64), np.zeros(len(fids))
    if not len(fids):
        return counts, areas
    for f in sorted(out_dir.glob("h0=*/*.parquet")):
        for batch in pq.ParquetFile(f).iter_batches(columns=[FID, f"h{res}"], batch_size=1 << 20):
            rows = np.asarray(batch.column(0).to_numpy(zero_copy_only=False))
            at = np.minimum(np.searchsorted(fids, rows), len(fids) - 1)
            known = fids[at] == rows  # a fid the source has not is the other checks' business
            counts += np.bincount(at[known], minlength=len(fids))
            cells = np.asarray(batch.column(1).to_numpy(zero_copy_only=False))
            sized = known & measured[at] & C.valid_at(cells, res)  # an invalid id has no area (cell_ids_valid fails)
            if sized.any():
                areas += np.bincount(at[sized], weights=_cell_areas(cells[sized], res), minlength=len(fids))
    return counts, areas


def _cell_areas(cells: np.ndarray, res: int) -> np.ndarray:
    """Each cell's area (m²), as 1/49 of its grandparent's (h3ronpy): within 0.6% of its own area, and sums over
    a feature's cells within 0.001%, for 49 times fewer area computations (one per distinct grandparent)."""
    up = min(2, res)
    coarse = np.asarray(pa.array(h3ronpy.change_resolution(pa.array(cells), res - up)).to_numpy(zero_copy_only=False))
    distinct, which = np.unique(coarse, return_inverse=True)
    area = np.asarray(pa.array(h3ronpy.cells_area_m2(pa.array(distinct))).to_numpy(zero_copy_only=False))
    return area[which] / 7 ** up
