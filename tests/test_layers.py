
import geopandas as gpd
import pyarrow as pa
import pyarrow.parquet as pq
import pyogrio
import pytest
import shapely
from click.testing import CliRunner

from cng_assets.cli import main
from cng_assets.errors import CngInputError
from cng_assets.transforms import layers, sources, tables
from cng_assets.transforms.geometry import wkb_type_ids
from cng_assets.transforms.slugs import slugify, unique_slugs
from tests.conftest import MIXED, shared

EXPECTED_FGDB = {  # name: (kind, features), from the sample's README
    "basetable_2": ("table", 3), "basetable": ("table", 2), "base_table1": ("table", 14),
    "another_relationship": ("table", 0), "test_areas": ("polygon", 2), "test_lines": ("other", 2),
    "more_test_lines": ("other", 2), "test_points": ("other", 2),
}


def test_fgdb_layers_each_with_its_own_count(fgdb):
    inv = layers.discover(sources.gdal_path(str(fgdb)))
    assert {x.name: (x.kind, x.features) for x in inv.layers} == EXPECTED_FGDB
    areas = inv.layer("test_areas")
    assert areas.crs == "EPSG:4269" and areas.geometry_type == "MultiPolygon Z"
    assert ("PROTECT_ID", "OFTReal") in areas.fields


def test_layers_command_says_what_a_layer_of_undeclared_type_is(mixed_geojson):
    out = CliRunner().invoke(main, ["layers", str(mixed_geojson)], catch_exceptions=False).output
    row = next(line for line in out.splitlines() if " mixed " in line)
    assert [c.strip() for c in row.split("│")][3] == "polygon"  # from the geometries in it: any polygon


def test_fgdb_coded_value_domains_become_lookup_tables(fgdb, tmp_path):
    inv = layers.discover(sources.gdal_path(str(fgdb)))
    assert len(inv.domains) == 38
    bormethod = next(d for d in inv.domains if d.name == "d_bormethod")
    assert ("1", "Auger Boring") in bormethod.codes
    assert inv.layer("more_test_lines").domains["COORDCAP_I"] == "d_coordcap"
    assert "domain-d_bormethod" in inv.table_keys()
    out = tmp_path / "d.parquet"
    tables.write_domain(bormethod, out)
    t = pq.read_table(out)
    assert t.column_names == ["code", "label"] and t.num_rows == len(bormethod.codes)


def test_layer_selection_keeps_only_used_domains(fgdb):
    inv = layers.discover(sources.gdal_path(str(fgdb)), include=["more_test_lines"])
    assert [x.name for x in inv.layers] == ["more_test_lines"]
    assert {d.name for d in inv.domains} == set(inv.layer("more_test_lines").domains.values())


def test_unknown_layer_suggests_closest_names(fgdb):
    with pytest.raises(CngInputError, match="no layer 'test_area'.*did you mean test_areas"):
        layers.discover(sources.gdal_path(str(fgdb)), include=["test_area"])


def test_shapefiles_and_odd_names(bad_gpkg):
    assert layers.discover(str(shared("coutwildrnp") / "coutwildrnp.shp")).layers[0].features == 67
    slugs = {x.name: x.slug for x in layers.discover(str(bad_gpkg)).layers}
    assert slugs["Áreas protegidas"] == "areas_protegidas" and slugs["empty layer"] == "empty_layer"


def test_layer_of_mixed_types_is_classified_by_its_geometries(mixed_geojson):
    layer = layers.discover(str(mixed_geojson)).layers[0]
    assert (layer.geometry_type, layer.kind, layer.features) == ("Unknown", "polygon", len(MIXED))
    assert layer.geometry_families == {"polygon": 3, "point": 1, "line": 1, "line+polygon": 1}
    assert layer.geometry_label == "Unknown (3 polygon, 1 line, 1 point, 1 line+polygon)"


