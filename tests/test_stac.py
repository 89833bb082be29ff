"""STAC for real products (the demo, and a FileGDB sample with coded-value domains), validated offline against
shared/stac-schemas/ (core and every declared extension), and checked against the files they describe."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import shutil
import socket
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import geopandas as gpd
import pyarrow.parquet as pq
import pystac
import pytest
import referencing
import shapely
from click.testing import CliRunner
from pystac.errors import STACValidationError

from cng_assets.catalog import Dataset, H3Settings, Provider, load_catalog
from cng_assets.cli import main
from cng_assets.defs.sources import with_default_datetime
from cng_assets.storage import LocalStorage
from cng_assets.transforms import stac
from cng_assets.transforms.facts import gather
from cng_assets.transforms.layers import Inventory
from tests.conftest import absent, shared
from tests.stac_schemas import LocalSchemas, UnknownSchemaError

SCHEMAS = Path(__file__).resolve().parents[1].parent / "shared" / "stac-schemas"
BASE = "https://s3-west.nrp-nautilus.io/"
CORE = "https://schemas.stacspec.org/v1.1.0/"
TABLE = "https://stac-extensions.github.io/table/v1.2.0/schema.json"
FILE = "https://stac-extensions.github.io/file/v2.1.0/schema.json"
PROJ = "https://stac-extensions.github.io/projection/v2.0.0/schema.json"
RASTER = "https://stac-extensions.github.io/raster/v2.0.0/schema.json"
HIERARCHY = {"root", "parent", "child", "item", "collection"}

SAMPLE = Dataset(
    name="sample", title="FileGDB sample (GDAL wiki)", source="test_fgdb.gdb.zip", prefix="sample",
    description="The Esri File Geodatabase sample from the GDAL wiki: levee areas and a table with coded values.",
    license="MIT (pyogrio test fixture)", start_datetime="2010-01-01", end_datetime="2012-12-31T12:00:00Z",
    doi="10.1234/cng.sample", keywords=["test", "FileGDB"],
    providers=[Provider(name="GDAL", roles=["producer"], url="https://gdal.org"), Provider(name="NRP Nautilus", roles=["host"])],
    h3=H3Settings(resolution=7, parents=[6, 0]))  # as the products are made below


@pytest.fixture(scope="module")
def schemas() -> LocalSchemas:
    if not SCHEMAS.is_dir():
        absent(f"STAC schemas {SCHEMAS} are absent (they come from the shared/ folder beside the repository)")
    return LocalSchemas(SCHEMAS)


@pytest.fixture
def offline(monkeypatch):
    """Any attempt to open a socket fails the test: validation must never download a schema."""
    def refuse(*args, **kwargs):
        raise AssertionError("validation tried to use the network")
    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def _cli(home: Path, *args: str) -> None:
    result = CliRunner(env={"DAGSTER_HOME": str(home)}).invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output


def _facts(ds: Dataset, root: Path, **kwargs):
    inventory = Inventory.from_json(json.loads((root / "inventory.json").read_text()))
    return gather(ds, root, inventory, href_base=f"{BASE}{ds.prefix}/", **kwargs)


@pytest.fixture(scope="module")
def products(tmp_path_factory, demo_products) -> dict[str, Path]:
    """The real products: the demo dataset (the session's), and two layers of the FileGDB sample (a polygon layer
    and a table whose fields use coded-value domains)."""
    fgdb = shared("test_fgdb.gdb.zip")
    tmp = tmp_path_factory.mktemp("products")
    _cli(tmp / "home", "run", "--source", str(fgdb), "--dataset", "sample", "--out", str(tmp / "data"),
         "--layers", "test_areas,basetable_2", "--resolution", "7", "--parents", "6,0")
    return {"demo": demo_products, "sample": tmp / "data" / "sample"}


@pytest.fixture(scope="module")
def datasets() -> dict[str, Dataset]:
    return {"demo": load_catalog()["demo"], "sample": SAMPLE}


@pytest.fixture(scope="module")
def tree(products, datasets, tmp_path_factory) -> Path:
    """STAC for both datasets, each in its own folder, and the root catalog above them."""
    out = tmp_path_factory.mktemp("stac")
    for name, root in products.items():
        written = stac.write_dataset_stac(_facts(datasets[name], root), out / name)
        assert written[0] == out / name / "collection.json" and all(p.exists() for p in written)
    assert stac.root_catalog({n: f"{n}/collection.json" for n in products}, out / "catalog.json") == out / "catalog.json"
    return out


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def _items(tree: Path, name: str, rasters: bool = False) -> dict[str, dict]:
    """The Collection's Items: those of vector layers, and with `rasters` those of raster layers too."""
    col = _json(tree / name / "collection.json")
    items = {(d := _json(tree / name / link["href"]))["id"]: d for link in col["links"] if link["rel"] == "item"}
    return {k: d for k, d in items.items() if rasters or "cog" not in d["assets"]}


