"""Per-batch geometry cleaning: 2D, EPSG:4326 lon/lat, valid, split at the antimeridian, one geometry family."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import shapely
from pyproj import CRS, Transformer
from pyproj.exceptions import ProjError

from cng_assets.errors import CngInputError
from cng_assets.transforms import lonlat, repair

WGS84 = CRS.from_epsg(4326)
POLYGONAL = {"Polygon", "MultiPolygon"}
LINEAL = {"LineString", "MultiLineString", "LinearRing"}
PUNTAL = {"Point", "MultiPoint"}
TYPE_IDS = {"Point": 0, "LineString": 1, "LinearRing": 2, "Polygon": 3, "MultiPoint": 4, "MultiLineString": 5,
            "MultiPolygon": 6, "GeometryCollection": 7}


# ISO WKB's base geometry types (Z, M and ZM add 1000, 2000, 3000) by the family a layer's products take them in;
# curves count with what GDAL linearises them to.
WKB_FAMILIES = {"polygon": {3, 6, 10, 12, 14, 15, 16, 17}, "line": {2, 5, 8, 9, 11, 13}, "point": {1, 4}}
WKB_COLLECTION = 7
FAMILY_TYPES = {"polygon": POLYGONAL, "line": LINEAL, "point": PUNTAL}


@dataclass
class CleanCounts:
    repaired: int = 0
    split_antimeridian: int = 0
    closed_at_pole: int = 0  # a ring around a pole (polar stereographic sources), closed along latitude ±90
    dropped_null_or_empty: int = 0
    dropped_unrepairable: int = 0  # invalid, and repair left nothing of the layer's geometry family
    dropped_other_geometry_types: int = 0  # nothing of the layer's family at all: a point or line in a polygon layer
    trimmed_other_geometry_types: int = 0  # a collection that kept its parts of the layer's family and lost the others

    def add(self, other: CleanCounts) -> None:
        for k, v in vars(other).items():
            setattr(self, k, getattr(self, k) + v)


def parse_wkb(wkb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Shapely geometries, and the positions of curved ones GEOS cannot read (left None for GDAL to linearise).
    3D surfaces (TIN, polyhedral surface: how GDAL reads an ESRI multipatch) are refused: GEOS cannot read them,
    and flattening walls and roofs would make a footprint nobody asked for."""
    try:
        return shapely.from_wkb(wkb), np.empty(0, dtype=np.int64)
    except (NotImplementedError, shapely.errors.GEOSException):  # curves; "Unknown WKB type 16"
        out = np.empty(len(wkb), dtype=object)
        curved, surfaces = [], 0
        for i, w in enumerate(wkb):
            try:
                out[i] = shapely.from_wkb(w)
            except NotImplementedError:  # "Nonlinear geometry types are not currently supported"
                curved.append(i)
            except shapely.errors.GEOSException as e:
                if "Unknown WKB type" not in str(e):
                    raise
                surfaces += 1
        if surfaces:
            raise CngInputError(
                f"the layer holds 3D surfaces (multipatch, TIN or polyhedral surface: {surfaces} of the "
                f"{len(wkb)} features read so far), which this project does not convert",
                hint="export their footprints to a polygon layer (ArcGIS: Multipatch Footprint) and use that, "
                     "or leave the layer out with `exclude:` in the catalog entry (`--layers` on `cng-assets run`)")
        return out, np.asarray(curved, dtype=np.int64)


def wkb_type_ids(wkb: pa.Array) -> np.ndarray:
    """Each value's base geometry type from its WKB header alone (no parsing; -1 where null or empty)."""
    wide = pa.types.is_large_binary(wkb.type)
    offsets = np.frombuffer(wkb.buffers()[1], np.int64 if wide else np.int32)[wkb.offset:wkb.offset + len(wkb) + 1]
    data = np.frombuffer(wkb.buffers()[2], np.uint8) if len(wkb) else np.empty(0, np.uint8)
    starts = offsets[:-1].astype(np.int64)
    ok = (offsets[1:] - starts >= 5) & np.asarray(wkb.is_valid().to_numpy(zero_copy_only=False), bool)
    head = data[starts[ok, None] + np.arange(5)].astype(np.uint32)
    little = head[:, 0] == 1
    code = np.where(little, head[:, 1] | head[:, 2] << 8 | head[:, 3] << 16 | head[:, 4] << 24,
                    head[:, 4] | head[:, 3] << 8 | head[:, 2] << 16 | head[:, 1] << 24)
    out = np.full(len(wkb), -1, np.int64)
    out[ok] = (code & 0x0FFFFFFF) % 1000  # EWKB keeps Z/M/SRID flags in the high bits, ISO adds thousands
    return out


