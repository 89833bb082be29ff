"""Geometries reprojected point by point into lon/lat, made right where points alone are not enough: rings and
lines that cross ±180° or go around a pole.

Each vertex lands in the right place, but an edge between two of them is read in lon/lat as the short way across
the plane: an edge crossing ±180° runs back across the whole map, and a ring around a pole (a polar stereographic
coastline) comes out as a zigzag. Such rings are unwrapped (longitudes made continuous), closed along latitude ±90
when they go around a pole, and folded back into -180..180 by cutting at ±180. A vertex on a pole has no longitude
of its own: it becomes two, at the longitudes of its neighbours, joined along the pole's latitude line.

Sources already in lon/lat keep their planar lon/lat meaning: an edge from -180 to 180 at one latitude is drawn
along the edge of the lon/lat plane (how Natural Earth closes Antarctica), not across ±180.
"""

from __future__ import annotations

import numpy as np
import shapely

from cng_assets.transforms import repair

POLE_EPS = 1e-9  # degrees of latitude within which a vertex is on a pole


def needs_rebuild(lonlat: np.ndarray) -> np.ndarray:
    """The geometries that may cross ±180° or touch a pole: wider than 180° or with a vertex on a pole. Every
    other one is right as reprojected (no edge of it can be longer than 180° of longitude)."""
    b = shapely.bounds(lonlat)
    return (b[:, 2] - b[:, 0] > 180) | (b[:, 1] <= -90 + POLE_EPS) | (b[:, 3] >= 90 - POLE_EPS)


def rebuild(lonlat, source, *, geographic: bool, poles_in_source: list[tuple[float, float, float]]):
    """`lonlat` (the reprojected `source`, vertex for vertex) made right in lon/lat, polygons valid (repaired as
    `repair.polygonal` does), and whether anything was cut at ±180° and closed at a pole.

    `geographic`: the source is itself in lon/lat (its edges along ±180 stay so). `poles_in_source`: the poles
    (x, y, latitude) the source CRS can place; a ring around a pole is closed along the one it holds inside.
    """
    cut = closed = False
    polygons, others = [], []
    for part, src in zip(shapely.get_parts(shapely.get_parts(lonlat)), shapely.get_parts(shapely.get_parts(source))):
        kind = part.geom_type
        if kind == "Polygon":
            rings = []
            for ring, src_ring in zip([part.exterior, *part.interiors], [src.exterior, *src.interiors]):
                xy, winds = _unwrap_ring(shapely.get_coordinates(ring), geographic)
                if winds:
                    xy = _close_at_pole(xy, _pole(src_ring, xy, poles_in_source))
                    closed = True
                region = repair.ring_region(xy)
                cut |= _beyond_180(region)
                rings.append(_fold(region))
            polygons.append(shapely.difference(rings[0], shapely.union_all(rings[1:])) if len(rings) > 1 else rings[0])
        elif kind in ("LineString", "LinearRing"):
            xy, _ = _unwrap_line(shapely.get_coordinates(part), geographic)
            line = shapely.linestrings(xy)
            cut |= _beyond_180(line)
            others.extend(shapely.get_parts(_fold(line)))
        else:
            others.append(part)
    if polygons and not others:
        return repair.combine_parts(polygons), cut, closed
    if not polygons and all(p.geom_type == "LineString" for p in others):
        return shapely.multilinestrings(others), cut, closed
    polygons = shapely.get_parts(repair.combine_parts(polygons)) if polygons else []
    return shapely.geometrycollections([*polygons, *others]), cut, closed


def _wrapped(dx: np.ndarray, x0: np.ndarray, x1: np.ndarray, geographic: bool) -> np.ndarray:
    """Longitude steps taken the short way round; in a lon/lat source, a step from one side of the plane's edge to
    the other (both ends at ±180) is drawn along that edge and kept."""
    short = (dx + 180.0) % 360.0 - 180.0
    if geographic:
        return np.where((np.abs(x0) >= 180) & (np.abs(x1) >= 180), dx, short)
    return short


def _turns(x: np.ndarray, geographic: bool) -> np.ndarray:
    """Whole turns (±1, 0) to add at each step so longitudes run on continuously."""
    raw = np.diff(x)
    return np.round((_wrapped(raw, x[:-1], x[1:], geographic) - raw) / 360.0)