def _local(href: str, prefix: str, root: Path) -> Path:
    assert href.startswith(f"{BASE}{prefix}/"), href
    return root / href[len(f"{BASE}{prefix}/"):]


def _multihash(path: Path) -> str:
    return "1220" + hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------- every object validates, core and extensions


def test_every_item_collection_and_the_catalog_validate(schemas, tree, products, offline):
    files = sorted(tree.rglob("*.json"))
    assert len(files) == 1 + (1 + 4) + (1 + 1)  # catalog; demo: collection + 3 layers + 1 raster; sample: collection + 1 layer
    used = {}
    for path in files:
        used[path.relative_to(tree).as_posix()] = set(schemas.validate_file(path))
    assert used["catalog.json"] == {CORE + "catalog-spec/json-schema/catalog.json"}
    for name in products:
        assert used[f"{name}/collection.json"] == {CORE + "collection-spec/json-schema/collection.json", TABLE, FILE}
        for item_id in _items(tree, name, rasters=True):
            extensions = {RASTER} if item_id == "population_density" else {TABLE}  # the demo's raster layer
            assert used[f"{name}/{item_id}/{item_id}.json"] == {CORE + "item-spec/json-schema/item.json", PROJ, FILE} | extensions
    raster = _json(tree / "demo" / "population_density" / "population_density.json")
    assert raster["properties"]["proj:code"] == "EPSG:4326" and raster["properties"]["proj:shape"] == [180, 360]
    assert raster["assets"]["cog"]["bands"][0]["data_type"] == "float32" and "raster:bands" not in raster["assets"]["cog"]
    assert raster["assets"]["cog"]["bands"][0]["raster:spatial_resolution"] == 1.0
    assert raster["assets"]["cog"]["type"] == "image/tiff; application=geotiff; profile=cloud-optimized"


def test_collection_assets_carry_valid_table_and_file_fields(schemas, tree, products, offline):
    # table v1.2.0's Collection branch is an anyOf whose first alternative always holds, so it never checks the
    # fields of Collection assets: check them against the extensions' field definitions directly.
    for name in products:
        assets = _json(tree / name / "collection.json")["assets"]
        assert assets
        for asset in assets.values():
            assert schemas.errors(asset, TABLE + "#/definitions/fields") == []
            assert schemas.errors(asset, FILE + "#/definitions/fields") == []
            assert schemas.errors(asset, CORE + "item-spec/json-schema/item.json#/definitions/asset") == []
            assert {"table:columns", "table:row_count", "file:size", "file:checksum"} <= set(asset)
        broken = copy.deepcopy(next(iter(assets.values())))
        broken["table:columns"][0].pop("name")
        broken["file:size"] = "860 bytes"
        assert len(schemas.errors(broken, TABLE + "#/definitions/fields")) == 1
        assert len(schemas.errors(broken, FILE + "#/definitions/fields")) == 1


def test_in_memory_objects_validate_through_pystac(schemas, products, datasets, offline):
    col = stac.dataset_collection(_facts(datasets["demo"], products["demo"]))
    with pytest.raises(STACValidationError, match=r"links/\d+/href: None"):  # no hrefs yet: its item links have none
        col.validate(validator=schemas)
    col.normalize_hrefs(f"{BASE}demo/stac")  # as published: a self link must be an absolute URL
    assert CORE + "collection-spec/json-schema/collection.json" in col.validate(validator=schemas)
    item = next(iter(col.get_items()))
    assert PROJ in item.validate(validator=schemas)
    item.properties["table:row_count"] = "177"
    with pytest.raises(STACValidationError, match="table:row_count"):
        item.validate(validator=schemas)


def test_raster_in_a_crs_without_an_epsg_code_is_described_in_full(schemas, products, datasets, tmp_path, offline):
    import numpy as np
    import pyproj
    import rasterio
    from rasterio.transform import from_origin

    from cng_assets.transforms import facts as facts_module

    laea = "+proj=laea +lat_0=45 +lon_0=-100 +x_0=0 +y_0=0 +ellps=WGS84 +units=m +no_defs"
    tif = tmp_path / "laea.tif"
    with rasterio.open(tif, "w", driver="GTiff", width=4, height=3, count=1, dtype="float32", nodata=float("nan"),
                       crs=laea, transform=from_origin(-10_000, 10_000, 5_000, 5_000)) as dst:
        dst.write(np.ones((1, 3, 4), "float32"))
    r = facts_module._raster(tif, "laea", "laea", {"cog": facts_module.FileFacts(
        "laea.tif", f"{BASE}demo/laea.tif", facts_module.MEDIA_TYPES["cog"], ["data"], tif.stat().st_size, None, "laea")})
    item = stac.raster_item(_facts(datasets["demo"], products["demo"]), r).to_dict()
    props = item["properties"]
    assert props["proj:code"] is None and pyproj.CRS.from_wkt(props["proj:wkt2"]).equals(pyproj.CRS(laea))
    assert item["assets"]["cog"]["bands"] == [{"name": "b1", "data_type": "float32", "nodata": "nan",
                                               "raster:spatial_resolution": 5000.0}]
    assert RASTER in item["stac_extensions"] and not schemas.errors(item, CORE + "item-spec/json-schema/item.json")
    assert not schemas.errors(item, PROJ) and not schemas.errors(item, RASTER)


