"""GeoParquet products checked with readers other than the writer: pyarrow's footer, geopandas, DuckDB."""

import json

import duckdb
import geopandas as gpd
import h3
import numpy as np
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pyogrio
import pytest
import shapely

from cng_assets.errors import CngInputError
from cng_assets.transforms import layers
from cng_assets.transforms.geoparquet import write_geoparquet
from cng_assets.transforms.hex.fill import HexSettings
from cng_assets.transforms.hex.layer import hex_layer
from cng_assets.transforms.hilbert import hilbert_keys
from tests.conftest import FIXTURES, MIXED, shared


def geo_metadata(path) -> dict:
    return json.loads(pq.ParquetFile(path).metadata.metadata[b"geo"])


def test_natural_earth_as_geoparquet_1_1(tmp_path):
    src = shared("naturalearth_lowres") / "naturalearth_lowres.shp"
    out = tmp_path / "ne.parquet"
    stats = write_geoparquet(str(src), "naturalearth_lowres", out, kind="polygon")
    assert (stats.features_read, stats.rows_written, stats.dropped) == (177, 177, 0)

    geo = geo_metadata(out)
    col = geo["columns"]["geometry"]
    assert (geo["version"], geo["primary_column"], col["encoding"]) == ("1.1.0", "geometry", "WKB")
    assert col["geometry_types"] == ["MultiPolygon"] and col["orientation"] == "counterclockwise"
    assert col["crs"]["id"] == {"authority": "EPSG", "code": 4326}
    assert col["covering"]["bbox"]["xmin"] == ["bbox", "xmin"]
    meta = pq.ParquetFile(out).metadata
    assert {meta.row_group(0).column(i).compression for i in range(meta.num_columns)} == {"ZSTD"}

    df = gpd.read_parquet(out)
    assert df.crs.to_epsg() == 4326 and len(df) == 177
    assert set(df.geom_type) == {"MultiPolygon"} and df.is_valid.all()
    assert sorted(df["_cng_fid"]) == list(range(1, 178))
    source = pyogrio.read_dataframe(src)
    fiji = df.loc[df.name == "Fiji"].geometry.iloc[0]
    assert fiji.equals(source.loc[source.name == "Fiji"].geometry.iloc[0])  # already split at ±180 in the source
    assert df.loc[df.name == "Antarctica"].geometry.iloc[0].bounds[1] == pytest.approx(-90)

    bbox = duckdb.sql(f"SELECT min(bbox.xmin), max(bbox.xmax), min(bbox.ymin), max(bbox.ymax), "
                      f"count(DISTINCT _cng_fid) FROM '{out}'").fetchone()
    assert bbox[:4] == pytest.approx((-180, 180, -90, 83.6451), abs=1e-3) and bbox[4] == 177


def test_coordinates_are_lon_lat(tmp_path):
    out = tmp_path / "w.parquet"
    write_geoparquet(str(shared("coutwildrnp") / "coutwildrnp.shp"), "coutwildrnp", out, kind="polygon")
    xmin, ymin, xmax, ymax = gpd.read_parquet(out).total_bounds
    assert -114 < xmin < xmax < -104 and 37 < ymin < ymax < 42  # Colorado/Utah in lon, lat


def test_fgdb_layer_reprojected_to_4326_without_z(fgdb, tmp_path):
    out = tmp_path / "a.parquet"
    stats = write_geoparquet(str(fgdb), "test_areas", out, kind="polygon")
    assert stats.source_crs == "EPSG:4269"
    df = gpd.read_parquet(out)
    reference = pyogrio.read_dataframe(fgdb, layer="test_areas").to_crs(4326)
    assert not df.has_z.any()
    assert df.total_bounds == pytest.approx(reference.total_bounds, abs=1e-6)
    assert {"PROTECT_ID", "FEATURE_NA", "_cng_fid", "geometry"} <= set(df.columns)


def test_points_layer_keeps_points(fgdb, tmp_path):
    out = tmp_path / "p.parquet"
    write_geoparquet(str(fgdb), "test_points", out, kind="other")
    df = gpd.read_parquet(out)
    assert set(df.geom_type) == {"Point"} and not df.has_z.any() and len(df) == 2
    assert geo_metadata(out)["columns"]["geometry"]["geometry_types"] == ["Point"]