def families(geoms) -> set[str]:
    """The families ("polygon", "line", "point") of the geometries' parts, collections opened."""
    kinds = shapely.get_type_id(_flat_parts(geoms))
    return {f for f, types in FAMILY_TYPES.items() if np.isin(kinds, _ids(types)).any()}


def open_collections(geoms) -> tuple[np.ndarray, np.ndarray]:
    """The geometries with each geometry collection replaced by its non-empty members (nested collections opened
    too; multi-geometries stay whole), and the position of the geometry each came from, in order."""
    out, rows = np.asarray(geoms, dtype=object), np.arange(len(geoms))
    while (gc := shapely.get_type_id(out) == TYPE_IDS["GeometryCollection"]).any():
        members, owner = shapely.get_parts(out[gc], return_index=True)
        out, rows = np.concatenate([out[~gc], members]), np.concatenate([rows[~gc], rows[gc][owner]])
        order = np.argsort(rows, kind="stable")
        out, rows = out[order], rows[order]
    full = ~shapely.is_empty(out)
    return out[full], rows[full]


def _flat_parts(geoms) -> np.ndarray:
    """Non-empty single parts, geometry collections (nested ones too) opened."""
    return shapely.get_parts(open_collections(np.atleast_1d(np.asarray(geoms, dtype=object)))[0])


def _ids(types: set[str]) -> list[int]:
    return [TYPE_IDS[t] for t in types]


def to_wgs84(crs: str) -> Transformer | None:
    """Transformer to lon/lat, or None when the source already is geographic WGS84 in lon/lat (GDAL's order)."""
    src = CRS.from_user_input(crs)
    if src.equals(WGS84, ignore_axis_order=True):
        return None
    try:
        return Transformer.from_crs(src, WGS84, always_xy=True)
    except ProjError as e:
        raise CngInputError(f"its CRS {src.name!r} ({src.type_name}) is not tied to the Earth, so PROJ cannot turn it "
                            f"into lon/lat ({e})",
                            hint="reproject the layer to a geographic or projected CRS in the tool that made it, and "
                                 "upload it again") from None


# why a feature is dropped, as the product reports it per _cng_fid
DROPPED_NULL = "null or empty geometry"
DROPPED_UNPLACEABLE = "coordinates the source CRS cannot place (not finite in lon/lat)"
DROPPED_OTHER_TYPE = "no geometry of the layer's type"
DROPPED_UNREPAIRABLE = "invalid, and repair left nothing of the layer's geometry type"
DENSIFY_METRES = 10_000  # longest edge of a projected source kept straight through reprojection


def _densify_step(transformer: Transformer) -> float | None:
    """Longest edge, in the source CRS's units, before reprojection: a straight edge in a projected CRS is a curve
    in lon/lat. None for geographic sources (their edges are straight in lon/lat already)."""
    src = transformer.source_crs
    if src is None or not src.is_projected:
        return None
    return DENSIFY_METRES / (src.axis_info[0].unit_conversion_factor or 1.0)


def _poles_in(transformer: Transformer | None) -> list[tuple[float, float, float]]:
    """The poles (x, y, latitude) as the source CRS places them (those it cannot place left out)."""
    if transformer is None:
        return []
    with np.errstate(all="ignore"):
        x, y = transformer.transform([0.0, 0.0], [-90.0, 90.0], direction="INVERSE", errcheck=False)
    return [(a, b, lat) for a, b, lat in zip(x, y, (-90.0, 90.0)) if np.isfinite(a) and np.isfinite(b)]


def _repair(geom):
    """A valid geometry from an invalid one; polygons keep their holes and enclaves (repair.polygonal)."""
    if geom.geom_type in POLYGONAL:
        return repair.polygonal(geom)
    return shapely.make_valid(geom)


def _family(kind: str, geometry_type: str | None) -> set[str]:
    if kind == "polygon":
        return POLYGONAL
    if geometry_type and ("Point" in geometry_type):
        return PUNTAL
    if geometry_type and ("Line" in geometry_type or "Curve" in geometry_type):
        return LINEAL
    return POLYGONAL | LINEAL | PUNTAL | {"GeometryCollection"}


def _keep_family(geom, family: set[str]):
    """The part of a repaired geometry that belongs to the layer's family (make_valid may return collections)."""
    if geom.geom_type in family:
        return geom
    parts = [p for p in _flat_parts(geom) if p.geom_type in family]
    if not parts:
        return None
    if all(p.geom_type in POLYGONAL for p in parts):
        return shapely.union_all(parts)
    if all(p.geom_type in LINEAL for p in parts):
        return shapely.multilinestrings(shapely.get_parts(parts))
    if all(p.geom_type in PUNTAL for p in parts):
        return shapely.multipoints(shapely.get_parts(parts))
    return shapely.geometrycollections(parts)