# ---------------------------------------------------------------- what the metadata says matches the files


@pytest.mark.parametrize("name", ["demo", "sample"])
def test_items_describe_their_geoparquet(tree, products, datasets, name):
    root, ds = products[name], datasets[name]
    inventory = Inventory.from_json(_json(root / "inventory.json"))
    spatial = sorted(x.slug for x in inventory.layers if x.kind not in ("table", "raster"))
    items = _items(tree, name)
    assert sorted(items) == spatial
    for item_id, item in items.items():
        props, gp = item["properties"], item["assets"]["geoparquet"]
        path = _local(gp["href"], ds.prefix, root)
        assert path == root / f"{item_id}.parquet"
        meta = pq.read_metadata(path)
        assert props["table:row_count"] == meta.num_rows > 0
        schema = pq.read_schema(path)
        assert [c["name"] for c in props["table:columns"]] == schema.names
        types = {c["name"]: c["type"] for c in props["table:columns"]}
        assert all(types[f.name] == str(f.type) for f in schema if f.name != "geometry")
        assert props["table:primary_geometry"] == "geometry" and props["proj:code"] == "EPSG:4326"
        assert gp["file:size"] == path.stat().st_size
        assert gp["file:checksum"] == _multihash(path)
        assert gp["type"] == "application/vnd.apache.parquet" and gp["roles"] == ["data"]
        for asset in item["assets"].values():
            assert asset["href"].startswith(f"{BASE}{ds.prefix}/")
        # the footprint is the bbox, and every feature lies inside it
        assert list(shapely.geometry.shape(item["geometry"]).bounds) == item["bbox"]
        bounds = gpd.read_parquet(path).total_bounds
        west, south, east, north = item["bbox"]
        assert west - 1e-9 <= bounds[0] and south - 1e-9 <= bounds[1] and bounds[2] <= east + 1e-9 and bounds[3] <= north + 1e-9
        assert -180 <= west <= east <= 180 and -90 <= south <= north <= 90
        assert item["collection"] == ds.name and props["created"]
        assert props["description"].startswith(f"{props['title']}: {meta.num_rows:,} ")
        assert " Z " not in props["description"]  # the source may be 3D; the products are 2D


def test_time_comes_from_the_catalog(tree):
    for item in _items(tree, "demo").values():
        assert item["properties"]["datetime"] == "2019-01-01T00:00:00Z"
        assert "start_datetime" not in item["properties"]
    assert _json(tree / "demo" / "collection.json")["extent"]["temporal"]["interval"] == [
        ["2019-01-01T00:00:00Z", "2019-01-01T00:00:00Z"]]
    for item in _items(tree, "sample").values():
        props = item["properties"]
        assert props["datetime"] is None
        assert (props["start_datetime"], props["end_datetime"]) == ("2010-01-01T00:00:00Z", "2012-12-31T12:00:00Z")
    assert _json(tree / "sample" / "collection.json")["extent"]["temporal"]["interval"] == [
        ["2010-01-01T00:00:00Z", "2012-12-31T12:00:00Z"]]