@pytest.mark.parametrize("names, kind", [(["point", "line"], "other"), (["square", "multi"], "polygon")])
def test_layer_without_one_declared_type_gets_the_kind_of_its_data(tmp_path, names, kind):
    path = tmp_path / "l.gpkg"
    frame = gpd.GeoDataFrame({"name": names}, geometry=[MIXED[n] for n in names], crs="EPSG:4326")
    pyogrio.write_dataframe(frame, path, layer="l", geometry_type="Unknown")
    layer = layers.discover(str(path)).layers[0]
    assert layer.geometry_type == "Unknown" and layer.kind == kind


def test_slugs_are_keys_and_unique():
    assert slugify("PADUS4_1Fee") == "padus4_1fee"
    assert slugify("Ünïcode Layer (v2)") == "unicode_layer_v2"
    assert slugify("東京") == "layer"
    assert unique_slugs(["A b", "a-b", "a_b"]) == ["a_b", "a_b_2", "a_b_3"]


def test_cli_layers_prints_all_eight(fgdb):
    result = CliRunner().invoke(main, ["layers", str(fgdb)])
    assert result.exit_code == 0, result.output
    said = {"test_lines": "line", "more_test_lines": "line", "test_points": "point"}  # `other` to the products
    for name, (kind, count) in EXPECTED_FGDB.items():
        row = next(line for line in result.output.splitlines() if f" {name} " in line)
        assert f" {said.get(name, kind)} " in row and f" {count} " in row
    assert "38 coded-value domains" in result.output


@pytest.mark.parametrize("make, message", [
    (lambda d: d / "missing.gdb.zip", "does not exist"),
    (lambda d: (d / "bad.zip").write_bytes(b"PK\x03\x04 truncated") and d / "bad.zip", "not a readable zip"),
    (lambda d: (d / "x.gpkg").write_text("not a geopackage") and d / "x.gpkg", "GDAL cannot open"),
])
def test_unreadable_sources_give_clear_errors(tmp_path, make, message):
    result = CliRunner().invoke(main, ["layers", str(make(tmp_path))])
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output
    assert "What to do" in result.output


def test_wkb_headers_give_the_base_type_in_any_byte_order_and_flavour():
    geoms = [shapely.Point(1, 2, 3), shapely.box(0, 0, 1, 1), shapely.MultiLineString([[(0, 0), (1, 1)]]),
             shapely.GeometryCollection([shapely.Point(0, 0)])]
    expected = [1, 3, 5, 7]  # the WKB numbers of Point, Polygon, MultiLineString, GeometryCollection
    for order in (0, 1):
        for flavor in ("iso", "extended"):
            wkb = [shapely.to_wkb(g, byte_order=order, flavor=flavor, include_srid=flavor == "extended")
                   for g in geoms]
            for kind in (pa.binary(), pa.large_binary()):
                values = pa.array([b"x", None, b"", *wkb], kind).slice(1)  # an offset, a null, an empty value
                assert wkb_type_ids(values).tolist() == [-1, -1, *expected], (order, flavor, kind)
    assert wkb_type_ids(pa.array([], pa.binary())).tolist() == []


def test_a_folder_of_files_is_one_source_with_each_files_layers_and_versions_per_file(tmp_path):
    """Folder sources (issue 11): a shapefile with its sidecars, a GeoJSON, a two-layer GeoPackage and a raster
    beside a README and a stray file GDAL cannot read; replacing one file changes only its own layers' versions."""
    import shutil

    import geopandas as gpd

    from cng_assets.transforms import folders
    from cng_assets.transforms.layers import discover, layer_path

    folder = tmp_path / "drop box"
    (folder / "more").mkdir(parents=True)
    for f in shared("coutwildrnp").iterdir():
        shutil.copy(f, folder / f.name)
    shutil.copy(shared("RGB.byte.tif"), folder / "more" / "RGB.byte.tif")
    world = gpd.read_file(shared("naturalearth_lowres") / "naturalearth_lowres.shp")
    world.head(5).to_file(folder / "more" / "five.geojson")
    world.tail(3).to_file(folder / "more" / "two.gpkg", layer="tail")
    world.head(4).to_file(folder / "more" / "two.gpkg", layer="head")
    (folder / "README.md").write_text("notes")
    (folder / "broken.geojson").write_text("{not json")

    inv = discover(str(folder))
    got = {x.slug: (x.kind, x.file, x.features) for x in inv.layers}
    assert got == {"coutwildrnp": ("polygon", "coutwildrnp.shp", 67), "rgb_byte": ("raster", "more/RGB.byte.tif", 791 * 718),
                   "five": ("polygon", "more/five.geojson", 5), "tail": ("polygon", "more/two.gpkg", 3),
                   "head": ("polygon", "more/two.gpkg", 4)}
    assert list(inv.unread) == ["broken.geojson"]
    assert len(gpd.read_file(layer_path(str(folder), inv.layer("head")), layer="head")) == 4

    before = folders.units(folders.local_files(str(folder)))
    world.head(6).to_file(folder / "more" / "five.geojson")
    (folder / "coutwildrnp.cpg").write_text("UTF-8")  # a sidecar changes its shapefile's version
    after = folders.units(folders.local_files(str(folder)))
    assert {u for u in after if after[u] != before[u]} == {"more/five.geojson", "coutwildrnp.shp"}


