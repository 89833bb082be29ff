"""clean(): features around a pole or across ±180° right in lon/lat, and repair that keeps holes and enclaves.
Expected figures come from the geometry as drawn (areas of lon/lat boxes and caps, geodesic areas), not from clean."""

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import shapely
from pyproj import Geod, Transformer

from cng_assets.transforms.geometry import CleanCounts, clean, to_wgs84
from cng_assets.transforms.geoparquet import write_geoparquet
from tests.conftest import shared

GEOD = Geod(ellps="WGS84")


def cleaned(geom, crs=None, kind="polygon"):
    counts = CleanCounts()
    out = clean(np.array([geom], dtype=object), kind=kind, geometry_type=None,
                transformer=to_wgs84(crs) if crs else None, counts=counts)
    return out[0], counts


def projected(crs, lon, lat):
    return np.column_stack(Transformer.from_crs(4326, crs, always_xy=True).transform(lon, lat))


def geodesic_area(geom) -> float:
    """km² on the ellipsoid of a lon/lat geometry, its edges densified (they are straight in lon/lat)."""
    return abs(GEOD.geometry_area_perimeter(shapely.segmentize(geom, 0.25))[0]) / 1e6


def cap_area(lat) -> float:
    lon = np.linspace(-180, 180, 1441)
    return abs(GEOD.polygon_area_perimeter(lon, np.full_like(lon, lat))[0]) / 1e6


@pytest.mark.parametrize("crs, lat", [("EPSG:3031", -70), ("EPSG:3413", 72)])
def test_ring_around_a_pole_in_a_polar_crs_is_closed_along_the_pole(crs, lat):
    """A ring of 72 vertices around the pole in polar stereographic (was: dropped as unrepairable, or a zigzag of
    a third of the area)."""
    lon = np.arange(72) * 5.0 + 3
    g, counts = cleaned(shapely.Polygon(projected(crs, lon, np.full(72, float(lat)))), crs)
    assert counts.closed_at_pole == 1 and counts.dropped_unrepairable == 0 and g.is_valid
    pole = 90 * np.sign(lat)
    assert g.bounds[0] == -180 and g.bounds[2] == 180 and pole in g.bounds
    assert g.area == pytest.approx(360 * (90 - abs(lat)), rel=2e-3)  # the cap, as a lon/lat box
    assert geodesic_area(g) == pytest.approx(cap_area(lat), rel=2e-3)
    assert g.covers(shapely.Point(0, pole)) and g.contains(shapely.Point(179.9, (pole + lat) / 2))


def test_polar_annulus_and_a_wedge_from_the_pole_across_180():
    lon = np.arange(72) * 5.0
    shell, hole = projected("EPSG:3031", lon, np.full(72, -70.0)), projected("EPSG:3031", lon, np.full(72, -80.0))
    annulus, _ = cleaned(shapely.Polygon(shell, [hole]), "EPSG:3031")
    assert annulus.area == pytest.approx(360 * 20 - 360 * 10, rel=2e-3)
    assert not annulus.intersects(shapely.Point(0, -85))
    # a basin drawn from the pole (a vertex on it) out to 80°S between 150°E and 160°W
    arc = np.linspace(150, 200, 51)
    wedge, counts = cleaned(shapely.Polygon([(0, 0), *projected("EPSG:3031", arc, np.full(51, -80.0))]), "EPSG:3031")
    assert counts.split_antimeridian == 1 and wedge.is_valid
    assert wedge.area == pytest.approx(50 * 10, rel=2e-3)
    assert wedge.covers(shapely.box(150.5, -89.9, 179.9, -80.1)) and wedge.covers(shapely.box(-179.9, -89.9, -160.5, -80.1))


def test_polar_layer_written_as_geoparquet(tmp_path):
    lon = np.arange(72) * 5.0
    src = tmp_path / "polar.gpkg"
    ring = shapely.Polygon(projected("EPSG:3031", lon, np.full(72, -65.0)))
    pyogrio.write_dataframe(gpd.GeoDataFrame({"n": [1]}, geometry=[ring], crs="EPSG:3031"), src, layer="ice")
    stats = write_geoparquet(str(src), "ice", tmp_path / "ice.parquet", kind="polygon")
    g = gpd.read_parquet(tmp_path / "ice.parquet").geometry.iloc[0]
    assert stats.rows_written == 1 and stats.counts.repaired == 0 and stats.counts.closed_at_pole == 1
    assert geodesic_area(g) == pytest.approx(cap_area(-65), rel=2e-3)