@pytest.mark.parametrize("name, polygons", [("demo", ["continents", "countries"]), ("sample", ["test_areas"])])
def test_hex_asset_describes_the_h0_partitioned_folder(tree, products, datasets, name, polygons):
    root, ds = products[name], datasets[name]
    items = _items(tree, name)
    assert sorted(i for i, item in items.items() if "hex" in item["assets"]) == polygons
    for slug in polygons:
        hexed = items[slug]["assets"]["hex"]
        folder = _local(hexed["href"], ds.prefix, root)
        assert folder == root / "hex" / slug and hexed["href"].endswith("/")
        assert "table:storage_options" not in hexed  # STAC: options for the storage (S3 keys...), not the layout
        assert "partition folder name h0=<cell>" in {c["name"]: c for c in hexed["table:columns"]}["h0"]["description"]
        files = sorted(folder.glob("h0=*/*.parquet"))
        parts = {f.parent.name for f in files}
        assert parts and all(p.startswith("h0=") for p in parts)
        assert f"{len(parts)} hive partitions" in hexed["description"]
        real = pq.read_schema(files[0])
        declared = {c["name"]: c["type"] for c in hexed["table:columns"]}
        cells = [f"h{r}" for r in (ds.h3.resolution, *ds.h3.parents) if r]
        assert list(declared) == ["_cng_fid", *cells, "h0"] and "h0" not in real.names  # h0: the folder names
        assert all(str(real.field(n).type) == t for n, t in declared.items() if n != "h0")  # with these types
        assert "hive_schema" in hexed["description"] and "hive_types" in hexed["description"]
        con = duckdb.connect()
        rows, h0 = con.execute("SELECT count(*), typeof(any_value(h0)) FROM read_parquet($g, hive_types = "
                               "{'h0': 'UBIGINT'})", {"g": f"{folder}/*/*.parquet"}).fetchone()
        assert h0 == declared["h0"].upper().replace("UINT64", "UBIGINT")
        assert hexed["table:row_count"] == rows > 0
        assert hexed["file:size"] == sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
        assert "file:checksum" not in hexed  # a folder has no single checksum


def test_lookup_tables_and_domains_are_collection_assets(tree, products):
    root = products["sample"]
    col = _json(tree / "sample" / "collection.json")
    on_disk = {p.stem for p in (root / "lookup").glob("*.parquet")}
    assert set(col["assets"]) == on_disk and "basetable_2" in on_disk and "domain-district_id" in on_disk
    for key, asset in col["assets"].items():
        path = _local(asset["href"], "sample", root)
        assert path == root / "lookup" / f"{key}.parquet"
        assert asset["table:row_count"] == pq.read_metadata(path).num_rows
        assert [c["name"] for c in asset["table:columns"]] == pq.read_schema(path).names
        assert asset["file:size"] == path.stat().st_size and asset["file:checksum"] == _multihash(path)
    assert col["assets"]["domain-district_id"]["table:row_count"] == 41
    columns = {c["name"]: c for c in col["assets"]["basetable_2"]["table:columns"]}
    assert "`domain-district_id`" in columns["DISTRICT_ID"]["description"]
    assert "Used by basetable_2.DISTRICT_ID." in col["assets"]["domain-district_id"]["description"]
    assert "description" not in columns["OBJECTID_1"]
    # every table the Collection holds is listed: the layer Items and the Collection assets
    assert [t["name"] for t in col["table:tables"]] == ["test_areas", *col["assets"]]
    # the Items carry their own products only
    assert set(_items(tree, "sample")["test_areas"]["assets"]) == {"geoparquet", "hex", "pmtiles", "thumbnail"}
    demo = _json(tree / "demo" / "collection.json")
    assert set(demo["assets"]) == {"continent_lookup"} and demo["assets"]["continent_lookup"]["table:row_count"] == 8


def test_licence_citation_doi_and_providers(tree):
    demo = _json(tree / "demo" / "collection.json")
    assert demo["license"] == "other" and "Licence: public domain (Natural Earth)" in demo["description"]
    assert "Citation: Made with Natural Earth." in demo["description"]
    assert not [x for x in demo["links"] if x["rel"] in ("license", "cite-as")]
    assert demo["providers"] == [{"name": "Natural Earth", "roles": ["producer", "licensor"], "url": "https://www.naturalearthdata.com"}]
    assert demo["keywords"] == ["demo", "countries"]
    sample = _json(tree / "sample" / "collection.json")
    assert sample["license"] == "MIT"
    links = {x["rel"]: x for x in sample["links"]}
    assert links["license"]["href"] == "https://spdx.org/licenses/MIT.html"
    assert links["cite-as"]["href"] == "https://doi.org/10.1234/cng.sample"
    assert "Licence: MIT (pyogrio test fixture)" in sample["description"]
    assert sample["providers"][1] == {"name": "NRP Nautilus", "roles": ["host"]}


def test_collection_links_the_map_page(tree):
    """A `preview` link to the page the docs write beside the products (layout.MAP), as HTML."""
    for name in ("demo", "sample"):
        previews = [x for x in _json(tree / name / "collection.json")["links"] if x["rel"] == "preview"]
        assert [(x["href"], x["type"]) for x in previews] == [(f"{BASE}{name}/map.html", "text/html")]


