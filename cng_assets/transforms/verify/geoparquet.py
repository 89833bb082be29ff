"""A GeoParquet product checked against its SOURCE by a path that shares no geometry code with the writer.

The source is read again with pyogrio; each feature's area is measured on the WGS84 ellipsoid (GeographicLib's
geodesic polygon area, which places edges across ±180° and rings around a pole right by itself) from the source's
own coordinates, densified in the source CRS (so its straight edges stay straight) and turned into lon/lat point by
point. The product's area is measured the same way from its lon/lat (its edges straight in lon/lat).

- rows: product rows = source features - dropped; the fids missing from the product are exactly the ones the
  writer reported dropped, and those it said were null or empty are null or empty in the source.
- areas (polygon layers): product area within AREA_REL_TOL (+ AREA_ABS_M2) of the source's. The source's area is
  the sum of its shells' areas minus its holes', which is its area whenever its rings are drawn as declared (each
  simple, holes inside their shells, parts apart; touching allowed, so a hole sharing an edge with its shell is
  compared). A source whose rings cross or overlap (a bow-tie, an enclave drawn as a part, overlapping parts) has
  no area but the one a repair rule gives it: those features are counted and listed with both figures, not failed.
  Features whose source geometry is curved (GDAL linearises it) are not compared, and counted.
- bounds: the product's extent inside the source extent's lon/lat bounds (densified edges).
- readers: pyarrow's pq.read_table, DuckDB's `SELECT count(*) FROM 'file'` and geopandas' read_parquet open it
  with their default calls (all of it up to READ_WHOLE_BYTES; above, DuckDB reads all, the others a part).
Big layers: every feature is compared up to COMPARE_ALL features; above, every k-th _cng_fid plus every feature at
±180° or a pole (said so in the figures).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import geopandas as gpd
import numpy as np
import pyarrow.parquet as pq
import pyogrio
import shapely
from pyproj import CRS, Geod, Transformer

from cng_assets.transforms.geometry import DROPPED_NULL, DROPPED_OTHER_TYPE, DROPPED_UNREPAIRABLE

AREA_REL_TOL = 0.005
AREA_ABS_M2 = 1.0
COMPARE_ALL = 100_000
READ_WHOLE_BYTES = 256 << 20
SOURCE_STEP_METRES = 1_000  # densifying a projected source's edges before they are turned into lon/lat
LONLAT_STEP = 0.1  # degrees, densifying edges that are straight in lon/lat
BOUNDS_EPS = 1e-4  # degrees
LISTED = 20
GEOD = Geod(ellps="WGS84")


@dataclass
class Verification:
    passed: bool = True
    problems: list[str] = field(default_factory=list)
    figures: dict = field(default_factory=dict)

    def fail(self, problem: str) -> None:
        self.passed = False
        self.problems.append(problem)


def verify_geoparquet(product: str | Path, source: str, layer: str, *, source_crs: str, polygons: bool,
                      dropped: int, dropped_features: list[tuple[int, str]]) -> Verification:
    """`product` against `source`'s `layer` (CRS `source_crs`, the one the writer used); `dropped` and
    `dropped_features` ((_cng_fid, why), possibly only the first ones) are what the writer reported."""
    v = Verification()
    fids, boxes = _product_index(product)
    selected = _selection(fids, boxes, v)
    product_areas = _product_areas(product, selected, v) if polygons else {}
    src = _read_source(source, layer, CRS.from_user_input(source_crs), selected if polygons else set(),
                       {f for f, _ in dropped_features})
    _check_rows(v, fids, src, dropped, dropped_features, polygons)
    if polygons:
        _check_areas(v, product_areas, src)
    else:
        v.figures["areas"] = "not compared: not a polygon layer"
    _check_bounds(v, boxes, src, CRS.from_user_input(source_crs))
    _check_readers(v, Path(product), len(fids))
    v.figures["problems"] = v.problems[:LISTED]
    return v


def _product_index(product) -> tuple[np.ndarray, np.ndarray]:
    t = pq.read_table(product, columns=["_cng_fid", "bbox"])
    b = t.column("bbox").combine_chunks()
    boxes = np.column_stack([b.field(k).to_numpy(zero_copy_only=False) for k in ("xmin", "ymin", "xmax", "ymax")])
    return t.column("_cng_fid").to_numpy(), boxes.reshape(-1, 4)


def _selection(fids: np.ndarray, boxes: np.ndarray, v: Verification) -> set[int]:
    if len(fids) <= COMPARE_ALL:
        v.figures["compared"] = "all features"
        return set(fids.tolist())
    k = math.ceil(len(fids) / COMPARE_ALL)
    edge = (np.abs(boxes[:, [0, 2]]) >= 180).any(axis=1) | (np.abs(boxes[:, [1, 3]]) >= 90).any(axis=1)
    v.figures["compared"] = f"sample: _cng_fid divisible by {k}, and every feature at ±180° or a pole"
    return set(fids[(fids % k == 0) | edge].tolist())


def _product_areas(product, selected: set[int], v: Verification) -> dict[int, float]:
    """m² of the selected rows; each row's geometry bounds also match its bbox covering."""
    areas, off, wanted = {}, 0, np.fromiter(selected, np.int64)
    for batch in pq.ParquetFile(product).iter_batches(columns=["_cng_fid", "geometry", "bbox"]):
        fid = batch.column(0).to_numpy()
        pick = np.flatnonzero(np.isin(fid, wanted))
        geoms = shapely.from_wkb(batch.column(1).to_numpy(zero_copy_only=False)[pick])
        bbox = batch.column(2)
        covering = np.column_stack([bbox.field(k).to_numpy(zero_copy_only=False)[pick]
                                    for k in ("xmin", "ymin", "xmax", "ymax")])
        off += int((np.abs(shapely.bounds(geoms) - covering) > 1e-9).any(axis=1).sum())
        for f, g in zip(fid[pick].tolist(), geoms):
            areas[f] = _geodesic_area(_lonlat_rings(g, None, short_way=False))
    v.figures["bbox_covering_off"] = off
    if off:
        v.fail(f"{off} rows' bbox covering differs from their geometry's bounds")
    return areas


