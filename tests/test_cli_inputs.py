"""Inputs a user brings, through the CLI as they run it: a correct product or an error that names the dataset,
layer, cause and what to do; never a traceback, and nothing published for what was refused (issue 11)."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import dagster as dg
import geopandas as gpd
import pyarrow as pa
import pyarrow.parquet as pq
import pyogrio
import pytest
import shapely
from click.testing import CliRunner

from cng_assets.cli import main

CLI = Path(sys.executable).parent / "cng-assets"


@pytest.fixture
def cli(tmp_path):
    def invoke(*args):
        return CliRunner(env={"DAGSTER_HOME": str(tmp_path / "home")}).invoke(main, list(args), catch_exceptions=False)
    return invoke


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []


def wkt_csv(path: Path, rows: dict[str, str]) -> Path:
    """A CSV whose `WKT` column GDAL reads as geometry, with no CRS: what many ad-hoc exports look like."""
    path.write_text("WKT,name\n" + "".join(f'"{wkt}",{name}\n' for name, wkt in rows.items()))
    return path


@pytest.mark.parametrize("source, said", [
    ("corrupt.gpkg", "GDAL cannot open source '{tmp}/corrupt.gpkg': '{tmp}/corrupt.gpkg' not recognized as being "
                     "in a supported file format"),
    ("https://127.0.0.1:9/parks.gpkg", "cannot reach https://127.0.0.1:9/parks.gpkg: CURL error: Failed to connect"),
    ("s3://no-such-bucket/parks.gpkg", "cannot read s3://no-such-bucket/parks.gpkg: no S3 credentials or endpoint"),
])
def test_a_source_that_cannot_be_opened_fails_before_any_run(tmp_path, source, said):
    (tmp_path / "corrupt.gpkg").write_bytes(b"not a geopackage")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(DAGSTER_HOME=str(tmp_path / "home"), HOME=str(tmp_path), AWS_CONFIG_FILE=str(tmp_path / "none"),
               AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"))
    done = subprocess.run([str(CLI), "run", "--source", source, "--dataset", "parks", "--out", str(tmp_path / "out")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stdout.startswith("error: dataset 'parks': " + said.format(tmp=tmp_path)), done.stdout
    assert "What to do: " in done.stdout
    assert done.stderr == ""  # GDAL's warnings are in the message, not printed around it; no traceback
    assert done.stdout.count("Malformed input") <= 1  # GDAL's retries say it ten times: once is enough
    assert "Products are in" not in done.stdout and not (tmp_path / "out").exists()
    instance = dg.DagsterInstance.from_ref(dg.InstanceRef.from_dir(str(tmp_path / "home"))) \
        if (tmp_path / "home" / "dagster.yaml").exists() else None
    assert instance is None or instance.get_runs_count() == 0  # no Dagster run was made


def test_crs_given_on_the_command_line_for_a_source_without_one(cli, tmp_path):
    source = wkt_csv(tmp_path / "parks.csv", {"a": "POLYGON((-120 35,-119 35,-119 36,-120 36,-120 35))",
                                              "b": "POLYGON((-118 34,-117.5 34,-117.5 34.5,-118 34))"})
    listed = cli("layers", str(source))
    assert listed.exit_code == 0 and "pass it with --crs (e.g. --crs EPSG:4269)" in listed.output
    assert "EPSG:4269 (--crs)" in cli("layers", str(source), "--crs", "EPSG:4269").output
    bad = cli("run", "--source", str(source), "--dataset", "parks", "--crs", "EPSG:999999")
    assert bad.exit_code == 2
    assert bad.output.startswith("error: --crs: 'EPSG:999999' is not a CRS PROJ knows (e.g. EPSG:4269")

    out = tmp_path / "out"
    missing = cli("run", "--source", str(source), "--dataset", "parks", "--out", str(out))
    assert missing.exit_code == 1
    assert ("geoparquet[parks]: dataset 'parks', layer 'parks': the layer declares no CRS. What to do: if you know "
            "it, set `crs:` (e.g. EPSG:4269) in the dataset's catalog entry, or pass `--crs EPSG:4269` to "
            "`cng-assets run`") in missing.output

    given = cli("run", "--source", str(source), "--dataset", "parks", "--out", str(out), "--crs", "EPSG:4269",
                "--resolution", "6", "--parents", "0", "--datetime", "2019-05-01")
    assert given.exit_code == 0, given.output
    item = json.loads((out / "parks" / "stac" / "parks" / "parks.json").read_text())["properties"]
    assert (item["datetime"], item["cng:datetime_source"]) == ("2019-05-01T00:00:00Z", "cli")
    bad = cli("run", "--source", str(source), "--dataset", "parks", "--datetime", "May 2019")
    assert bad.exit_code == 2 and bad.output.startswith("error: datetime: 'May 2019' is not an ISO 8601 date")
    assert "note: hex_plan[parks]: estimate: about " in given.output  # the plan's size, before hexing
    progress = re.findall(r"^\[(\d+)/(\d+)\] ([a-z_]+)\S* ok$", given.output, re.M)  # counted per asset
    per_asset = {}
    for nth, of, asset in progress:
        per_asset.setdefault(asset, []).append((int(nth), int(of)))
    assert per_asset["hex_chunk"] and per_asset["stac_catalog"] == [(1, 1)]
    for asset, counts in per_asset.items():  # 1..n, the denominator fixed from the first step of the asset on
        assert counts == [(i, len(counts)) for i in range(1, len(counts) + 1)], (asset, counts)
    frame = gpd.read_parquet(out / "parks" / "parks.parquet")
    assert frame.crs.to_epsg() == 4326 and sorted(frame["name"]) == ["a", "b"]
    assert frame.total_bounds == pytest.approx([-120, 34, -117.5, 36], abs=1e-3)  # NAD83 -> WGS84: sub-metre
    assert pq.read_metadata(out / "parks" / "hex" / "_plan" / "parks.parquet").num_rows == 2


def test_multipatch_and_a_table_without_columns_are_refused_by_name(cli, tmp_path):
    folder = tmp_path / "city"
    folder.mkdir()
    wkt_csv(folder / "buildings.csv", {"tower": "TIN Z (((0 0 0,0 1 0,1 0 0,0 0 0)))",  # how GDAL reads a multipatch
                                       "hall": "POLYHEDRALSURFACE Z (((0 0 0,0 1 0,1 1 0,0 0 0)))"})
    gpkg = folder / "parks.gpkg"
    frame = gpd.GeoDataFrame({"name": ["green"]}, geometry=[shapely.box(0, 0, 0.01, 0.01)], crs=4326)
    pyogrio.write_dataframe(frame, gpkg, layer="parks")
    with sqlite3.connect(gpkg) as con:  # an attribute table with rows but no columns: GDAL lists it
        con.execute("CREATE TABLE notes (fid INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL)")
        con.execute("INSERT INTO gpkg_contents (table_name, data_type, identifier) VALUES ('notes', 'attributes', 'notes')")
        con.executemany("INSERT INTO notes (fid) VALUES (?)", [(1,), (2,)])
    out = tmp_path / "out"
    result = cli("run", "--source", str(folder), "--dataset", "city", "--out", str(out), "--crs", "EPSG:4326",
                 "--resolution", "7", "--parents", "0")
    assert result.exit_code == 1
    assert ("geoparquet[buildings]: dataset 'city', layer 'buildings': the layer holds 3D surfaces (multipatch, TIN "
            "or polyhedral surface: 2 of the 2 features read so far), which this project does not convert. What to "
            "do: export their footprints to a polygon layer") in result.output
    assert ("table[notes]: dataset 'city', layer 'notes': the table has no columns, so there is nothing to publish. "
            "What to do: check the source layer, or leave it out") in result.output
    assert "2 of " in result.output and "Traceback" not in result.output
    products = files_under(out / "city")
    assert not any("buildings" in p or "notes" in p for p in products), products  # nothing for what was refused
    assert gpd.read_parquet(out / "city" / "parks.parquet")["name"].tolist() == ["green"]
    assert any(p.startswith("hex/parks/h0=") for p in products)


def test_hex_plan_above_the_cell_budget_is_refused_before_any_chunk(cli, tmp_path):
    source = tmp_path / "big.gpkg"
    pyogrio.write_dataframe(gpd.GeoDataFrame({"n": [1]}, geometry=[shapely.box(-100, 30, -90, 40)], crs=4326), source)
    out = tmp_path / "out"
    result = cli("run", "--source", str(source), "--dataset", "big", "--out", str(out), "--resolution", "8",
                 "--parents", "0", "--max-cells", "1000000")
    assert result.exit_code == 1
    assert ("hex_plan[big]: dataset 'big', layer 'big': the hex plan at resolution 8 is about 1.") in result.output
    assert ("above the budget of 1,000,000 cells. What to do: use a coarser `h3.resolution` (each step down makes "
            "about 7x fewer cells), or, if the layer really needs it, raise `h3.max_cells`") in result.output
    products = files_under(out / "big")
    assert "big.parquet" in products and not any(p.startswith("hex/") for p in products)  # no plan, no chunks


def test_hex_command_checks_its_input(cli, tmp_path):
    plain = tmp_path / "plain.parquet"
    gpd.GeoDataFrame({"n": [1]}, geometry=[shapely.box(0, 0, 1, 1)], crs=4326).to_parquet(plain)
    utm = tmp_path / "utm.parquet"
    frame = gpd.GeoDataFrame({"_cng_fid": [1]}, geometry=[shapely.box(500000, 4e6, 501000, 4.001e6)], crs=32611)
    frame.to_parquet(utm)
    flat = tmp_path / "flat.parquet"
    pq.write_table(pa.table({"_cng_fid": [1]}), flat)
    cases = {
        plain: "plain.parquet has no `_cng_fid` row id column (it was not made by this project). What to do: make "
               "it with `cng-assets run`",
        utm: "utm.parquet is not in lon/lat (its CRS: WGS 84 / UTM zone 11N). What to do: hex needs EPSG:4326",
        flat: "flat.parquet is Parquet without GeoParquet metadata",
        tmp_path / "absent.parquet": "absent.parquet does not exist",
    }
    for path, said in cases.items():
        result = cli("hex", str(path), str(tmp_path / "hex"), "--resolution", "5", "--parents", "0")
        assert result.exit_code == 2 and said in result.output, result.output
    assert not (tmp_path / "hex").exists()


def test_latin1_dbase_text_without_a_cpg_is_decoded_as_dbase_says(cli, tmp_path):
    """A shapefile and a lone .dbf table written in ISO-8859-1 with no .cpg (dBase's default when the header
    names no code page): their text reaches Parquet as UTF-8 that pyarrow and DuckDB read back as written (was:
    a lookup Parquet readers refuse, and a raw DuckDB error for the shapefile)."""
    import duckdb
    import pandas as pd

    names = ["Zürich", "São Paulo", "Kraków", "Île-de-France"]
    folder = tmp_path / "latin"
    folder.mkdir()
    frame = gpd.GeoDataFrame({"name": names}, geometry=[shapely.box(i, 0, i + 1, 1) for i in range(4)], crs=4326)
    pyogrio.write_dataframe(frame, folder / "places.shp", encoding="latin1")
    pyogrio.write_dataframe(pd.DataFrame({"code": [1, 2, 3, 4], "label": names}), folder / "codes.dbf",
                            driver="ESRI Shapefile", encoding="latin1")
    for cpg in folder.glob("*.cpg"):
        cpg.unlink()
    assert "Zürich".encode("latin1") in (folder / "codes.dbf").read_bytes()  # really Latin-1 on disk
    out = tmp_path / "out"
    result = cli("run", "--source", str(folder), "--dataset", "latin", "--out", str(out), "--resolution", "5")
    assert result.exit_code == 0, result.output
    table = out / "latin" / "lookup" / "codes.parquet"
    assert pq.read_table(table).column("label").to_pylist() == names
    assert [r[0] for r in duckdb.sql(f"SELECT label FROM read_parquet('{table}') ORDER BY code").fetchall()] == names
    places = duckdb.sql(f"SELECT name FROM read_parquet('{out / 'latin' / 'places.parquet'}') ORDER BY _cng_fid").fetchall()
    assert [r[0] for r in places] == names


def test_a_zip_of_a_folder_opens_at_the_folder_that_holds_the_data(cli, tmp_path):
    """Zipping a folder puts the data one or more folders down, where GDAL does not look (was: "check that it is a
    complete file"): one shapefile two folders down, a GeoJSON with macOS's `__MACOSX/` beside it, and a folder
    of two shapefiles (two layers)."""
    import zipfile

    frame = gpd.GeoDataFrame({"name": ["a", "b", "c"]}, geometry=[shapely.box(i, 0, i + 1, 1) for i in range(3)], crs=4326)
    made = tmp_path / "made"
    made.mkdir()
    pyogrio.write_dataframe(frame, made / "parks.shp")
    pyogrio.write_dataframe(frame.head(2), made / "lakes.shp")
    pyogrio.write_dataframe(frame.head(1), made / "one.geojson")

    def zipped(name: str, members: dict[str, Path]) -> Path:
        with zipfile.ZipFile(tmp_path / name, "w") as z:
            for arcname, path in members.items():
                z.write(path, arcname) if path else z.writestr(arcname, b"")
        return tmp_path / name

    parks = {f"export/parks/parks{p.suffix}": p for p in made.glob("parks.*")}
    deep = zipped("deep.zip", {"export/": None, **parks})
    mac = zipped("mac.zip", {"data/one.geojson": made / "one.geojson", "__MACOSX/data/._one.geojson": made / "one.geojson"})
    two = zipped("two.zip", {**{f"shp/{p.name}": p for p in made.glob("*.*") if p.stem in ("parks", "lakes")}})
    for source, layers in ((deep, "parks 3"), (mac, "one 1"), (two, "lakes 2")):
        listed = cli("layers", str(source))
        assert listed.exit_code == 0, listed.output
        name, count = layers.split()
        assert re.search(rf"│ {name}\s.*│ {count}\s", listed.output), listed.output
    result = cli("run", "--source", str(deep), "--dataset", "deep", "--out", str(tmp_path / "out"), "--resolution", "5")
    assert result.exit_code == 0, result.output
    product = gpd.read_parquet(tmp_path / "out" / "deep" / "parks.parquet").sort_values("_cng_fid")
    assert product["name"].tolist() == ["a", "b", "c"] and shapely.area(product.geometry.values).round(6).tolist() == [1.0] * 3


def test_a_shapefile_cut_short_is_refused_and_nothing_is_published_for_it(cli, tmp_path):
    """An interrupted copy: the .shp (or the .dbf) shorter than its header says. GDAL reads the missing records as
    null geometries without a word (was: exit 0, half the features "dropped null or empty"); the layer is refused,
    the whole shapefile beside it is still published."""
    folder = tmp_path / "upload"
    folder.mkdir()
    frame = gpd.GeoDataFrame({"name": [f"p{i}" for i in range(200)]},
                             geometry=[shapely.box(i * 0.01, 0, i * 0.01 + 0.005, 0.005) for i in range(200)], crs=4326)
    for stem in ("whole", "short_shp", "short_dbf"):
        pyogrio.write_dataframe(frame, folder / f"{stem}.shp")
    for part in (folder / "short_shp.shp", folder / "short_dbf.dbf"):
        part.write_bytes(part.read_bytes()[: part.stat().st_size // 2])
    out = tmp_path / "out"
    result = cli("run", "--source", str(folder), "--dataset", "upload", "--out", str(out), "--resolution", "5")
    assert result.exit_code == 1 and "Traceback" not in result.output
    for stem, part in (("short_shp", "short_shp.shp"), ("short_dbf", "short_dbf.dbf")):
        assert f"geoparquet[{stem}]: dataset 'upload', layer '{stem}': the file is cut short: {part} is " in result.output
        assert not (out / "upload" / f"{stem}.parquet").exists()
    assert len(gpd.read_parquet(out / "upload" / "whole.parquet")) == 200


def test_crs_given_for_a_raster_that_declares_none(cli, tmp_path):
    """`--crs` applies to rasters too (was: ignored, and raster hex failed after the COG was published without a
    CRS): without it the COG step says what to do; with it every product is placed where pyproj puts the pixels."""
    import h3
    import numpy as np
    import rasterio
    from pyproj import Transformer
    from rasterio.transform import from_origin

    src = tmp_path / "grid.tif"
    transform = from_origin(500_000, 4_100_000, 1_000, 1_000)
    with rasterio.open(src, "w", driver="GTiff", width=20, height=10, count=1, dtype="float32", transform=transform) as d:
        d.write(np.arange(200, dtype="float32").reshape(1, 10, 20))
    out = tmp_path / "out"
    refused = cli("run", "--source", str(src), "--dataset", "grid", "--out", str(out), "--resolution", "7")
    assert refused.exit_code == 1 and ("cog[grid]: dataset 'grid', layer 'grid': the raster declares no CRS. What to do: "
                                       "if you know it, set `crs:`") in refused.output
    assert not (out / "grid" / "grid.tif").exists()
    given = cli("run", "--source", str(src), "--dataset", "grid", "--out", str(out), "--resolution", "7",
                "--crs", "EPSG:32618")
    assert given.exit_code == 0, given.output
    with rasterio.open(out / "grid" / "grid.tif") as cog:
        assert cog.crs.to_epsg() == 32618 and cog.transform == transform
    corner = Transformer.from_crs(32618, 4326, always_xy=True).transform(500_500, 4_099_500)  # first pixel's centre
    hexed = pq.read_table(out / "grid" / "hex" / "grid", columns=["h7"])
    cells = {h3.int_to_str(c) for c in hexed.column("h7").to_pylist()}
    assert h3.latlng_to_cell(corner[1], corner[0], 7) in cells