@pytest.mark.parametrize("fixture", ["curvepolygon.gpkg", "multisurface.gpkg"])
def test_curved_polygons_are_linearised(tmp_path, fixture):
    src = FIXTURES / fixture
    layer = pyogrio.list_layers(src)[0][0]
    out = tmp_path / "c.parquet"
    stats = write_geoparquet(str(src), layer, out, kind="polygon")
    assert stats.curved_linearised == 1 and stats.rows_written == 1
    g = gpd.read_parquet(out).geometry.iloc[0]
    gdal_linear = pyogrio.read_dataframe(src).geometry.iloc[0]  # GDAL's own linearisation
    assert g.geom_type == "MultiPolygon" and g.is_valid and g.equals(gdal_linear)


def test_measured_lines_lose_z_and_m(tmp_path):
    out = tmp_path / "zm.parquet"
    write_geoparquet(str(FIXTURES / "line_zm.gpkg"), "line_zm", out, kind="other")
    df = gpd.read_parquet(out)
    assert set(df.geom_type) == {"MultiLineString"} and not df.has_z.any()
    assert shapely.get_coordinate_dimension(df.geometry.values).tolist() == [2]


def test_invalid_rings_repaired_and_unrepairable_dropped_and_counted(bad_gpkg, tmp_path):
    out = tmp_path / "i.parquet"
    stats = write_geoparquet(str(bad_gpkg), "invalid rings", out, kind="polygon")
    assert (stats.counts.repaired, stats.counts.dropped_unrepairable, stats.dropped_fids) == (1, 1, [3])
    df = gpd.read_parquet(out)
    assert sorted(df._cng_fid) == [1, 2] and df.is_valid.all() and set(df.geom_type) == {"MultiPolygon"}
    assert df.loc[df._cng_fid == 1].geometry.iloc[0].area == pytest.approx(0.5)  # the bow-tie's two triangles


def test_layer_of_only_null_geometries_is_refused(bad_gpkg, tmp_path):
    with pytest.raises(CngInputError, match="all 2 features have null, empty or unrepairable geometry"):
        write_geoparquet(str(bad_gpkg), "only_nulls", tmp_path / "n.parquet", kind="polygon")


def test_layer_without_crs_needs_catalog_crs(bad_gpkg, tmp_path):
    with pytest.raises(CngInputError, match="declares no CRS.*set `crs:`"):
        write_geoparquet(str(bad_gpkg), "no_crs", tmp_path / "x.parquet", kind="polygon")
    stats = write_geoparquet(str(bad_gpkg), "no_crs", tmp_path / "x.parquet", kind="polygon", crs="EPSG:4326")
    assert stats.rows_written == 1


def test_empty_layer_gives_empty_product_with_schema(bad_gpkg, tmp_path):
    out = tmp_path / "e.parquet"
    stats = write_geoparquet(str(bad_gpkg), "empty layer", out, kind="polygon")
    assert stats.rows_written == 0
    t = pq.read_table(out)
    assert t.num_rows == 0 and {"_cng_fid", "name", "geometry", "bbox"} <= set(t.column_names)
    assert geo_metadata(out)["version"] == "1.1.0"


def test_antimeridian_polygon_from_projected_source_is_split(tmp_path):
    src = tmp_path / "pacific.gpkg"
    square = shapely.Polygon([(175, -20), (185, -20), (185, -10), (175, -10)])  # 10° x 10° across 180°
    pacific = gpd.GeoSeries([shapely.segmentize(square, 0.5)], crs=4326).to_crs("EPSG:3832")  # PDC Mercator
    pyogrio.write_dataframe(gpd.GeoDataFrame({"name": ["monument"]}, geometry=pacific), src, layer="m")
    out = tmp_path / "m.parquet"
    stats = write_geoparquet(str(src), "m", out, kind="polygon")
    g = gpd.read_parquet(out).geometry.iloc[0]
    assert stats.counts.split_antimeridian == 1
    assert len(g.geoms) == 2 and g.area == pytest.approx(100, rel=1e-3)  # a band around the globe would be 3500
    assert sorted(round(p.bounds[0]) for p in g.geoms) == [-180, 175]


