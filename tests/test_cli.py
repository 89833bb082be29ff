"""`cng-assets run` end to end on awkward input: each bad layer fails clearly, the others are produced."""

import re
from pathlib import Path

import geopandas as gpd
import pyogrio
import pystac
import pytest
import shapely
from click.testing import CliRunner

from cng_assets.cli import main
from tests.conftest import FIXTURES, MIXED


@pytest.fixture
def cli(tmp_path):
    def invoke(*args):
        runner = CliRunner(env={"DAGSTER_HOME": str(tmp_path / "home")})
        return runner.invoke(main, list(args), catch_exceptions=False)
    return invoke


def files_under(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_bad_layers_fail_clearly_and_good_ones_are_written(cli, bad_gpkg, tmp_path):
    out = tmp_path / "out"
    result = cli("run", "--source", str(bad_gpkg), "--dataset", "awkward", "--out", str(out))
    assert result.exit_code == 1
    assert "2 of 24 steps failed" in result.output and "8 later steps of those layers were skipped" in result.output
    assert "note: geoparquet[invalid_rings]: repaired: 1, dropped unrepairable: 1" in result.output
    assert ("geoparquet[only_nulls]: dataset 'awkward', layer 'only_nulls': all 2 features have null, empty or "
            "unrepairable geometry") in result.output
    assert "geoparquet[no_crs]: dataset 'awkward', layer 'no_crs': the layer declares no CRS. What to do: if you know it, set `crs:`" in result.output
    assert "Traceback" not in result.output
    products = files_under(out / "awkward")
    assert [p for p in products if p.endswith(".parquet") and "/" not in p] == [
        "areas_protegidas.parquet", "empty_layer.parquet", "invalid_rings.parquet"]
    assert {"README.md", "stac/collection.json", "invalid_rings.pmtiles", "invalid_rings.png"} <= set(products)
    readme = (out / "awkward" / "README.md").read_text()
    assert "invalid_rings" in readme and "only_nulls" not in readme  # the docs describe what was produced
    assert any(p.startswith("hex/invalid_rings/h0=") for p in products)
    assert not any("only_nulls" in p or "no_crs" in p or "_chunks" in p for p in products)
    assert len(gpd.read_parquet(out / "awkward" / "invalid_rings.parquet")) == 2
    # a layer with no features: its GeoParquet (schema, no rows), and no archive or hex folder to fail on; STAC and
    # the README link only what exists
    assert len(gpd.read_parquet(out / "awkward" / "empty_layer.parquet")) == 0
    assert not any(p.startswith(("empty_layer.pmtiles", "hex/empty_layer")) for p in products)
    item = pystac.Item.from_file(str(out / "awkward" / "stac" / "empty_layer" / "empty_layer.json"))
    assert item.assets and all(Path(a.get_absolute_href()).is_file() for a in item.assets.values())


def test_fgdb_selected_layers_with_their_domains(cli, fgdb, tmp_path):
    out = tmp_path / "out"
    result = cli("run", "--source", str(fgdb), "--dataset", "sample", "--out", str(out),
                 "--layers", "test_areas,basetable_2")
    assert result.exit_code == 0, result.output
    products = files_under(out / "sample")
    assert "test_areas.parquet" in products and "lookup/basetable_2.parquet" in products
    assert {"lookup/domain-district_id.parquet", "lookup/domain-id_rip.parquet"} <= set(products)
    assert "Open the UI" in result.output and str(out / "sample") in result.output


def test_curved_source_runs_through(cli, tmp_path):
    out = tmp_path / "out"
    result = cli("run", "--source", str(FIXTURES / "multisurface.gpkg"), "--dataset", "curves", "--out", str(out),
                 "--resolution", "6", "--parents", "5,0")  # the fixture covers much of Canada
    assert result.exit_code == 0, result.output
    assert gpd.read_parquet(out / "curves" / "multisurface.parquet").geom_type.tolist() == ["MultiPolygon"]


def test_misspelt_layer_is_named_with_suggestions(cli, fgdb, tmp_path):
    out = tmp_path / "out"
    result = cli("run", "--source", str(fgdb), "--dataset", "sample", "--out", str(out), "--layers", "test_area")
    assert result.exit_code == 2  # found before any run is made
    assert "no layer 'test_area'" in result.output and "did you mean test_areas" in result.output
    assert files_under(out) == []


@pytest.mark.parametrize("args, message", [
    (["--source", "nowhere.gpkg", "--dataset", "x"], "does not exist"),
    (["--source", "{gdb}", "--dataset", "Bad-Name"], "name: String should match pattern"),
    (["--source", "{gdb}", "--dataset", "x", "--resolution", "8", "--parents", "9"], "coarser than resolution 8"),
    (["--source", "{gdb}", "--dataset", "x", "--resolution", "0", "--parents", ""],  # h0 is the partition folder
     "resolution: Input should be greater than or equal to 1"),
    (["--source", "{gdb}", "--dataset", "x", "--crs", "EPSG:0"], "--crs: 'EPSG:0' is not a CRS PROJ knows"),
])
def test_bad_arguments_stop_before_any_run(cli, fgdb, tmp_path, args, message):
    out = tmp_path / "out"
    result = cli("run", *[a.replace("{gdb}", str(fgdb)) for a in args], "--out", str(out))
    assert result.exit_code == 2 and message in result.output
    assert not out.exists() and not (tmp_path / "home").exists()


def test_demo_then_status_audit_and_reprocess(cli, tmp_path):
    import json

    out = tmp_path / "data"
    result = cli("demo", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "Products are in" in result.output and "make ui" in result.output
    env = {"CNG_DATA_DIR": str(out)}
    runner = CliRunner(env={"DAGSTER_HOME": str(tmp_path / "home"), **env})
    status = runner.invoke(main, ["status", "--dataset", "demo", "--json"], catch_exceptions=False)
    rows = json.loads(status.output)
    assert rows and {r["status"] for r in rows} == {"fresh"}, [r for r in rows if r["status"] != "fresh"]
    again = runner.invoke(main, ["reprocess", "--stale", "--dataset", "demo"], catch_exceptions=False)
    assert "nothing to reprocess" in again.output
    audit = runner.invoke(main, ["audit", "--prefix", "demo/", "--report", str(tmp_path / "report"), "--dry-run"],
                          catch_exceptions=False)
    assert audit.exit_code == 0 and "0 legacy products" in audit.output  # the pipeline made every one of them
    forced = runner.invoke(main, ["reprocess", "--dataset", "demo", "--layers", "continent_lookup"], catch_exceptions=False)
    assert "backfill" in forced.output and "demo/table[continent_lookup]" in forced.output
    bad = runner.invoke(main, ["status", "--dataset", "nope"])
    assert bad.exit_code == 2 and "no dataset 'nope'" in bad.output


def test_run_on_a_geotiff_makes_a_cog_and_raster_hex(cli, tmp_path):
    import duckdb
    import h3

    from cng_assets.transforms.legacy import inspect_tiff
    from tests.conftest import shared

    out = tmp_path / "data"
    result = cli("run", "--source", str(shared("RGB.byte.tif")), "--dataset", "rgb", "--out", str(out),
                 "--resolution", "8", "--parents", "6,0")
    assert result.exit_code == 0, result.output
    cog = out / "rgb" / "rgb_byte.tif"
    assert inspect_tiff("cog", str(cog), {}).findings == []
    con = duckdb.connect()
    glob = f"{out}/rgb/hex/rgb_byte/*/*.parquet"
    rows = con.sql(f"SELECT h8, h6, h0, b1_mode, b1_count, b3_count FROM read_parquet('{glob}')").fetchall()
    assert len(rows) > 1000 and all(h3.cell_to_parent(h3.int_to_str(r[0]), 6) == h3.int_to_str(r[1]) for r in rows[:100])
    assert sum(r[4] for r in rows) > 0 and all(r[3] is None or 0 < r[3] <= 255 for r in rows)  # nodata 0 is skipped
    assert (out / "rgb" / "stac" / "rgb_byte" / "rgb_byte.json").exists()


def test_real_world_geometry_gives_a_correct_product_or_a_clear_error(cli, tmp_path):
    src, out = tmp_path / "world.gpkg", tmp_path / "out"
    layers = {
        "islands": [shapely.Polygon([(177, -18), (-178, -18), (-178, -16), (177, -16)])],  # ring across 180°
        "wrong_crs": [shapely.box(10, 45, 11, 46), shapely.box(501000, 4000000, 501100, 4001000)],  # UTM metres
        "mixed": list(MIXED.values()),
    }
    for name, geoms in layers.items():
        frame = gpd.GeoDataFrame({"n": range(len(geoms))}, geometry=geoms, crs=4326)
        pyogrio.write_dataframe(frame, src, layer=name, geometry_type="Unknown" if name == "mixed" else None,
                                append=src.exists())
    result = cli("run", "--source", str(src), "--dataset", "world", "--out", str(out), "--resolution", "5",
                 "--parents", "0")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert ("geoparquet[wrong_crs]: dataset 'world', layer 'wrong_crs': coordinates (bounds 10, 45, 501,100, "
            "4,001,000) do not fit the layer's declared CRS EPSG:4326") in result.output
    assert "look like UTM metres" in result.output and "What to do: fix the CRS the source declares" in result.output
    assert re.search(r"\b1 of \d+ steps failed", result.output)  # that step alone
    assert "note: geoparquet[mixed]: repaired: 1, dropped other geometry types: 2, trimmed other geometry types: 1" \
        in result.output
    products = files_under(out / "world")
    assert not any("wrong_crs" in p for p in products)  # nothing published for it
    assert "wrong_crs" not in (out / "world" / "README.md").read_text()
    for layer in ("islands", "mixed"):  # polygon layers: every polygon product, hex too
        assert {f"{layer}.parquet", f"{layer}.pmtiles", f"stac/{layer}/{layer}.json"} <= set(products), products
        assert any(p.startswith(f"hex/{layer}/h0=") for p in products)
    islands = gpd.read_parquet(out / "world" / "islands.parquet").geometry.iloc[0]
    assert islands.area == pytest.approx(10)
    assert set(gpd.read_parquet(out / "world" / "mixed.parquet").geom_type) == {"MultiPolygon"}