@dataclass
class _Source:
    features: int = 0
    null: set = field(default_factory=set)
    curved: set = field(default_factory=set)
    areas: dict = field(default_factory=dict)  # fid: (m², rings as declared)
    dropped: dict = field(default_factory=dict)  # fid reported dropped: (has a polygon part, is valid)
    bounds: np.ndarray = field(default_factory=lambda: np.array([np.inf, np.inf, -np.inf, -np.inf]))
    crosses_180: bool = False  # a lon/lat edge of it crosses ±180 (the short way)


def _read_source(path: str, layer: str, crs: CRS, selected: set[int], dropped: set[int]) -> _Source:
    """Every feature of the layer, in GDAL's order (_cng_fid = position from 1): count, null ones, extent, the
    areas of the `selected`, and what the `dropped` ones are."""
    out = _Source()
    to_lonlat = None if crs.is_geographic else Transformer.from_crs(crs, 4326, always_xy=True)
    step = LONLAT_STEP if crs.is_geographic else SOURCE_STEP_METRES / (crs.axis_info[0].unit_conversion_factor or 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        with pyogrio.open_arrow(path, layer=layer, columns=[], batch_size=20_000, use_pyarrow=True) as (meta, reader):
            for batch in reader:
                wkb = batch.column(meta["geometry_name"] or "wkb_geometry").to_numpy(zero_copy_only=False)
                first = out.features + 1
                out.features += len(wkb)
                geoms, curved = _parse(wkb)
                geoms = shapely.force_2d(geoms)
                out.curved.update((first + curved).tolist())
                null = shapely.is_missing(geoms) | shapely.is_empty(geoms)
                null[curved] = False
                out.null.update((first + np.flatnonzero(null)).tolist())
                b = shapely.bounds(geoms[~null])
                b = b[np.isfinite(b).all(axis=1)]
                if len(b):
                    out.bounds = np.concatenate([np.minimum(out.bounds[:2], b[:, :2].min(0)),
                                                 np.maximum(out.bounds[2:], b[:, 2:].max(0))])
                if crs.is_geographic and not out.crosses_180:
                    out.crosses_180 = _crosses_180(geoms[~null])
                for i in np.flatnonzero(~null):
                    if first + i in dropped:
                        kinds = shapely.get_type_id(shapely.get_parts(shapely.get_parts(geoms[i])))
                        out.dropped[first + i] = (bool(np.isin(kinds, [3, 6]).any()), bool(shapely.is_valid(geoms[i])))
                    if first + i in selected:
                        g = geoms[i]
                        rings = _lonlat_rings(shapely.segmentize(g, step) if to_lonlat else g, to_lonlat,
                                              short_way=True)
                        out.areas[first + i] = (_geodesic_area(rings), _as_declared(g))
    return out


def _parse(wkb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Shapely geometries, and the positions of those GEOS cannot read (curves), left None."""
    try:
        return shapely.from_wkb(wkb), np.empty(0, np.int64)
    except (NotImplementedError, shapely.errors.GEOSException):
        out, curved = np.empty(len(wkb), dtype=object), []
        for i, w in enumerate(wkb):
            try:
                out[i] = shapely.from_wkb(w)
            except (NotImplementedError, shapely.errors.GEOSException):
                curved.append(i)
        return out, np.asarray(curved, np.int64)


def _lonlat_rings(geom, to_lonlat, short_way: bool) -> list[tuple[np.ndarray, bool]]:
    """(lon/lat vertices, is a hole) of each polygon ring: turned into lon/lat by `to_lonlat` (already densified),
    or densified in lon/lat. `short_way`: a lon/lat source's edge of more than 180° is read the short way, across
    ±180, unless both its ends are on ±180 (drawn along that edge of the plane); a product's are straight."""
    out = []
    for part in shapely.get_parts(shapely.get_parts(geom)):
        if part.geom_type != "Polygon":
            continue
        for k, ring in enumerate([part.exterior, *part.interiors]):
            xy = shapely.get_coordinates(ring)
            if to_lonlat is not None:
                xy = np.column_stack(to_lonlat.transform(xy[:, 0], xy[:, 1]))
            else:
                xy = _densify_lonlat(xy, short_way)
            out.append((xy, k > 0))
    return out


def _densify_lonlat(xy: np.ndarray, short_way: bool) -> np.ndarray:
    x0, x1 = xy[:-1, 0], xy[1:, 0]
    dx = x1 - x0
    if short_way:
        dx = np.where((np.abs(x0) >= 180) & (np.abs(x1) >= 180), dx, (dx + 180) % 360 - 180)
    dy = np.diff(xy[:, 1])
    n = np.maximum(1, np.ceil(np.hypot(dx, dy) / LONLAT_STEP)).astype(int)
    t = np.concatenate([np.arange(k) / k for k in n])
    start = np.repeat(xy[:-1], n, axis=0)
    pts = start + t[:, None] * np.repeat(np.column_stack([dx, dy]), n, axis=0)
    return np.vstack([pts, xy[-1:]])


def _crosses_180(geoms: np.ndarray) -> bool:
    lines = shapely.get_parts(shapely.boundary(shapely.get_parts(geoms)))  # rings of polygons, ends of lines
    xy, ring = shapely.get_coordinates(lines[shapely.get_dimensions(lines) == 1], return_index=True)
    x0, x1 = xy[:-1, 0], xy[1:, 0]
    return bool(((ring[1:] == ring[:-1]) & (np.abs(x1 - x0) > 180) & ~((np.abs(x0) >= 180) & (np.abs(x1) >= 180))).any())


def _geodesic_area(rings: list[tuple[np.ndarray, bool]]) -> float:
    """m²: shells' areas minus holes' (each ring the smaller side it bounds, so up to half the Earth)."""
    total = 0.0
    for xy, hole in rings:
        a = abs(GEOD.polygon_area_perimeter(xy[:, 0], xy[:, 1])[0])
        total += -a if hole else a
    return total


def _as_declared(g) -> bool:
    """Its rings are drawn as declared (see the module's docstring), so shells minus holes is its area."""
    if shapely.is_valid(g):
        return True
    parts = [p for p in shapely.get_parts(shapely.get_parts(g)) if p.geom_type == "Polygon"]
    rings = [r for p in parts for r in (p.exterior, *p.interiors)]
    if not all(shapely.is_simple(r) for r in rings):
        return False
    shells = [shapely.Polygon(p.exterior) for p in parts]
    holes = [shapely.Polygon(h) for p in parts for h in p.interiors]
    size = sum(x.area for x in shells)

    def apart(gs) -> bool:  # interiors disjoint: the union's area is the sum of theirs
        return abs(shapely.union_all(gs).area - sum(x.area for x in gs)) <= 1e-9 * size

    outside = shapely.difference(shapely.union_all(holes), shapely.union_all(shells)).area if holes else 0.0
    return apart(shells) and apart(holes) and outside <= 1e-9 * size


def _check_rows(v: Verification, fids: np.ndarray, src: _Source, dropped: int,
                dropped_features: list[tuple[int, str]], polygons: bool) -> None:
    missing = sorted(set(range(1, src.features + 1)) - set(fids.tolist()))
    v.figures.update(source_features=src.features, rows=len(fids), dropped_reported=dropped,
                     missing_fids=missing[:LISTED], dropped_listed=[f"{f}: {why}" for f, why in dropped_features[:LISTED]])
    if len(fids) != src.features - dropped:
        v.fail(f"{len(fids)} rows, but the source has {src.features} features and {dropped} were reported dropped")
    if len(set(fids.tolist())) != len(fids) or (len(fids) and (fids.min() < 1 or fids.max() > src.features)):
        v.fail("_cng_fid values repeat or fall outside 1..source features")
    listed = [f for f, _ in dropped_features]
    if missing[:len(listed)] != sorted(listed):
        v.fail(f"the fids missing from the product ({missing[:LISTED]}) are not those reported dropped "
               f"({sorted(listed)[:LISTED]})")
    # each reason, where the source alone can tell, as the source has it
    untrue = [f"{f}: {why}" for f, why in dropped_features if (why == DROPPED_NULL and f not in src.null) or (
        why.startswith(DROPPED_OTHER_TYPE) and polygons and src.dropped.get(f, (False,))[0]) or (
        why == DROPPED_UNREPAIRABLE and src.dropped.get(f, (False, False))[1])]
    if untrue:
        v.fail(f"features dropped for a reason the source does not bear out: {untrue[:LISTED]}")


def _check_areas(v: Verification, product: dict[int, float], src: _Source) -> None:
    compared, wrong, repaired = 0, [], []
    for fid, area in sorted(product.items()):
        if fid in src.curved or fid not in src.areas:
            continue
        expected, declared = src.areas[fid]
        if not declared:
            repaired.append(f"{fid}: source {expected:.6g} m², product {area:.6g} m²")
            continue
        compared += 1
        if abs(area - expected) > AREA_REL_TOL * abs(expected) + AREA_ABS_M2:
            wrong.append(f"{fid}: source {expected:.6g} m², product {area:.6g} m²")
    v.figures.update(areas_compared=compared, area_tolerance=f"{AREA_REL_TOL:.1%} + {AREA_ABS_M2} m²",
                     areas_wrong=len(wrong), areas_wrong_listed=wrong[:LISTED],
                     areas_set_by_repair=len(repaired), areas_set_by_repair_listed=repaired[:LISTED],
                     curved_not_compared=len(src.curved & set(product)))
    if wrong:
        v.fail(f"{len(wrong)} features' areas differ from the source's by more than the tolerance: {wrong[:3]}")


def _check_bounds(v: Verification, boxes: np.ndarray, src: _Source, crs: CRS) -> None:
    if not len(boxes) or not np.isfinite(src.bounds).all():
        return
    got = np.concatenate([boxes[:, :2].min(0), boxes[:, 2:].max(0)])
    west, south, east, north = Transformer.from_crs(crs, 4326, always_xy=True).transform_bounds(
        *src.bounds, densify_pts=101)
    v.figures.update(product_bounds=got.round(6).tolist(), source_bounds_lonlat=[west, south, east, north])
    if got[1] < south - BOUNDS_EPS or got[3] > north + BOUNDS_EPS:
        v.fail(f"product latitudes {got[1]:.6f}..{got[3]:.6f} outside the source's {south:.6f}..{north:.6f}")
    if west > east or src.crosses_180:
        v.figures["longitude_bounds"] = "not checked: the source may cross ±180°"
    elif got[0] < west - BOUNDS_EPS or got[2] > east + BOUNDS_EPS:
        v.fail(f"product longitudes {got[0]:.6f}..{got[2]:.6f} outside the source's {west:.6f}..{east:.6f}")


def _check_readers(v: Verification, product: Path, rows: int) -> None:
    whole = product.stat().st_size <= READ_WHOLE_BYTES
    v.figures["readers"] = "whole file" if whole else "DuckDB the whole file; pyarrow and geopandas a part"
    try:
        got = {"duckdb": duckdb.connect().execute("SELECT count(*) FROM read_parquet($p)",
                                                  {"p": str(product)}).fetchone()[0]}
        if whole:
            got["pyarrow"] = pq.read_table(product).num_rows
            got["geopandas"] = len(gpd.read_parquet(product))
        else:  # the first row group, and the rows around the first feature
            got["pyarrow"] = pq.ParquetFile(product).read_row_group(0).num_rows
            first = pq.ParquetFile(product).read_row_group(0, columns=["bbox"]).column(0)[0].values()
            got["geopandas"] = len(gpd.read_parquet(product, bbox=tuple(first)))
    except Exception as e:  # noqa: BLE001 - any reader failing is the finding
        v.fail(f"a reader's default call fails: {type(e).__name__}: {e}")
        return
    v.figures["reader_rows"] = got
    expected = {k: rows for k in got} if whole else {"duckdb": rows}
    if any(got[k] != n for k, n in expected.items()) or (rows and min(got.values()) < 1):
        v.fail(f"readers disagree on rows: {got} (the product has {rows})")