def test_lon_lat_ring_written_across_180_is_split_with_its_real_area_and_cells(tmp_path):
    # An island group from 177°E to 178°W, its ring written in lon/lat as 177 ... -178 ... 177 (no reprojection).
    src = tmp_path / "islands.gpkg"
    ring = shapely.Polygon([(177, -18), (-178, -18), (-178, -16), (177, -16)])
    pyogrio.write_dataframe(gpd.GeoDataFrame({"name": ["islands"]}, geometry=[ring], crs=4326), src, layer="i")
    out = tmp_path / "i.parquet"
    stats = write_geoparquet(str(src), "i", out, kind="polygon")
    g = gpd.read_parquet(out).geometry.iloc[0]
    assert stats.counts.split_antimeridian == 1
    assert g.area == pytest.approx(5 * 2) and len(g.geoms) == 2  # the band around the globe is 355 x 2

    east, west = shapely.box(177, -18, 180, -16), shapely.box(-180, -18, -178, -16)  # the real footprint
    expected = {c for part in (east, west) for c in h3.geo_to_cells(part, 5)}
    result = hex_layer(str(out), tmp_path / "hex", HexSettings(5, (0,)))
    assert result.passed
    cells = duckdb.sql(f"SELECT count(*), count(DISTINCT h5) FROM read_parquet('{tmp_path}/hex/*/*.parquet')").fetchone()
    assert cells == (len(expected), len(expected))


def test_only_the_parts_that_wrap_are_cut(tmp_path):
    # One feature: an island across 180°, an island across 0° and a ring around the south pole (lon/lat).
    across_180 = shapely.Polygon([(177, -18), (-178, -18), (-178, -16), (177, -16)])
    across_0 = shapely.box(-1, 50, 1, 51)
    pole = shapely.Polygon([(-180, -80), (180, -80), (180, -90), (-180, -90)])
    src = tmp_path / "parts.gpkg"
    feature = shapely.MultiPolygon([across_180, across_0, pole])
    pyogrio.write_dataframe(gpd.GeoDataFrame({"n": [1]}, geometry=[feature], crs=4326), src, layer="p")
    stats = write_geoparquet(str(src), "p", tmp_path / "p.parquet", kind="polygon")
    g = gpd.read_parquet(tmp_path / "p.parquet").geometry.iloc[0]
    assert stats.counts.split_antimeridian == 1
    assert g.area == pytest.approx(5 * 2 + 2 * 1 + 360 * 10) and len(g.geoms) == 4
    assert g.covers(across_0) and g.covers(pole)


def write_layer(path, crs, geoms, layer="l"):
    pyogrio.write_dataframe(gpd.GeoDataFrame({"n": range(len(geoms))}, geometry=geoms, crs=crs), path, layer=layer)
    return str(path)


@pytest.mark.parametrize("crs, boxes, told", [
    # UTM metres in a layer declaring lon/lat (beside one feature that really is in degrees)
    ("EPSG:4326", [(10, 45, 11, 46), (501000, 4000000, 501100, 4001000)],
     ["bounds 10, 45, 501,100, 4,001,000", "EPSG:4326 (WGS 84)", "look like UTM metres"]),
    ("EPSG:4326", [(170, -10, 190, 10)], ["longitudes run 0..360"]),
    ("EPSG:32633", [(10, 45, 12, 46)], ["EPSG:32633", "area of use is x 166,021..833,979", "look like lon/lat degrees"]),
    ("EPSG:3857", [(0, 0, 1e9, 1e9)], ["far outside its area of use", "x -20,037,508..20,037,508"]),
])
def test_coordinates_the_crs_cannot_hold_are_refused(tmp_path, crs, boxes, told):
    src = write_layer(tmp_path / "s.gpkg", crs, [shapely.box(*b) for b in boxes])
    out = tmp_path / "l.parquet"
    with pytest.raises(CngInputError) as e:
        write_geoparquet(src, "l", out, kind="polygon")
    assert e.value.layer == "l" and "do not fit the layer's declared CRS" in e.value.problem
    assert all(t in str(e.value) for t in told), str(e.value)
    assert "fix the CRS the source declares" in e.value.hint
    assert not out.exists()


def test_projected_data_well_past_the_area_of_use_are_kept(tmp_path):
    # PAD-US in CONUS Albers (area of use: CONUS onshore) also holds Guam, American Samoa and Wake Island.
    places = [(-100, 40), (144.7, 13.4), (-170.7, -14.3), (166.6, 19.3)]
    lonlat = gpd.GeoSeries([shapely.Point(p).buffer(0.1) for p in places], crs=4326)
    src = write_layer(tmp_path / "padus.gpkg", "ESRI:102039", list(lonlat.to_crs("ESRI:102039")))
    out = tmp_path / "l.parquet"
    assert write_geoparquet(src, "l", out, kind="polygon").rows_written == 4
    centres = shapely.centroid(gpd.read_parquet(out).sort_values("n").geometry.values)
    assert np.allclose(shapely.get_coordinates(centres), places, atol=1e-3)