def _unwrap_line(xy: np.ndarray, geographic: bool) -> tuple[np.ndarray, int]:
    """Continuous longitudes (each moved by whole turns only, so exact), and the turns added by the end."""
    offset = np.concatenate([[0.0], np.cumsum(_turns(xy[:, 0], geographic))])
    out = xy.copy()
    out[:, 0] += 360.0 * offset
    return out, int(offset[-1])


def _unwrap_ring(xy: np.ndarray, geographic: bool) -> tuple[np.ndarray, int]:
    """A closed ring with continuous longitudes, and how many times it winds around a pole (0, or ±1: then it is
    left open at its end, 360° from its start). Vertices on a pole become two, at their neighbours' longitudes."""
    pts = xy[:-1]
    on_pole = np.abs(pts[:, 1]) >= 90 - POLE_EPS
    if on_pole.all() or len(pts) < 3:
        return xy, 0
    if not on_pole.any():
        return _unwrap_line(xy, geographic)
    # start at a vertex off the pole; each run of pole vertices becomes the pole's latitude line between the
    # longitudes of the vertices around it, as many turns long as closes the ring (a ring touching a pole does
    # not go around it)
    first = int(np.argmax(~on_pole))
    pts, on_pole = np.roll(pts, -first, 0), np.roll(on_pole, -first)
    kept = np.flatnonzero(~on_pole)
    after = np.roll(kept, -1)
    gap = ((after - kept) % len(pts) != 1) | (len(kept) == 1)
    xs, ys, pole_edge = [], [], []
    for i, j, g in zip(kept, after, gap):
        xs.append(pts[i, 0])
        ys.append(pts[i, 1])
        pole_edge.append(False)
        if g:  # the pole edge runs from the first of the two to the second
            lat = 90.0 if pts[(i + 1) % len(pts), 1] > 0 else -90.0
            xs += [pts[i, 0], pts[j, 0]]
            ys += [lat, lat]
            pole_edge += [True, False]
    x, y, pole_edge = np.append(xs, xs[0]), np.append(ys, ys[0]), np.array(pole_edge)
    turns = _turns(x, geographic)
    turns[pole_edge] = 0.0
    turns[np.argmax(pole_edge)] = -turns.sum()
    x = x + 360.0 * np.concatenate([[0.0], np.cumsum(turns)])
    return np.column_stack([x, y]), 0


def _pole(src_ring, xy: np.ndarray, poles_in_source) -> float:
    """The latitude (±90) of the pole a ring goes around: the one inside it in the source CRS; for a lon/lat
    source (or a pole the CRS cannot place), the one on the ring's side of the equator."""
    region = shapely.Polygon(src_ring)
    for x, y, lat in poles_in_source:
        if shapely.contains_xy(region, x, y):
            return lat
    return 90.0 if xy[:, 1].mean() > 0 else -90.0


def _close_at_pole(xy: np.ndarray, lat: float) -> np.ndarray:
    """A ring that goes once around a pole, open (its end 360° from its start), closed along that pole's line."""
    return np.vstack([xy, [[xy[-1, 0], lat], [xy[0, 0], lat]], xy[:1]])


def _beyond_180(g) -> bool:
    xmin, _, xmax, _ = shapely.bounds(g)
    return bool(xmin < -180 or xmax > 180)


def _fold(g):
    """A geometry drawn on continuous longitudes, cut at ±180° and each piece moved back into -180..180."""
    xmin, _, xmax, _ = shapely.bounds(g)
    if shapely.is_empty(g) or (xmin >= -180 and xmax <= 180):
        return g
    pieces = []
    for k in range(int(np.floor((xmin + 180) / 360)), int(np.floor((xmax + 180) / 360)) + 1):
        piece = shapely.intersection(g, shapely.box(360 * k - 180, -90, 360 * k + 180, 90))
        if not piece.is_empty:
            pieces.append(shapely.transform(piece, lambda c, k=k: c - np.array([360.0 * k, 0.0])))
    if shapely.get_dimensions(g) == 1:
        return shapely.multilinestrings([p for piece in pieces for p in shapely.get_parts(piece)
                                         if p.geom_type == "LineString"])
    return shapely.union_all(pieces)
