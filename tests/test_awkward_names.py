"""Awkward paths and names through the real CLI, as a user runs it: a source and an output folder whose paths hold
an apostrophe, spaces, a double quote and non-ASCII letters, a layer and attributes named no better, and a source
column `BBox` that DuckDB would otherwise confuse with our `bbox`. The products are read back with readers other
than the writers: geopandas, DuckDB, pandas (the hex folder, h0 among its parents) and pystac."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import geopandas as gpd
import pandas as pd
import pyogrio
import pystac
import shapely

from tests.conftest import REPO

CLI = Path(sys.executable).parent / "cng-assets"
LAYER = "Åreas \"protégées\" d'O'Brien"
ATTRIBUTES = {  # source name: values
    "Näme \"quoted\"": ["Søndre 'Ø'", 'Nord "N"', "Ünder"],
    "it's a field": [1, 2, 3],
    "BBox": ["b1", "b2", "b3"],
    "h10": [10.5, 20.5, 30.5],
}
RENAMED = {"BBox": "src_BBox", "h10": "src_h10"}


def test_awkward_paths_and_names_run_through_and_read_back(tmp_path):
    folder = tmp_path / "O'Brien \"data\" Åreas"
    folder.mkdir()
    src = folder / "été d'Ørsted.gpkg"
    frame = gpd.GeoDataFrame(ATTRIBUTES, geometry=[shapely.box(x, 45, x + 0.3, 45.3) for x in (10, 11, 12)], crs=4326)
    pyogrio.write_dataframe(frame, src, layer=LAYER)
    out = tmp_path / "out 'ø' \"x\""
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "home"), "PYTHONPATH": str(REPO)}
    done = subprocess.run([str(CLI), "run", "--source", str(src), "--dataset", "awkward", "--out", str(out),
                           "--resolution", "6", "--parents", "5,0"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    root = out / "awkward"
    (gp,) = root.glob("*.parquet")
    slug = gp.stem
    names = [RENAMED.get(c, c) for c in ATTRIBUTES]

    df = gpd.read_parquet(gp).sort_values("_cng_fid")
    assert list(df.columns) == ["_cng_fid", *names, "geometry"]  # geopandas leaves the covering column out
    for source, values in ATTRIBUTES.items():
        assert df[RENAMED.get(source, source)].tolist() == values
    assert shapely.area(df.geometry.values).round(6).tolist() == [0.09] * 3

    con = duckdb.connect()
    rel = con.sql("SELECT * FROM read_parquet($p)", params={"p": str(gp)})
    assert rel.columns == [*df.columns, "bbox"]  # DuckDB renamed nothing (no `bbox_1`)
    assert rel.types[rel.columns.index("bbox")] == "STRUCT(xmin DOUBLE, ymin DOUBLE, xmax DOUBLE, ymax DOUBLE)"
    footer = dict(con.execute("SELECT decode(key), decode(value) FROM parquet_kv_metadata($p)", {"p": str(gp)}).fetchall())
    covering = json.loads(footer["geo"])["columns"]["geometry"]["covering"]["bbox"]
    assert covering == {k: ["bbox", k] for k in ("xmin", "ymin", "xmax", "ymax")}
    assert json.loads(footer["cng_renamed_columns"]) == RENAMED
    assert con.execute('SELECT "src_BBox", "Näme ""quoted""", bbox.xmin FROM read_parquet($p) ORDER BY _cng_fid',
                       {"p": str(gp)}).fetchall() == [("b1", "Søndre 'Ø'", 10.0), ("b2", 'Nord "N"', 11.0),
                                                       ("b3", "Ünder", 12.0)]

    hexed = pd.read_parquet(root / "hex" / slug)
    assert {"_cng_fid", "h6", "h5", "h0", *names} <= set(hexed.columns)  # h0 from the h0= folder names
    per_feature = hexed.drop_duplicates("_cng_fid").sort_values("_cng_fid")
    assert per_feature.src_h10.tolist() == ATTRIBUTES["h10"]
    assert per_feature["Näme \"quoted\""].tolist() == ATTRIBUTES["Näme \"quoted\""]

    item = pystac.Item.from_file(str(root / "stac" / slug / f"{slug}.json"))
    assert item.properties["title"] == LAYER
    columns = {c["name"]: c for c in item.properties["table:columns"]}
    assert list(columns) == rel.columns
    assert "Source column `BBox`, renamed" in columns["src_BBox"]["description"]
    assert "Source column `h10`, renamed" in columns["src_h10"]["description"]
    assert {"geoparquet", "pmtiles", "hex"} <= set(item.assets)
    assert pystac.Collection.from_file(str(root / "stac" / "collection.json")).get_item(slug) is not None

    readme = (root / "README.md").read_text()
    assert LAYER in readme and "Source column `BBox`, renamed" in readme