def test_polygon_layer_of_mixed_types_keeps_only_polygons_and_counts_the_rest(mixed_geojson, tmp_path):
    out = tmp_path / "m.parquet"
    stats = write_geoparquet(str(mixed_geojson), "mixed", out, kind="polygon")
    c = stats.counts
    assert (c.dropped_other_geometry_types, c.trimmed_other_geometry_types, c.repaired) == (2, 1, 1)
    assert stats.rows_written + stats.dropped == stats.features_read == len(MIXED)
    df = gpd.read_parquet(out).set_index("name")
    assert sorted(df.index) == ["collection", "multi", "spike", "square"]
    assert set(df.geom_type) == {"MultiPolygon"} and df.is_valid.all()  # no line left in a collection
    assert geo_metadata(out)["columns"]["geometry"]["geometry_types"] == ["MultiPolygon"]
    # what is kept is the polygonal part of each feature, whole
    assert df.geometry["collection"].equals(shapely.MultiPolygon([MIXED["collection"].geoms[0]]))
    assert df.geometry["spike"].area == pytest.approx(1)


def test_topojson_of_polygons_and_a_point_is_a_polygon_layer(tmp_path):
    # TopoJSON's objects share arcs; GDAL reads them as one layer of type "Unknown", with no CRS.
    src = tmp_path / "t.topojson"
    src.write_text(json.dumps({
        "type": "Topology", "transform": {"scale": [1, 1], "translate": [0, 0]},
        "arcs": [[[0, 0], [1, 0], [0, 1], [-1, 0], [0, -1]], [[1, 0], [1, 0], [0, 1], [-1, 0], [0, -1]]],
        "objects": {"shapes": {"type": "GeometryCollection", "geometries": [
            {"type": "Polygon", "arcs": [[0]], "properties": {"n": 1}},
            {"type": "MultiPolygon", "arcs": [[[1]]], "properties": {"n": 2}},
            {"type": "Point", "coordinates": [9, 9], "properties": {"n": 3}}]}}}))
    layer = layers.discover(str(src)).layers[0]
    assert (layer.geometry_type, layer.kind, layer.geometry_families) == ("Unknown", "polygon", {"polygon": 2, "point": 1})
    out = tmp_path / "t.parquet"
    stats = write_geoparquet(str(src), layer.name, out, kind=layer.kind, crs="EPSG:4326")
    assert stats.counts.dropped_other_geometry_types == 1
    df = gpd.read_parquet(out)
    assert sorted(df.n) == [1, 2] and set(df.geom_type) == {"MultiPolygon"}
    assert shapely.area(df.geometry.values).sum() == pytest.approx(2)


def test_source_columns_named_like_ours_are_renamed_case_insensitively(tmp_path):
    """`BBox` beside our `bbox` once made DuckDB read ours as `bbox_1`: colliding source columns become `src_...`,
    recorded in the footer, and the covering names the real struct column for pyarrow and DuckDB alike."""
    src = tmp_path / "clash.geojson"
    frame = gpd.GeoDataFrame({"BBox": ["b1", "b2"], "_CNG_FID": [7, 8], "GEOMETRY": ["g1", "g2"], "h10": [1.5, 2.5],
                              "_hilbert": ["k1", "k2"]},
                             geometry=[shapely.box(0, 0, 1, 1), shapely.box(2, 2, 3, 3)], crs=4326)
    pyogrio.write_dataframe(frame, src, driver="GeoJSON")
    out = tmp_path / "clash.parquet"
    stats = write_geoparquet(str(src), "clash", out, kind="polygon")
    renamed = {"BBox": "src_BBox", "_CNG_FID": "src__CNG_FID", "GEOMETRY": "src_GEOMETRY", "h10": "src_h10"}
    assert stats.renamed_columns == renamed
    footer = pq.read_metadata(out).metadata
    assert json.loads(footer[b"cng_renamed_columns"]) == renamed
    covering = geo_metadata(out)["columns"]["geometry"]["covering"]["bbox"]
    assert covering == {k: ["bbox", k] for k in ("xmin", "ymin", "xmax", "ymax")}

    t = pq.read_table(out)
    assert t.column_names == ["_cng_fid", "src_BBox", "src__CNG_FID", "src_GEOMETRY", "src_h10", "_hilbert",
                              "geometry", "bbox"]
    assert str(t.schema.field("bbox").type) == "struct<xmin: double, ymin: double, xmax: double, ymax: double>"
    assert t.column("_cng_fid").to_pylist() == [1, 2]
    assert t.column("src_BBox").to_pylist() == ["b1", "b2"] and t.column("src_h10").to_pylist() == [1.5, 2.5]
    assert t.column("_hilbert").to_pylist() == ["k1", "k2"]  # a source column named like the sort key survives

    con = duckdb.connect()
    rel = con.sql("SELECT * FROM read_parquet($p) ORDER BY _cng_fid", params={"p": str(out)})
    assert rel.columns == t.column_names  # nothing renamed by DuckDB (no `bbox_1`)
    assert rel.types[rel.columns.index("bbox")] == "STRUCT(xmin DOUBLE, ymin DOUBLE, xmax DOUBLE, ymax DOUBLE)"
    assert con.execute("SELECT src_BBox, src__CNG_FID, src_GEOMETRY, bbox.xmax FROM read_parquet($p) "
                       "ORDER BY _cng_fid", {"p": str(out)}).fetchall() == [("b1", 7, "g1", 1.0), ("b2", 8, "g2", 3.0)]