def test_antarctica_beside_a_wrapped_island_and_a_bowtie():
    """Natural Earth's Antarctica (closed along -90 through (180,-90), (-180,-90)), an island written across 180
    and an invalid part in one feature (was: TopologyException: side location conflict)."""
    land = pyogrio.read_dataframe(shared("naturalearth_lowres") / "naturalearth_lowres.shp")
    antarctica = land.loc[land.name == "Antarctica"].geometry.iloc[0]
    island = shapely.Polygon([(177, -18), (-178, -18), (-178, -16), (177, -16)])
    bowtie = shapely.Polygon([(0, 0), (1, 1), (1, 0), (0, 1)])
    g, counts = cleaned(shapely.MultiPolygon([*antarctica.geoms, island, bowtie]))
    assert g.is_valid and counts.split_antimeridian == 1 and counts.repaired == 1
    assert g.area == pytest.approx(antarctica.area + 5 * 2 + 0.5)
    assert g.covers(antarctica) and g.covers(shapely.box(-180, -18, -178, -16)) and g.covers(shapely.box(177, -18, 180, -16))


def test_polar_ring_in_lon_lat_whose_coast_also_crosses_180():
    """Closed along the pole's line like Antarctica, its coast going over 180 and back on the way (a peninsula
    across 180): was a third of its area."""
    # drawn on continuous longitudes (simple there), then written in -180..180 as a source would hold it
    drawn = [(-180, -84), (-90, -80), (0, -75), (90, -80), (178, -84), (178, -82), (182, -82), (182, -83), (180, -83),
             (180, -90), (-180, -90)]
    g, counts = cleaned(shapely.Polygon([(x - 360 if x > 180 else x, y) for x, y in drawn]))
    assert counts.split_antimeridian == 1 and g.is_valid
    assert g.area == pytest.approx(shapely.Polygon(drawn).area)
    assert g.covers(shapely.box(-180, -83, -178, -82)) and g.covers(shapely.box(170, -89, 178, -84))
    assert not g.intersects(shapely.Point(-179, -83.5))


def test_a_hole_sharing_an_edge_with_its_shell_stays_a_hole():
    g, counts = cleaned(shapely.Polygon([(0, 0), (4, 0), (4, 4), (0, 4)], [[(0, 1), (1, 1), (1, 2), (0, 2)]]))
    assert counts.repaired == 1 and g.is_valid and g.area == pytest.approx(15)  # was 16: the hole filled
    assert not g.intersects(shapely.Point(0.5, 1.5))


def test_enclaves_drawn_as_parts_become_holes_and_repeated_parts_count_once():
    outer, enclave, island = shapely.box(0, 0, 10, 10), shapely.box(2, 2, 8, 8), shapely.box(4, 4, 5, 5)
    g, counts = cleaned(shapely.MultiPolygon([outer, enclave, island]))
    assert counts.repaired == 1 and g.is_valid
    assert g.area == pytest.approx(100 - 36 + 1)  # structure's union said 100
    assert not g.intersects(shapely.Point(3, 3)) and g.contains(shapely.Point(4.5, 4.5))
    repeated, _ = cleaned(shapely.MultiPolygon([outer, outer]))
    assert repeated.area == pytest.approx(100)
    overlapping, _ = cleaned(shapely.MultiPolygon([shapely.box(0, 0, 2, 2), shapely.box(1, 1, 3, 3)]))
    assert overlapping.area == pytest.approx(7)  # merged: linework's even-odd would cut the overlap out (6)
    bowtie, _ = cleaned(shapely.Polygon([(0, 0), (1, 1), (1, 0), (0, 1)]))
    assert bowtie.area == pytest.approx(0.5)


def test_points_at_a_pole_stay_points_and_lines_across_180_are_cut():
    counts = CleanCounts()
    out = clean(np.array([shapely.Point(0, 0)]), kind="other", geometry_type="Point", transformer=to_wgs84("EPSG:3031"),
                counts=counts)
    assert out[0].geom_type == "Point" and out[0].y == pytest.approx(-90)
    line = shapely.LineString(projected("EPSG:3832", np.array([175.0, 185.0]), np.array([-15.0, -15.0])))
    g, counts = cleaned(line, "EPSG:3832", kind="other")
    assert counts.split_antimeridian == 1 and g.geom_type == "MultiLineString" and len(g.geoms) == 2
    assert sorted(round(p.bounds[0]) for p in g.geoms) == [-180, 175] and g.length == pytest.approx(10, rel=1e-6)
