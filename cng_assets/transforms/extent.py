"""Whether a layer's coordinates fit the CRS it declares: the CRS's own bounds from pyproj, no hand-made tables.

A geographic CRS holds longitudes -180..180 and latitudes -90..90. A projected CRS holds what its area of use
projects to, with room to spare: data often reach well past it (PAD-US's Pacific territories are far outside
CONUS Albers' area of use), so only coordinates far outside it, or degrees where none of it is, are refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

from pyproj import CRS, Transformer
from pyproj.exceptions import ProjError

from cng_assets.errors import CngInputError

DEGREES = (-180.0, -90.0, 180.0, 90.0)
TOLERANCE_DEGREES = 1e-6  # rounding in the source's storage, not a misplaced feature
REACH = 2.0  # how far past its area of use a projected CRS's data may go, in widths of that area
UTM = ("EPSG:32631", "EPSG:32731")  # any north and south zone: every zone has the same projected bounds


def check_extent(crs: str, bounds: Sequence[float], layer: str | None = None) -> None:
    """Refuse `bounds` (xmin, ymin, xmax, ymax in the source CRS's units) that the CRS cannot hold, saying which
    CRSs they look like where that can be told."""
    src = CRS.from_user_input(crs)
    problem = _misfit(src, tuple(bounds))
    if problem is None:
        return
    seen = ", ".join(f"{v:,.10g}" for v in bounds)
    raise CngInputError(
        f"coordinates (bounds {seen}) do not fit the layer's declared CRS {_name(src)}: {problem}", layer=layer,
        hint="fix the CRS the source declares (e.g. `ogr2ogr -a_srs EPSG:<code> fixed.gpkg <source>`) or reproject "
             "it; or leave the layer out with `exclude:` in the catalog entry")


def _misfit(src: CRS, b: tuple) -> str | None:
    if src.is_geographic:
        if _within(b, _widen(DEGREES, TOLERANCE_DEGREES)):
            return None
        if _within(b, (0.0, -90.0, 360.0, 90.0)):
            return "longitudes run 0..360 here: shift them to -180..180"
        return f"a geographic CRS holds longitude -180..180 and latitude -90..90; {_looks_projected(b)}"
    area = projected_area_of_use(src.to_wkt())
    if area is None:  # nothing to compare with (an engineering or custom CRS)
        return None
    if _within(b, DEGREES) and not _overlaps(b, area):
        return (f"its area of use is {_box(area)}, and these look like lon/lat degrees (EPSG:4326 or another "
                f"geographic CRS)")
    if not _within(b, _widen(area, REACH * max(area[2] - area[0], area[3] - area[1]))):
        return f"they are far outside its area of use, {_box(area)}; {_looks_projected(b)}"
    return None


@cache
def projected_area_of_use(wkt: str) -> tuple[float, float, float, float] | None:
    """The CRS's area of use (lon/lat, from the PROJ database) in the CRS's own coordinates."""
    crs = CRS.from_wkt(wkt)
    if crs.area_of_use is None:
        return None
    try:
        to_crs = Transformer.from_crs(CRS.from_epsg(4326), crs, always_xy=True)
        return tuple(to_crs.transform_bounds(*crs.area_of_use.bounds, densify_pts=21))
    except ProjError:  # PROJ cannot project the area: nothing to compare with
        return None


def _looks_projected(b: tuple) -> str:
    """What projected coordinates (metres or feet) might be, told by the UTM zones' own bounds."""
    north, south = (projected_area_of_use(CRS.from_user_input(c).to_wkt()) for c in UTM)
    corner = (b[2], b[3], b[2], b[3])  # the largest values: some features may still be in degrees
    if _within(corner, north) or _within(corner, south):
        return "these look like UTM metres (EPSG:326xx north, EPSG:327xx south) or another projected CRS"
    return "these look like projected coordinates (metres or feet)"


def _name(crs: CRS) -> str:
    code = crs.to_authority()
    return f"{':'.join(code)} ({crs.name})" if code else repr(crs.name)


def _box(b: tuple) -> str:
    return "x {:,.0f}..{:,.0f}, y {:,.0f}..{:,.0f}".format(b[0], b[2], b[1], b[3])


def _widen(b: tuple, by: float) -> tuple:
    return (b[0] - by, b[1] - by, b[2] + by, b[3] + by)


def _within(b: tuple, outer: tuple) -> bool:
    return outer[0] <= b[0] and outer[1] <= b[1] and b[2] <= outer[2] and b[3] <= outer[3]


def _overlaps(a: tuple, b: tuple) -> bool:
    return a[0] <= b[2] and b[0] <= a[2] and a[1] <= b[3] and b[1] <= a[3]