def _row_group_boxes(meta) -> np.ndarray:
    """Each row group's extent (xmin, ymin, xmax, ymax) from the bbox columns' statistics."""
    names = [meta.schema.column(i).path for i in range(meta.num_columns)]
    return np.array([[getattr(meta.row_group(rg).column(names.index(f"bbox.{k}")).statistics, m)
                      for k, m in (("xmin", "min"), ("ymin", "min"), ("xmax", "max"), ("ymax", "max"))]
                     for rg in range(meta.num_row_groups)])


def test_row_groups_are_spatially_compact_and_bbox_filters_skip_most(tmp_path):
    """Hilbert order makes each row group cover a small area, so a bbox filter reads a few row groups only."""
    rng = np.random.default_rng(7)
    x, y = rng.uniform(-170, 170, 60_000), rng.uniform(-80, 80, 60_000)
    src = tmp_path / "scatter.gpkg"
    pyogrio.write_dataframe(gpd.GeoDataFrame({"i": np.arange(len(x))},
                                             geometry=shapely.box(x, y, x + 0.01, y + 0.01), crs=4326), src)
    out = tmp_path / "scatter.parquet"
    write_geoparquet(str(src), "scatter", out, kind="polygon", row_group_bytes=150_000)  # ~1,000 rows a group
    meta = pq.ParquetFile(out).metadata
    assert meta.num_row_groups >= 40
    boxes = _row_group_boxes(meta)
    assert np.mean((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])) < 0.05 * 340 * 160
    window = (10, 10, 20, 20)
    overlapping = int(((boxes[:, 0] < window[2]) & (boxes[:, 2] > window[0]) & (boxes[:, 1] < window[3])
                       & (boxes[:, 3] > window[1])).sum())
    assert 1 <= overlapping <= 0.1 * meta.num_row_groups  # what a reader pruning on the statistics reads
    inside = int(((x > 10) & (x + 0.01 < 20) & (y > 10) & (y + 0.01 < 20)).sum())
    hits = duckdb.sql(f"SELECT count(*) FROM '{out}' WHERE bbox.xmin > 10 AND bbox.xmax < 20 "
                      f"AND bbox.ymin > 10 AND bbox.ymax < 20").fetchone()[0]
    assert hits == inside
    fields = {k: pc.field("bbox", k) for k in ("xmin", "ymin", "xmax", "ymax")}
    where = (fields["xmin"] > 10) & (fields["xmax"] < 20) & (fields["ymin"] > 10) & (fields["ymax"] < 20)
    assert ds.dataset(out).count_rows(filter=where) == inside
    b = pq.read_table(out, columns=["bbox"]).column("bbox").combine_chunks()
    cx, cy = [(b.field(f"{a}min").to_numpy() + b.field(f"{a}max").to_numpy()) / 2 for a in "xy"]
    assert (np.diff(hilbert_keys(cx, cy).astype(np.float64)) >= 0).all()  # still in Hilbert order