def _promote(geoms: np.ndarray, family: set[str]) -> np.ndarray:
    """Single parts to their multi type, so a layer has one geometry type (polygon layers: MultiPolygon)."""
    if family == POLYGONAL:
        single, make = TYPE_IDS["Polygon"], shapely.multipolygons
    elif family == LINEAL:
        single, make = TYPE_IDS["LineString"], shapely.multilinestrings
    else:
        return geoms
    idx = np.flatnonzero(shapely.get_type_id(geoms) == single)
    if len(idx):
        geoms[idx] = make(geoms[idx], indices=np.arange(len(idx)))
    return geoms


def clean(geoms: np.ndarray, *, kind: str, geometry_type: str | None, transformer: Transformer | None,
          counts: CleanCounts, reasons: np.ndarray | None = None) -> np.ndarray:
    """Cleaned geometries; None where a feature is dropped (counted in `counts`, and why in `reasons`, an object
    array as long as `geoms`, when given). Input: 2D or 3D shapely array."""
    family = _family(kind, geometry_type)
    geoms = np.asarray(geoms, dtype=object)
    why = reasons if reasons is not None else np.empty(len(geoms), dtype=object)
    missing = shapely.is_missing(geoms) | shapely.is_empty(geoms)
    counts.dropped_null_or_empty += int(missing.sum())
    why[missing] = DROPPED_NULL
    geoms = np.where(missing, None, geoms)
    present = np.flatnonzero(~missing)
    why_present = np.empty(len(present), dtype=object)
    source = shapely.force_2d(geoms[present])
    g = source.copy()
    geographic = transformer is None or transformer.source_crs.is_geographic
    if transformer is not None:
        if (step := _densify_step(transformer)) is not None:
            source = shapely.segmentize(source, step)
        g = shapely.transform(source, lambda c: np.column_stack(transformer.transform(c[:, 0], c[:, 1])))
        # Coordinates outside the source CRS's domain (e.g. a cylindrical projection's y just past the pole after
        # a FileGDB rounded it) project to inf: such a feature cannot be placed and is dropped and counted.
        coords, owner = shapely.get_coordinates(g, return_index=True)
        bad = np.unique(owner[~np.isfinite(coords).all(axis=1)])
        counts.dropped_unrepairable += len(bad)
        g[bad] = None
        why_present[bad] = DROPPED_UNPLACEABLE
    # Features that cross ±180° or touch a pole are rebuilt ring by ring (they come out valid); the rest, nearly
    # all, are right as reprojected.
    rebuilt = np.zeros(len(g), bool)
    poles = _poles_in(transformer)
    points = np.isin(shapely.get_type_id(g), _ids(PUNTAL))
    for i in np.flatnonzero(lonlat.needs_rebuild(g) & ~shapely.is_missing(g) & ~points):
        g[i], cut, closed = lonlat.rebuild(g[i], source[i], geographic=geographic, poles_in_source=poles)
        counts.split_antimeridian += cut
        counts.closed_at_pole += closed
        counts.repaired += not shapely.is_valid(source[i])
        rebuilt[i] = True
        if g[i].is_empty:
            counts.dropped_unrepairable += 1
            why_present[i] = DROPPED_UNREPAIRABLE
            g[i] = None
    # Repair invalid geometries; keep only the layer's family (a polygon layer drops lines and points that
    # make_valid or the source left in a collection). Nothing left means the feature is dropped and counted.
    dropped = shapely.is_missing(g)
    invalid = ~shapely.is_valid(g) & ~dropped
    off_family = ~np.isin(shapely.get_type_id(g), _ids(family)) & ~dropped
    for i in np.flatnonzero(invalid | off_family):
        ours = np.isin(shapely.get_type_id(_flat_parts(g[i])), _ids(family))
        if not ours.any():  # a point or line in a polygon layer: another product's, not a broken polygon
            counts.dropped_other_geometry_types += 1
            why_present[i] = f"{DROPPED_OTHER_TYPE} ({g[i].geom_type} in a {kind} layer)"
            g[i] = None
            continue
        kept = _keep_family(_repair(g[i]) if invalid[i] else g[i], family)
        if kept is None or kept.is_empty:
            counts.dropped_unrepairable += 1
            why_present[i] = DROPPED_UNREPAIRABLE
            g[i] = None
        else:
            counts.repaired += int(invalid[i] and not rebuilt[i])
            counts.trimmed_other_geometry_types += int(not ours.all())
            g[i] = kept
    keep = ~shapely.is_missing(g)
    g[keep] = _promote(g[keep], family)
    if family == POLYGONAL:
        g[keep] = shapely.orient_polygons(g[keep], exterior_cw=False)
    geoms[present] = g
    why[present] = why_present
    return geoms