@pytest.mark.parametrize("text, expected", [
    ("CC-BY-4.0 (GreenInfo Network, www.calands.org)", ("CC-BY-4.0", "CC-BY-4.0 (GreenInfo Network, www.calands.org)")),
    ("CC-BY-4.0", ("CC-BY-4.0", None)),
    ("cc by 4.0", ("CC-BY-4.0", "cc by 4.0")),
    ("CC0", ("CC0-1.0", "CC0")),
    ("ODbL-1.0 (OpenStreetMap contributors)", ("ODbL-1.0", "ODbL-1.0 (OpenStreetMap contributors)")),
    ("USGS public domain", ("other", "USGS public domain")),
    ("public domain (Natural Earth)", ("other", "public domain (Natural Earth)")),
    ("proprietary", ("other", "proprietary")),
    ("CC-BY-4.0-ish licence of our own", ("other", "CC-BY-4.0-ish licence of our own")),
])
def test_licence_mapping(text, expected):
    assert stac.stac_license(text) == expected


def test_every_catalog_entry_maps_to_a_valid_licence(schemas):
    licences = {name: stac.stac_license(ds.license)[0] for name, ds in load_catalog().items()}
    assert licences == {"cpad_2025b": "CC-BY-4.0", "demo": "other", "inbox": "other", "padus_4_1": "other"}
    for license_id in licences.values():
        assert schemas.errors({"license": license_id}, CORE + "item-spec/json-schema/licensing.json") == []
    assert schemas.errors({"license": "USGS public domain"}, CORE + "item-spec/json-schema/licensing.json")


# ---------------------------------------------------------------- links: self-contained, relative, readable


def test_links_are_relative_and_the_tree_reads_back(tree, products):
    for path in tree.rglob("*.json"):
        links = _json(path)["links"]
        assert "self" not in {x["rel"] for x in links}
        for link in links:
            if link["rel"] in HIERARCHY:
                assert "://" not in link["href"] and not link["href"].startswith("/"), (path, link)
                assert (path.parent / link["href"]).resolve().exists(), (path, link)
    moved = tree.parent / (tree.name + "-moved")  # self-contained: the folder works wherever it is put
    shutil.copytree(tree, moved)
    root = pystac.Catalog.from_file(str(moved / "catalog.json"))
    children = {c.id: c for c in root.get_children()}
    assert sorted(children) == ["demo", "sample"] and all(isinstance(c, pystac.Collection) for c in children.values())
    assert sorted(i.id for i in children["demo"].get_items()) == ["continents", "countries", "country_labels", "population_density"]
    item = next(children["sample"].get_items())
    assert item.get_self_href().startswith(str(moved)) and item.assets["geoparquet"].href.startswith(BASE)


def test_root_catalog_takes_absolute_collection_hrefs(schemas, tmp_path, offline):
    hrefs = {"padus_4_1": f"{BASE}public-padus/padus-4-1/stac/collection.json", "demo": "demo/stac/collection.json"}
    path = stac.root_catalog(hrefs, tmp_path / "catalog.json", title="All datasets")
    cat = _json(path)
    schemas.validate_dict(cat)
    children = [(x["title"], x["href"]) for x in cat["links"] if x["rel"] == "child"]
    assert children == [("demo", "demo/stac/collection.json"), ("padus_4_1", hrefs["padus_4_1"])]
    assert cat["title"] == "All datasets" and {x["rel"] for x in cat["links"]} == {"root", "child"}


# ---------------------------------------------------------------- absent and optional products, odd extents