def test_table_columns_follow_the_same_naming_rule(tmp_path):
    """A table's `BBox`, or a `NAME` beside `Name`, would be renamed by DuckDB: they become `src_...`, recorded."""
    src = tmp_path / "t.csv"
    src.write_text("id,BBox,Name,NAME\n1,x,a,b\n2,y,c,d\n")
    out = tmp_path / "t.parquet"
    stats = tables.write_table(str(src), "t", out)
    assert stats.renamed_columns == {"BBox": "src_BBox", "NAME": "src_NAME"}
    t = pq.read_table(out)
    assert t.column_names == stats.columns == ["id", "src_BBox", "Name", "src_NAME"]
    assert t.column("src_BBox").to_pylist() == ["x", "y"] and t.column("src_NAME").to_pylist() == ["b", "d"]
    assert pq.read_metadata(out).metadata[b"cng_renamed_columns"] == b'{"BBox": "src_BBox", "NAME": "src_NAME"}'


def osm_xml(path, cafes: int, streets: int, buildings: int) -> dict[str, set[str]]:
    """An OpenStreetMap XML file (GDAL's OSM driver reads it as it reads .osm.pbf) whose node ids DEcrease, as in
    files edited by hand or JOSM; returns the osm ids each of GDAL's layers must hold, known by construction."""
    nodes, ways, ids = [], [], {"points": set(), "lines": set(), "multipolygons": set(), "multilinestrings": set(),
                                "other_relations": set()}

    def tags(**kv):
        return "".join(f'<tag k="{k}" v="{v}"/>' for k, v in kv.items())

    def node(lon, lat, **kv):
        nid = 1000 - len(nodes)
        nodes.append(f'<node id="{nid}" version="1" lat="{lat}" lon="{lon}">{tags(**kv)}</node>')
        return nid

    def way(refs, **kv):
        ways.append(f'<way id="{len(ways) + 1}" version="1">{"".join(f"<nd ref={chr(34)}{r}{chr(34)}/>" for r in refs)}'
                    f'{tags(**kv)}</way>')
        return len(ways)

    for i in range(cafes):
        ids["points"].add(str(node(0.01 * i, 1.0, amenity="cafe", name=f"cafe {i}")))
    for i in range(streets):
        ids["lines"].add(str(way([node(0.01 * i, 2.0), node(0.01 * i + 0.005, 2.005)], highway="residential")))
    for i in range(buildings):
        ring = [node(0.01 * i, 3.0), node(0.01 * i + 0.001, 3.0), node(0.01 * i + 0.001, 3.001), node(0.01 * i, 3.001)]
        ids["multipolygons"].add(str(way([*ring, ring[0]], building="yes")))
    corners = [node(1, 4), node(1.1, 4), node(1.1, 4.1), node(1, 4.1)]
    halves = way(corners[:3]), way([*corners[2:], corners[0]])
    relations = [  # a forest of two open ways; a bus route over the first street; a site
        f'<relation id="1" version="1"><member type="way" ref="{halves[0]}" role="outer"/>'
        f'<member type="way" ref="{halves[1]}" role="outer"/>{tags(type="multipolygon", landuse="forest")}</relation>',
        f'<relation id="2" version="1"><member type="way" ref="1" role=""/>{tags(type="route", route="bus")}</relation>',
        f'<relation id="3" version="1"><member type="node" ref="1000" role=""/>{tags(type="site", name="s")}</relation>']
    ids["multipolygons"].add("1")  # relations go by osm_id in multipolygons (ways by osm_way_id)
    ids["multilinestrings"].add("2")
    ids["other_relations"].add("3")
    path.write_text('<?xml version="1.0" encoding="UTF-8"?>\n<osm version="0.6" generator="test">\n'
                    + "\n".join(nodes + ways + relations) + "\n</osm>\n")
    return ids


