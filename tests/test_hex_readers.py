"""Hex products opened by the readers users use, each with its default call, then with the README's recipes: the
same rows as the files hold, and an `h0` filter returns exactly the rows of that h0= folder. Products are made
by the real CLI: a vector layer spread over many h0 cells (built here), RGB.byte.tif's raster hex, and the demo."""

from __future__ import annotations

import os
import re
from pathlib import Path

import duckdb
import geopandas as gpd
import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pyogrio
import pytest
import shapely

from tests.conftest import cli_run, shared

# duckdb#25629: min/max of a hive key fails when a single file is read (fixed in DuckDB 1.5.6)
MIN_H0_BUG = tuple(int(p) for p in duckdb.__version__.split(".")[:3]) < (1, 5, 6)



@pytest.fixture(scope="module")
def made(tmp_path_factory) -> dict[str, Path]:
    """Dataset folders made by `cng-assets run`: `spread` (polygons over many h0 cells) and `rgb` (raster hex)."""
    tmp = tmp_path_factory.mktemp("readers")
    rng = np.random.default_rng(12)
    lon, lat = rng.uniform(-170, 170, 40), rng.uniform(-60, 70, 40)
    frame = gpd.GeoDataFrame({"name": [f"area {i}" for i in range(40)], "value": np.arange(40.0)},
                             geometry=[shapely.box(x, y, x + 0.4, y + 0.3) for x, y in zip(lon, lat)], crs=4326)
    src = tmp / "spread.gpkg"
    pyogrio.write_dataframe(frame, src, layer="spread areas")
    out = tmp / "out"
    cli_run(tmp / "home", "run", "--source", str(src), "--dataset", "spread", "--out", str(out), "--resolution", "6",
            "--parents", "5,0", timeout=900)
    cli_run(tmp / "home", "run", "--source", str(shared("RGB.byte.tif")), "--dataset", "rgb", "--out", str(out),
            "--resolution", "8", "--parents", "5,0", timeout=900)
    return {"spread": out / "spread", "rgb": out / "rgb"}


def _folders(root: Path) -> list[Path]:
    found = sorted(p for p in (root / "hex").iterdir() if not p.name.startswith("_"))
    assert found
    return found


def _footer_rows(folder: Path) -> dict[int, int]:
    """Rows per h0 folder, from the Parquet footers."""
    rows: dict[int, int] = {}
    for f in folder.glob("h0=*/*.parquet"):
        h0 = int(f.parent.name.removeprefix("h0="))
        rows[h0] = rows.get(h0, 0) + pq.read_metadata(f).num_rows
    return rows


def check_readers(folder: Path) -> dict[str, str]:
    """Every reader's default call; returns the type each gives h0."""
    per_h0 = _footer_rows(folder)
    total, h0 = sum(per_h0.values()), min(per_h0)
    files = list(folder.glob("h0=*/*.parquet"))
    assert all("h0" not in pq.read_schema(f).names for f in files)  # the key is in the path only
    d, glob = str(folder), str(folder / "*" / "*.parquet")
    types = {}

    df = pd.read_parquet(d)
    assert len(df) == total and df.h0.astype("uint64").value_counts().to_dict() == per_h0
    types["pandas"] = str(df.h0.dtype)
    assert len(pd.read_parquet(d, filters=[("h0", "=", str(h0))])) == per_h0[h0]

    table = pq.read_table(d)
    assert table.num_rows == total
    types["pyarrow.parquet"] = str(table.schema.field("h0").type)
    assert pq.read_table(d, filters=[("h0", "=", str(h0))]).num_rows == per_h0[h0]

    dataset = ds.dataset(d, partitioning="hive")
    assert dataset.count_rows() == total
    types["pyarrow.dataset"] = str(dataset.schema.field("h0").type)
    assert dataset.count_rows(filter=ds.field("h0") == str(h0)) == per_h0[h0]

    lazy = pl.scan_parquet(d + "/**/*.parquet", hive_partitioning=True)
    assert lazy.select(pl.len()).collect().item() == total
    types["polars"] = str(lazy.collect_schema()["h0"])
    assert lazy.filter(pl.col("h0") == h0).select(pl.len()).collect().item() == per_h0[h0]

    for name, options in (("duckdb", ""), ("duckdb hive_types", ", hive_types = {'h0': 'UBIGINT'}")):
        src = f"read_parquet($g{options})"
        con = duckdb.connect()
        n, kind = con.execute(f"SELECT count(*), typeof(any_value(h0)) FROM {src}", {"g": glob}).fetchone()
        assert n == total
        types[name] = kind
        assert con.execute(f"SELECT count(*) FROM {src} WHERE h0 = $h0", {"g": glob, "h0": h0}).fetchone()[0] == per_h0[h0]
        first = f"SELECT count(*) FROM {src} WHERE h0 = (SELECT min(h0) FROM {src})"
        if MIN_H0_BUG and len(files) == 1:
            with pytest.raises(duckdb.InternalException):
                con.execute(first, {"g": glob})
        else:
            assert con.execute(first, {"g": glob}).fetchone()[0] == per_h0[h0]
    return types


def check_readme_recipe(root: Path) -> None:
    """The README's Python recipe, run from the dataset folder as it says: every reader keeps the first h0's rows."""
    section = (root / "README.md").read_text().split("## Reading the H3 cells", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    folder = root / re.search(r"pq\.read_table\('([^']+)'", code).group(1)
    scope: dict = {}
    cwd = os.getcwd()
    os.chdir(root)
    try:  # the lazy readers (DuckDB's relation, the dataset) read relative paths when asked
        exec(code, scope)
        want = _footer_rows(folder)[scope["h0"]]
        assert len(scope["rel"].fetchall()) == len(scope["df"]) == scope["table"].num_rows == scope["frame"].height == want
        assert scope["dataset"].count_rows(filter=ds.field("h0") == scope["h0"]) == want
        cell = next(c for c in scope["table"].column_names if re.fullmatch(r"h\d+", c))  # the cell column, in the files
        assert scope["rel"].project(f"typeof(h0), typeof({cell})").fetchone() == ("UBIGINT", "UBIGINT")
    finally:
        os.chdir(cwd)
    assert scope["df"].h0.dtype == "uint64" and scope["table"].schema.field("h0").type == pa.uint64()
    assert scope["frame"].schema["h0"] == pl.UInt64


EXPECTED_TYPES = {"pandas": "category", "pyarrow.parquet": "dictionary<values=string, indices=int32, ordered=0>",
                  "pyarrow.dataset": "string", "polars": "Int64", "duckdb": "BIGINT", "duckdb hive_types": "UBIGINT"}


def test_vector_and_raster_hex_open_in_every_reader(made):
    for name, root in made.items():
        for folder in _folders(root):
            assert check_readers(folder) == EXPECTED_TYPES, folder
        check_readme_recipe(root)
    assert len(_footer_rows(_folders(made["spread"])[0])) > 5  # spread over many h0 folders
    gp = gpd.read_parquet(made["spread"] / "spread_areas.parquet")
    assert len(gp) == 40 and gp.crs.to_epsg() == 4326


def test_demo_hex_opens_in_every_reader(demo_products):
    for folder in _folders(demo_products):
        assert check_readers(folder) == EXPECTED_TYPES, folder
    check_readme_recipe(demo_products)
    for gp in demo_products.glob("*.parquet"):
        assert len(gpd.read_parquet(gp)) == pq.read_metadata(gp).num_rows