def test_pmtiles_thumbnail_and_code_versions_when_present(schemas, products, tmp_path, offline):
    # PMTiles and thumbnails are made by a later stage; placeholder bytes stand in for them here: their size and
    # checksum are what must reach the metadata.
    root = tmp_path / "sample"
    shutil.copytree(products["sample"], root)
    (root / "test_areas.pmtiles").write_bytes(b"PMTiles\x03" + bytes(range(256)) * 4)
    (root / "test_areas.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 100)
    facts = _facts(SAMPLE, root, code_versions={"cng-assets": "0.1.0", "gdal": "3.10.3"})
    col = stac.dataset_collection(facts)
    col.normalize_hrefs(f"{BASE}sample/stac")
    item = col.get_item("test_areas").to_dict()
    assert "https://stac-extensions.github.io/processing/v1.2.0/schema.json" in schemas.validate_dict(item)
    assert item["properties"]["processing:software"] == {"cng-assets": "0.1.0", "gdal": "3.10.3"}
    tiles, thumb = item["assets"]["pmtiles"], item["assets"]["thumbnail"]
    assert tiles["type"] == "application/vnd.pmtiles" and tiles["proj:code"] == "EPSG:3857" and tiles["roles"] == ["visual"]
    assert tiles["file:size"] == 8 + 1024 and tiles["file:checksum"] == _multihash(root / "test_areas.pmtiles")
    assert tiles["href"] == f"{BASE}sample/test_areas.pmtiles"
    assert thumb["type"] == "image/png" and thumb["roles"] == ["thumbnail"]
    assert thumb["file:checksum"] == _multihash(root / "test_areas.png")
    bad = copy.deepcopy(item)
    bad["properties"]["processing:software"] = {"gdal": 3.1}
    with pytest.raises(STACValidationError, match="processing"):
        schemas.validate_dict(bad)


@pytest.mark.parametrize("bbox, kind, stac_bbox", [
    ([170.0, -20.0, -170.0, -10.0], "MultiPolygon", [170.0, -20.0, -170.0, -10.0]),  # crosses the antimeridian
    ([-180.0, -90.0, 180.00000000000006, 83.6], "Polygon", [-180.0, -90.0, 180.0, 83.6]),  # float overshoot
    ([5.0, 6.0, 5.0, 6.0], "Point", [5.0, 6.0, 5.0, 6.0]),  # one point
    ([5.0, 6.0, 7.0, 6.0], "LineString", [5.0, 6.0, 7.0, 6.0]),
    ([1.0, 2.0, 0.0, 3.0, 4.0, 10.0], "Polygon", [1.0, 2.0, 3.0, 4.0]),  # 3D bbox: 2D footprint
    (None, None, None),  # no extent (no feature kept)
])
def test_footprints_validate(schemas, products, bbox, kind, stac_bbox, offline):
    facts = _facts(SAMPLE, products["sample"])
    layer = dataclasses.replace(facts.layers[0], bbox=bbox)
    item = stac.layer_item(facts, layer).to_dict(include_self_link=False)
    schemas.validate_dict(item)
    assert (item["geometry"] or {}).get("type") == kind and item.get("bbox") == stac_bbox
    if kind == "MultiPolygon":
        west, east = shapely.geometry.shape(item["geometry"]).geoms
        assert west.bounds == (170.0, -20.0, 180.0, -10.0) and east.bounds == (-180.0, -20.0, -170.0, -10.0)


def test_stac_needs_a_time_and_refuses_relative_hrefs(products):
    """The catalog's time fields are checked when it loads (test_catalog.py); a dataset with no time at all reaches
    STAC only through with_default_datetime, so one without is a programming error."""
    root = products["sample"]
    with pytest.raises(ValueError, match="has no time yet"):
        stac.dataset_collection(_facts(SAMPLE.model_copy(update={"start_datetime": None, "end_datetime": None}), root))
    inventory = Inventory.from_json(_json(root / "inventory.json"))
    with pytest.raises(ValueError, match="is relative"):
        stac.dataset_collection(gather(SAMPLE, root, inventory, href_base=""))


def test_a_run_without_datetime_dates_its_stac_by_the_source_file(products):
    """`cng-assets run` without --datetime: every Item (and the Collection) says the source file's last-modified
    time, to the second, and that it came from there (was: the file's date at midnight, with no word of where)."""
    mtime = datetime.fromtimestamp(shared("test_fgdb.gdb.zip").stat().st_mtime, timezone.utc).replace(microsecond=0)
    folder = products["sample"] / "stac"
    items = [_json(p) for p in folder.glob("*/*.json")]
    assert items and {(x["properties"]["datetime"], x["properties"]["cng:datetime_source"]) for x in items} == {
        (mtime.strftime("%Y-%m-%dT%H:%M:%SZ"), "source last-modified")}
    collection = _json(folder / "collection.json")
    assert collection["cng:datetime_source"] == "source last-modified"
    assert collection["extent"]["temporal"]["interval"] == [[mtime.strftime("%Y-%m-%dT%H:%M:%SZ")] * 2]


def test_default_datetime_is_the_newest_file_of_a_folder_source_and_reaches_every_item(products, tmp_path):
    folder = tmp_path / "raw" / "parks"
    (folder / "sub").mkdir(parents=True)
    for name, when in (("a.gpkg", "2021-03-04T05:06:07"), ("sub/b.shp", "2022-08-09T10:11:12"), ("c.csv", "2020-01-01")):
        (folder / name).write_bytes(b"x")
        t = datetime.fromisoformat(when).replace(tzinfo=timezone.utc).timestamp()
        os.utime(folder / name, (t, t))
    undated = SAMPLE.model_copy(update={"start_datetime": None, "end_datetime": None, "source": "raw/parks/"})
    assert undated.datetime_source is None
    dated = with_default_datetime(LocalStorage(root=str(tmp_path)), undated)
    assert (dated.datetime, dated.datetime_source) == ("2022-08-09T10:11:12+00:00", "source last-modified")
    items = stac.dataset_collection(_facts(dated, products["sample"])).get_items()
    assert {(i.datetime.isoformat(), i.properties["cng:datetime_source"]) for i in items} == {
        ("2022-08-09T10:11:12+00:00", "source last-modified")}
    gone = with_default_datetime(LocalStorage(root=str(tmp_path)), undated.model_copy(update={"source": "raw/none"}))
    assert gone.datetime_source == "processing time"  # nothing to list: the time the products were made
    given = undated.dated("2019-05-01", "cli")  # `cng-assets run --datetime 2019-05-01`
    assert with_default_datetime(LocalStorage(root=str(tmp_path)), given) is given
    assert {i.properties["cng:datetime_source"] for i in
            stac.dataset_collection(_facts(given, products["sample"])).get_items()} == {"cli"}


def test_default_datetime_of_an_s3_source_is_its_newest_object(s3_env, s3_server):
    from cng_assets.defs.resources import storage_from_env

    client = s3_server.client()
    for key in ("raw/parks.gdb/a0000001.gdbtable", "raw/parks.gdb/gdb", "raw/parks.gdb.bak/newer"):
        client.put_object(Bucket=s3_env, Key=key, Body=b"x")
    newest = max(client.head_object(Bucket=s3_env, Key=k)["LastModified"]
                 for k in ("raw/parks.gdb/a0000001.gdbtable", "raw/parks.gdb/gdb"))  # not the .bak beside it
    storage = storage_from_env()
    assert storage.source_modified(f"s3://{s3_env}/raw/parks.gdb") == newest.timestamp()
    assert storage.source_modified(f"s3://{s3_env}/raw/none.gdb") is None


def test_local_stac_has_relative_hrefs_that_resolve_wherever_the_folder_is_copied(products, tmp_path):
    """Written by the `stac` asset with no public base URL (a laptop): no file:// or absolute path, and every
    asset and the map page resolve from a copy of the dataset folder."""
    moved = tmp_path / "copied" / "demo"
    shutil.copytree(products["demo"], moved)
    texts = [p.read_text() for p in (moved / "stac").rglob("*.json")]
    assert len(texts) > 1 and not any("file://" in t or str(products["demo"]) in t for t in texts)
    col = pystac.Collection.from_file(str(moved / "stac" / "collection.json"))
    hrefs = [a.get_absolute_href() for i in col.get_items() for a in i.assets.values()]
    hrefs += [a.get_absolute_href() for a in col.assets.values()] + [col.get_single_link("preview").get_absolute_href()]
    assert len(hrefs) > 5 and all(Path(h).exists() and Path(h).is_relative_to(moved) for h in hrefs), hrefs


# ---------------------------------------------------------------- the validator rejects what is invalid


def _messages(errors) -> str:
    """Every message of these errors and of their oneOf/anyOf causes, one per line."""
    return "\n".join(m for e in errors for m in (e.message, _messages(e.context)) if m)


def _drop(*path):
    def edit(d):
        for key in path[:-1]:
            d = d[key]
        del d[path[-1]]
    return edit


def _set(value, *path):
    def edit(d):
        for key in path[:-1]:
            d = d[key]
        d[path[-1]] = value
    return edit


@pytest.mark.parametrize("edit, where", [
    (_drop("properties", "datetime"), "'datetime' is a required property"),
    (_drop("geometry"), "'geometry' is a required property"),
    (_drop("assets", "geoparquet", "href"), "'href' is a required property"),
    (_set("177", "properties", "table:row_count"), "'177' is not of type 'number'"),
    (_set([{"type": "int64"}], "properties", "table:columns"), "'name' is a required property"),
    (_set(4326, "properties", "proj:code"), "4326 is not of type 'string', 'null'"),
    (_set(4326, "properties", "proj:epsg"), "proj:epsg"),  # projection v1 field under the v2 schema
    (_set("sha256:abc", "assets", "geoparquet", "file:checksum"), "does not match"),
    (_set(-1, "assets", "geoparquet", "file:size"), "less than the minimum of 0"),
    (_set("2019-01-01", "properties", "datetime"), "is not a 'date-time'"),
    (_set("2019-02-30T00:00:00Z", "properties", "datetime"), "is not a 'date-time'"),
    (_set([0, 0, 1], "bbox"), "bbox"),
    (_set("", "id"), "should be non-empty"),
    (_set({"href": "x.parquet", "roles": "data"}, "assets", "extra"), "'data' is not of type 'array'"),
])
def test_invalid_items_are_rejected(schemas, tree, edit, where, offline):
    item = _items(tree, "demo")["countries"]
    schemas.validate_dict(item)
    broken = copy.deepcopy(item)
    edit(broken)
    with pytest.raises(STACValidationError) as e:
        schemas.validate_dict(broken)
    assert where in _messages(e.value.source)


@pytest.mark.parametrize("edit, where", [
    (_drop("license"), "'license' is a required property"),
    (_drop("extent"), "'extent' is a required property"),
    (_set("USGS public domain", "license"), "does not match"),
    (_set([[-180, -90, 180, 90], [0, 0, 1, 1]], "extent", "spatial", "bbox"), "is not valid under any of the given schemas"),
    (_set([["2019-01-01", None]], "extent", "temporal", "interval"), "is not a 'date-time'"),
    (_set([{"name": "X", "roles": ["owner"]}], "providers"), "'owner' is not one of"),
    (_set([{"name": "X", "url": "www.example.org"}], "providers"), "is not a 'iri'"),
    (_set([], "stac_extensions"), "None of [] are valid"),  # table:tables without the table extension declared
    (_set(["https://stac-extensions.github.io/table/v1.2.0/schema.json"] * 2, "stac_extensions"), "non-unique"),
])
def test_invalid_collections_are_rejected(schemas, tree, edit, where, offline):
    col = _json(tree / "sample" / "collection.json")
    broken = copy.deepcopy(col)
    edit(broken)
    if broken.get("stac_extensions") == []:  # the core schema alone accepts it: the table schema must be asked
        assert schemas.validate_dict(broken) == [CORE + "collection-spec/json-schema/collection.json"]
        assert where in _messages(schemas.errors(broken, TABLE))
        return
    with pytest.raises(STACValidationError, match="sample") as e:
        schemas.validate_dict(broken)
    assert where in _messages(e.value.source)


def test_table_schema_does_not_check_collection_fields_so_the_tests_do(schemas, tree, offline):
    # table v1.2.0's Collection branch is an anyOf over top-level fields, asset fields, item_assets and summaries
    # whose non-top-level alternatives hold trivially, so a Collection with assets passes whatever its table:
    # fields say. The field definitions themselves do catch it.
    broken = _json(tree / "sample" / "collection.json")
    broken["table:tables"] = {"name": "x"}
    assert TABLE in schemas.validate_dict(broken)
    assert "is not of type 'array'" in _messages(schemas.errors(broken, TABLE + "#/definitions/fields"))
    assert schemas.errors(_json(tree / "sample" / "collection.json"), TABLE + "#/definitions/fields") == []


@pytest.mark.parametrize("edit, where", [
    (_drop("description"), "'description' is a required property"),
    (_drop("links", 1, "href"), "'href' is a required property"),
    (_set("Collection", "type"), "'license' is a required property"),  # then it is checked as a Collection
    (_set([{"rel": "self", "href": "catalog.json"}], "links"), "is not a 'iri'"),  # a self link must be absolute
])
def test_invalid_catalogs_are_rejected(schemas, tree, edit, where, offline):
    cat = _json(tree / "catalog.json")
    broken = copy.deepcopy(cat)
    edit(broken)
    with pytest.raises(STACValidationError) as e:
        schemas.validate_dict(broken)
    assert where in _messages(e.value.source)


def test_unknown_schema_urls_fail_loudly(schemas, tree, offline):
    item = _items(tree, "demo")["countries"]
    unknown_ext = copy.deepcopy(item)
    unknown_ext["stac_extensions"].append("https://stac-extensions.github.io/scientific/v1.0.0/schema.json")
    with pytest.raises(UnknownSchemaError, match="scientific/v1.0.0/schema.json is not in"):
        schemas.validate_dict(unknown_ext)
    with pytest.raises(UnknownSchemaError, match="v9.9.9/item-spec"):
        schemas.validate_dict({**item, "stac_version": "9.9.9"})
    # a $ref inside a schema to a URL the mirror lacks
    resource = referencing.Resource.from_contents({"$schema": "http://json-schema.org/draft-07/schema#",
                                                   "$ref": "https://example.org/schemas/missing.json"})
    patched = copy.copy(schemas)
    patched.registry = schemas.registry.with_resource("https://example.org/schemas/wrapper.json", resource)
    patched.urls = schemas.urls | {"https://example.org/schemas/wrapper.json"}
    with pytest.raises(UnknownSchemaError, match="https://example.org/schemas/missing.json"):
        patched.validate_against(item, "https://example.org/schemas/wrapper.json")


def test_the_mirror_holds_what_stac_output_uses(schemas):
    for url in (TABLE, FILE, PROJ, "https://stac-extensions.github.io/processing/v1.2.0/schema.json",
                "https://proj.org/schemas/v0.7/projjson.schema.json", "https://geojson.org/schema/Geometry.json",
                "http://json-schema.org/draft-07/schema", CORE + "item-spec/json-schema/common.json",
                CORE + "item-spec/json-schema/commonjson"):  # common.json's own (misspelt) $id
        schemas.check_known(url)
    with pytest.raises(UnknownSchemaError):
        schemas.check_known("https://json-schema.org/draft-07/schema")  # wrong scheme: not guessed
