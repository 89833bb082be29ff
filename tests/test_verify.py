"""The check against the source (transforms/verify/geoparquet.py): right products pass, and a product with one feature wrong,
a row missing, a feature moved or a footer readers cannot read fails, saying which."""

import geopandas as gpd
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pyogrio
import pytest
import shapely
from pyproj import Transformer

from cng_assets.transforms.geoparquet import write_geoparquet
from cng_assets.transforms.verify.geoparquet import verify_geoparquet
from tests.conftest import shared

TO_3031 = Transformer.from_crs(4326, 3031, always_xy=True)


def polar(lon, lat):
    return np.column_stack(TO_3031.transform(lon, lat))


RING = shapely.Polygon(polar(np.arange(72) * 5.0, np.full(72, -65.0)))  # around the south pole
ARC = np.linspace(150, 200, 51)
WEDGE = shapely.Polygon([(0, 0), *polar(ARC, np.full(51, -80.0))])  # from the pole, across 180
HOLED = shapely.Polygon([(0, 0), (4e5, 0), (4e5, 4e5), (0, 4e5)],  # hole sharing an edge with its shell
                        [[(0, 1e5), (1e5, 1e5), (1e5, 2e5), (0, 2e5)]])
ENCLAVE = shapely.MultiPolygon([shapely.box(1e6, 1e6, 2e6, 2e6), shapely.box(1.4e6, 1.4e6, 1.6e6, 1.6e6)])
BOWTIE = shapely.Polygon([(-1e6, -1e6), (-9e5, -9e5), (-9e5, -1e6), (-1e6, -9e5)])


@pytest.fixture
def layer(tmp_path):
    """A polar layer: fid 1 ring around the pole, 2 wedge across 180, 3 null, 4 hole on its shell's edge,
    5 enclave drawn as a part, 6 bow-tie; and its GeoParquet."""
    src = tmp_path / "polar.gpkg"
    frame = gpd.GeoDataFrame({"n": range(1, 7)}, geometry=[RING, WEDGE, None, HOLED, ENCLAVE, BOWTIE], crs="EPSG:3031")
    pyogrio.write_dataframe(frame, src, layer="ice", promote_to_multi=True)
    out = tmp_path / "ice.parquet"
    stats = write_geoparquet(str(src), "ice", out, kind="polygon")
    return str(src), out, stats


def check(src, out, stats, **changes):
    claims = {"dropped": stats.dropped, "dropped_features": stats.dropped_features, **changes}
    return verify_geoparquet(out, src, "ice", source_crs=stats.source_crs, polygons=True, **claims)


def replace_geometry(out, fid, geom):
    """The product with one feature's geometry (and its bbox covering, so only the shape is wrong) replaced."""
    t = pq.read_table(out)
    i = t.column("_cng_fid").to_pylist().index(fid)
    wkb = t.column("geometry").to_pylist()
    wkb[i] = shapely.to_wkb(geom, flavor="iso")
    boxes = t.column("bbox").to_pylist()
    boxes[i] = dict(zip(("xmin", "ymin", "xmax", "ymax"), shapely.bounds(geom).tolist()))
    t = t.set_column(t.schema.get_field_index("geometry"), "geometry", pa.array(wkb, pa.binary()))
    t = t.set_column(t.schema.get_field_index("bbox"), "bbox", pa.array(boxes, t.schema.field("bbox").type))
    pq.write_table(t, out)


def test_a_right_product_passes_with_its_figures(layer):
    v = check(*layer)
    assert v.passed, v.problems
    f = v.figures
    assert (f["source_features"], f["rows"], f["missing_fids"], f["dropped_listed"]) == (
        6, 5, [3], ["3: null or empty geometry"])
    assert f["compared"] == "all features" and f["areas_compared"] == 3  # ring, wedge, the hole on the shell's edge
    assert f["areas_set_by_repair"] == 2  # the enclave and the bow-tie: listed with both figures, not failed
    assert [s.split(":")[0] for s in f["areas_set_by_repair_listed"]] == ["5", "6"]
    assert f["reader_rows"] == {"duckdb": 5, "pyarrow": 5, "geopandas": 5}


@pytest.mark.parametrize("fid, wrong", [
    # the ring around the pole reprojected point by point (the old zigzag), and the hole filled (the old repair)
    (1, shapely.transform(RING, lambda c: np.column_stack(TO_3031.transform(c[:, 0], c[:, 1], direction="INVERSE")))),
    (4, shapely.Polygon(HOLED.exterior)),
])
def test_one_wrong_feature_fails_the_check(layer, fid, wrong):
    src, out, stats = layer
    lonlat = wrong if fid == 1 else shapely.transform(
        wrong, lambda c: np.column_stack(TO_3031.transform(c[:, 0], c[:, 1], direction="INVERSE")))
    replace_geometry(out, fid, shapely.MultiPolygon([lonlat]))
    v = check(src, out, stats)
    assert not v.passed and v.figures["areas_wrong"] == 1
    assert v.figures["areas_wrong_listed"][0].startswith(f"{fid}: ")


def test_a_missing_row_or_a_wrong_dropped_list_fails(layer):
    src, out, stats = layer
    assert not check(src, out, stats, dropped_features=[(4, "null or empty geometry")]).passed
    assert not check(src, out, stats, dropped=0, dropped_features=[]).passed
    pq.write_table(pq.read_table(out).filter(pa.compute.field("_cng_fid") != 2), out)
    v = check(src, out, stats)
    assert not v.passed and v.figures["missing_fids"] == [2, 3]
    # counts and fids that agree, but a reason the source does not bear out: fid 2 has its geometry
    v = check(src, out, stats, dropped=2, dropped_features=[(2, "null or empty geometry"), (3, "null or empty geometry")])
    assert v.problems == ["features dropped for a reason the source does not bear out: ['2: null or empty geometry']"]


def test_a_moved_feature_fails_the_bounds(layer):
    src, out, stats = layer
    holed = gpd.read_parquet(out).set_index("_cng_fid").geometry[4]
    replace_geometry(out, 4, shapely.affinity.translate(holed, yoff=40))  # same shape, off the source's extent
    v = check(src, out, stats)
    assert not v.passed and any("latitudes" in p for p in v.problems)


def test_a_footer_readers_cannot_read_fails(layer):
    src, out, stats = layer
    t = pq.read_table(out)
    pq.write_table(t.replace_schema_metadata({**t.schema.metadata, b"geo": b'{"version": "1.1.0"}'}), out)
    v = check(src, out, stats)
    assert not v.passed and any("reader's default call fails" in p for p in v.problems)


def test_natural_earth_passes_antarctica_fiji_and_russia_compared(tmp_path):
    src = str(shared("naturalearth_lowres") / "naturalearth_lowres.shp")
    stats = write_geoparquet(src, "naturalearth_lowres", tmp_path / "ne.parquet", kind="polygon")
    v = verify_geoparquet(tmp_path / "ne.parquet", src, "naturalearth_lowres", source_crs=stats.source_crs,
                          polygons=True, dropped=0, dropped_features=[])
    assert v.passed, v.problems
    assert v.figures["areas_compared"] == 177 and v.figures["source_bounds_lonlat"][1] == pytest.approx(-90)