def test_row_groups_are_sized_by_bytes(tmp_path):
    """A few huge polygons make row groups of few rows, under the byte target; points make groups of many rows."""
    theta = np.linspace(0, 2 * np.pi, 20_000, endpoint=False)  # 20,000 vertices: about 320 kB of WKB each
    huge = [shapely.Polygon(np.c_[x + np.cos(theta), np.sin(theta) * (1 + 0.1 * np.sin(40 * theta))])
            for x in range(-170, 170, 10)]
    points = shapely.points(np.random.default_rng(3).uniform(-170, 170, (200_000, 2)) * [1, 0.5])
    target = 2_000_000
    for name, geoms in (("huge", huge), ("points", points)):
        src = tmp_path / f"{name}.gpkg"
        pyogrio.write_dataframe(gpd.GeoDataFrame({"name": [name] * len(geoms)}, geometry=geoms, crs=4326), src)
        write_geoparquet(str(src), name, tmp_path / f"{name}.parquet", kind="polygon" if name == "huge" else "other",
                         row_group_bytes=target)
    huge_meta = pq.read_metadata(tmp_path / "huge.parquet")
    sizes = [huge_meta.row_group(i).total_byte_size for i in range(huge_meta.num_row_groups)]
    assert huge_meta.num_rows == len(huge) and huge_meta.num_row_groups >= 5
    assert max(sizes) <= target and max(huge_meta.row_group(i).num_rows for i in range(huge_meta.num_row_groups)) < 10
    assert len(gpd.read_parquet(tmp_path / "huge.parquet")) == len(huge)
    point_meta = pq.read_metadata(tmp_path / "points.parquet")
    rows = [point_meta.row_group(i).num_rows for i in range(point_meta.num_row_groups)]
    assert sum(rows) == 200_000 and rows[0] > 16_384  # many more rows a group than a fixed row count gave
    assert point_meta.row_group(0).total_byte_size <= target
    # the default target: the whole point layer is one row group (about 16 MB uncompressed)
    write_geoparquet(str(tmp_path / "points.gpkg"), "points", tmp_path / "default.parquet", kind="other")
    assert pq.read_metadata(tmp_path / "default.parquet").num_row_groups == 1


def test_hilbert_keys_walk_the_grid_one_step_at_a_time():
    order = 4
    n = 1 << order
    gx, gy = np.meshgrid(np.arange(n), np.arange(n))
    lon = (gx.ravel() + 0.5) / n * 360 - 180
    lat = (gy.ravel() + 0.5) / n * 180 - 90
    d = hilbert_keys(lon, lat, order=order)
    assert sorted(d.tolist()) == list(range(n * n))  # a permutation of the cells
    by_d = np.argsort(d)
    steps = np.abs(np.diff(gx.ravel()[by_d])) + np.abs(np.diff(gy.ravel()[by_d]))
    assert (steps == 1).all()  # consecutive keys are neighbouring cells


def test_a_geojson_id_property_that_gdal_also_takes_as_fid(tmp_path):
    """GDAL makes a GeoJSON `id` property the FID *and* keeps it as a field, so two Arrow columns share the name
    (was: KeyError 'Field "id" exists 2 times'). Checked against the file read as plain JSON."""
    features = [{"type": "Feature", "properties": {"id": 10 + i, "name": f"park {i}"},
                 "geometry": shapely.geometry.mapping(shapely.box(i, 0, i + 0.5, 1))} for i in range(4)]
    src = tmp_path / "parks.geojson"
    src.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    assert pyogrio.read_info(src)["fid_column"] == "id"  # the GDAL behaviour this is about
    stats = write_geoparquet(str(src), "parks", tmp_path / "parks.parquet", kind="polygon")
    product = pq.read_table(tmp_path / "parks.parquet").sort_by("_cng_fid")
    assert stats.rows_written == len(features)
    assert product.column("id").to_pylist() == [f["properties"]["id"] for f in features]
    assert product.column("name").to_pylist() == [f["properties"]["name"] for f in features]
    areas = shapely.area(shapely.from_wkb(product.column("geometry").to_numpy(zero_copy_only=False)))
    assert np.allclose(areas, 0.5)


def test_a_local_engineering_crs_is_refused_by_name(tmp_path):
    """A CAD or survey export in a local (engineering) CRS: PROJ cannot place it on the Earth (was: a raw
    ProjError); the layer is refused, saying what to do, and nothing is written."""
    frame = gpd.GeoDataFrame({"name": ["site"]}, geometry=[shapely.box(0, 0, 10, 10)])
    pyogrio.write_dataframe(frame, tmp_path / "site.shp")
    (tmp_path / "site.prj").write_text('LOCAL_CS["site grid",UNIT["metre",1],AXIS["X",EAST],AXIS["Y",NORTH]]')
    with pytest.raises(CngInputError, match=r"its CRS 'site grid' \(Engineering CRS\) is not tied to the Earth.*"
                                            r"What to do: reproject the layer"):
        write_geoparquet(str(tmp_path / "site.shp"), "site", tmp_path / "site.parquet", kind="polygon")
    assert not (tmp_path / "site.parquet").exists()