def test_every_layer_of_an_osm_file_becomes_geoparquet_with_its_features(tmp_path):
    """GDAL's OSM driver with its defaults stops at the first node id that does not increase ("Non increasing node
    id. Use OSM_USE_CUSTOM_INDEXING=NO"), so such a file was refused at discovery. The XML stands in for .osm.pbf:
    the same driver and code path (writing a .pbf needs tools this project does not have)."""
    from cng_assets.transforms.geoparquet import write_geoparquet

    source = tmp_path / "town.osm"
    expected = osm_xml(source, cafes=3, streets=2, buildings=4)
    inv = layers.discover(sources.gdal_path(str(source)))
    assert {x.name: x.features for x in inv.layers} == {k: len(v) for k, v in expected.items()}
    for x in inv.layers:
        out = tmp_path / f"{x.slug}.parquet"
        stats = write_geoparquet(str(source), x.name, out, kind=x.kind)
        frame = gpd.read_parquet(out)
        ids = frame["osm_way_id"].where(frame["osm_way_id"].notna(), frame["osm_id"]) \
            if "osm_way_id" in frame else frame["osm_id"]
        assert set(ids) == expected[x.name] and stats.rows_written == len(frame), x.name
    assert inv.layer("multipolygons").kind == "polygon"
    tagged = gpd.read_parquet(tmp_path / "multipolygons.parquet")
    assert set(tagged["building"].dropna()) == {"yes"} and set(tagged["landuse"].dropna()) == {"forest"}


def test_osm_pbf_sample_reads_with_the_counts_pyogrio_documents(tmp_path):
    """pyogrio's sample .osm.pbf (node ids not increasing): its tests give 8 points and 36 lines with custom indexing
    off; other_tags comes as JSON (GDAL's TAGS_FORMAT), which json.loads reads, not hstore text."""
    import json

    from cng_assets.transforms.geoparquet import write_geoparquet
    from tests.conftest import FIXTURES

    source = str(FIXTURES / "sample.osm.pbf")
    counts = {x.name: x.features for x in layers.discover(source).layers}
    assert (counts["points"], counts["lines"]) == (8, 36)
    write_geoparquet(source, "points", tmp_path / "points.parquet", kind="other")
    tags = pq.read_table(tmp_path / "points.parquet")["other_tags"].drop_null().to_pylist()
    assert tags and all(isinstance(json.loads(t), dict) for t in tags)


def test_a_csv_with_longitude_and_latitude_columns_is_a_point_layer(tmp_path):
    source = tmp_path / "trees.csv"
    source.write_text("name,Longitude,LAT\noak,-120.5,35.25\nelm,-119.75,36.5\n")
    inv = layers.discover(str(source))
    assert [(x.kind, x.what, x.features) for x in inv.layers] == [("other", "point", 2)]
    from cng_assets.transforms.geoparquet import write_geoparquet

    write_geoparquet(str(source), "trees", tmp_path / "trees.parquet", kind="other", crs="EPSG:4326")
    frame = gpd.read_parquet(tmp_path / "trees.parquet")
    assert sorted(zip(frame.geometry.x, frame.geometry.y, frame["name"])) == [(-120.5, 35.25, "oak"), (-119.75, 36.5, "elm")]
