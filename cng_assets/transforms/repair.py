"""Invalid polygons repaired so that holes and enclaves stay what the source drew.

GEOS's two make_valid methods each get one common case wrong: "linework" (even-odd over all rings) fills a hole
that shares an edge with its shell (GIS exports often draw them so), and "structure" (union of the parts) fills an
enclave drawn as a part inside another part of the same MultiPolygon (Lesotho in South Africa, as boundary files
draw it). So: each part by "structure" (its shell minus its holes, each ring's own area by its noded linework: a
bow-tie keeps both triangles), then the parts by nesting: a part inside another is a hole in it (and a part inside
that hole an island again); parts that overlap without one holding the other are merged; a repeated part counts once.
"""

from __future__ import annotations

import numpy as np
import shapely


def polygonal(geom):
    """A valid polygonal geometry (possibly empty) from an invalid Polygon or MultiPolygon."""
    parts = shapely.make_valid(shapely.get_parts(geom), method="structure", keep_collapsed=False)
    return combine_parts(parts)


def ring_region(xy: np.ndarray):
    """The area one ring encloses, valid (a self-crossing ring: every loop of it)."""
    return _polygons_of(shapely.make_valid(shapely.Polygon(xy), method="structure", keep_collapsed=False))


def combine_parts(parts) -> shapely.MultiPolygon | shapely.Polygon:
    """Valid polygonal parts of one feature as one valid geometry, by nesting (see the module's docstring)."""
    parts = np.array([p for p in shapely.get_parts(np.asarray(parts, dtype=object)) if p.geom_type == "Polygon"],
                     dtype=object)
    if len(parts) < 2:
        return parts[0] if len(parts) else shapely.Polygon()
    holder, held = shapely.STRtree(parts).query(parts, predicate="covers")
    pair = holder != held
    holder, held = holder[pair], held[pair]
    same = set(zip(holder.tolist(), held.tolist()))
    repeated = {max(a, b) for a, b in same if (b, a) in same}
    keep = np.array([i not in repeated for i in range(len(parts))])
    counted = keep[holder] & keep[held]
    depth = np.bincount(held[counted], minlength=len(parts))  # how many parts hold each one
    out = shapely.Polygon()
    for level in range(int(depth[keep].max()) + 1):
        layer = shapely.union_all(parts[keep & (depth == level)])
        out = shapely.union(out, layer) if level % 2 == 0 else shapely.difference(out, layer)
    return out


def _polygons_of(geom):
    return shapely.union_all([p for p in shapely.get_parts(geom) if p.geom_type in ("Polygon", "MultiPolygon")])
