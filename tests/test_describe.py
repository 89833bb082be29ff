"""The dataset README, thumbnails and example queries, against real products made by the pipeline's transforms
(the demo dataset, and the FileGDB sample with coded-value domains)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import duckdb
import geopandas as gpd
import h3
import numpy as np
import pyarrow.parquet as pq
import pyogrio
import pytest
from matplotlib.image import imread

from cng_assets.catalog import Dataset, H3Settings, load_catalog
from cng_assets.demo import build_demo_source
from cng_assets.transforms import describe, geoparquet, tables
from cng_assets.transforms import layers as discovery
from cng_assets.transforms.describe import maps as describe_thumbnail
from cng_assets.transforms.describe import readme as describe_readme
from cng_assets.transforms.facts import gather
from cng_assets.transforms.hex.fill import HexSettings
from cng_assets.transforms.hex.layer import hex_layer
from cng_assets.transforms.layers import DOMAIN_KEY_PREFIX
from tests.conftest import shared

PUBLIC = "https://s3-west.nrp-nautilus.io/demo/"


def build_products(ds: Dataset, source: str, root: Path, include=("*",)) -> discovery.Inventory:
    """The products the asset graph writes (same transforms, same catalog settings), without Dagster."""
    (root / "lookup").mkdir(parents=True, exist_ok=True)
    inv = discovery.discover(source, include, ())
    for x in inv.layers:
        if x.kind == "raster":  # rasters are not in the dataset README yet
            continue
        if x.kind == "table":
            tables.write_table(source, x.name, root / f"lookup/{x.slug}.parquet")
            continue
        geoparquet.write_geoparquet(source, x.name, root / f"{x.slug}.parquet", kind=x.kind, crs=ds.crs)
        if x.kind == "polygon":
            done = hex_layer(str(root / f"{x.slug}.parquet"), root / "hex" / x.slug,
                             HexSettings(ds.h3.resolution, tuple(ds.h3.parents), ds.h3.containment),
                             attributes=ds.h3.attributes, target_cells=ds.h3.target_cells_per_chunk)
            assert done.passed
    for d in inv.domains:
        tables.write_domain(d, root / f"lookup/{DOMAIN_KEY_PREFIX}{d.slug}.parquet")
    (root / "inventory.json").write_text(json.dumps(inv.to_json()))
    return inv


def document(ds: Dataset, root: Path, inv, href_base: str):
    """What the docs step does: thumbnails, then facts (which now list them), profiles and the README."""
    for x in gather(ds, root, inv, href_base).layers:
        describe.thumbnail(root / x.files["geoparquet"].key, root / f"{x.slug}.png")
    facts = gather(ds, root, inv, href_base, code_versions={"geoparquet": geoparquet.VERSION})
    profiles = describe.profile_products(facts, root)
    text = describe.dataset_readme(facts, profiles, "run-0001")
    (root / "README.md").write_text(text)
    return facts, profiles, text


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    base = tmp_path_factory.mktemp("describe")
    ds = load_catalog()["demo"]
    source = build_demo_source(base / "raw" / "cng_demo.gpkg")
    root = base / "demo"
    inv = build_products(ds, str(source), root)
    facts, profiles, text = document(ds, root, inv, PUBLIC)
    return ds, root, facts, profiles, text


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    source = str(shared("test_fgdb.gdb.zip"))
    root = tmp_path_factory.mktemp("describe") / "sample"
    ds = Dataset(name="sample", title="FileGDB sample", source=source, prefix="sample",
                 h3=H3Settings(resolution=7, parents=[6, 0]), columns={"FEATURE_NA": "Feature name"})
    inv = build_products(ds, source, root, include=["test_areas", "test_lines", "basetable_2"])
    facts, profiles, text = document(ds, root, inv, "")  # relative hrefs
    return ds, root, facts, profiles, text


def sql_blocks(markdown: str) -> list[str]:
    return re.findall(r"```sql\n(.*?)```", markdown, flags=re.S)


def section(markdown: str, heading: str) -> str:
    start = markdown.index(f"\n## {heading}\n")
    end = markdown.find("\n## ", start + 1)
    return markdown[start: end if end > 0 else None]


def dictionary(markdown: str, heading: str) -> dict[str, list[str]]:
    """column -> [type, description, examples, nulls] from a section's data dictionary."""
    rows = {}
    for line in section(markdown, heading).splitlines():
        m = re.match(r"\| `([^`]+)` \| (.*) \|$", line)
        if m and not line.startswith("| `h"):
            rows[m.group(1)] = [c.strip() for c in re.split(r"(?<!\\)\|", m.group(2))]
    return rows


def run_all(queries: list[str], local: Path, public: str | None, monkeypatch) -> list[list[tuple]]:
    if public is None:
        monkeypatch.chdir(local)  # relative paths: DuckDB resolves them against the working directory
    con = duckdb.connect()
    try:
        return [con.execute(q if public is None else q.replace(public, f"{local}/")).fetchall() for q in queries]
    finally:
        con.close()


# --------------------------------------------------------------------------------------------- example queries

def test_every_query_in_the_demo_readme_returns_rows(demo, monkeypatch):
    _, root, facts, _, text = demo
    blocks = sql_blocks(text)
    # 1 window query per spatial layer, 3 hex queries per polygon layer, 1 per table
    assert len(blocks) == len(facts.layers) + 3 * sum(1 for x in facts.layers if x.hex) + len(facts.tables) == 10
    assert all(PUBLIC in b for b in blocks)  # they read the public products, not a local path
    for sql, rows in zip(blocks, run_all(blocks, root, PUBLIC, monkeypatch)):
        assert rows, f"no rows from:\n{sql}"


def test_every_query_in_the_filegdb_readme_returns_rows_and_decodes_domains(sample, monkeypatch):
    _, root, _, _, text = sample
    blocks = sql_blocks(text)
    for sql, rows in zip(blocks, run_all(blocks, root, None, monkeypatch)):
        assert rows, f"no rows from:\n{sql}"
    decode = {re.search(r"FROM read_parquet\('([^']+)'\) AS t", b).group(1): b for b in blocks if ".label AS" in b}
    assert set(decode) == {"lookup/basetable_2.parquet", "test_lines.parquet"}
    con = duckdb.connect()  # (the working directory is the dataset folder)
    decoded = {}
    for key, sql in decode.items():
        cursor = con.execute(sql)
        rows = [dict(zip([d[0] for d in cursor.description], r)) for r in cursor.fetchall()]
        for label in re.findall(r"\.label AS (\w+)", sql):  # every label column decodes some code: the cast matches
            assert any(r[label] is not None for r in rows), f"{key}: {label} never matched a code"
        decoded[key] = rows
    assert [c for c in decoded["lookup/basetable_2.parquet"][0] if c.endswith("_label")] == \
        ["DISTRICT_ID_label", "RIPSTAT_ID_label", "Potential_Haz_Class_d_label"]
    # the labels are the domains': compare with a lookup by the code's text
    codes = dict(con.execute("SELECT code, label FROM 'lookup/domain-d_coordcap.parquet'").fetchall())
    lines = decoded["test_lines.parquet"]
    assert len(lines) == 2 and all(r["COORDCAP_I_label"] == codes[str(int(r["COORDCAP_I"]))] for r in lines)
    districts = dict(con.execute("SELECT code, label FROM 'lookup/domain-district_id.parquet'").fetchall())
    table = [r for r in decoded["lookup/basetable_2.parquet"] if r["DISTRICT_ID"] is not None]
    assert table and all(r["DISTRICT_ID_label"] == districts[str(int(r["DISTRICT_ID"]))] for r in table)


def test_queries_without_profiles_use_subqueries_that_return_rows(demo, sample, monkeypatch):
    for _, root, facts, _, _ in (demo, sample):
        queries = describe.example_queries(facts, f"{root}/")
        assert queries and all(str(root) in sql for _, sql in queries)
        con = duckdb.connect()
        for title, sql in queries:
            assert con.execute(sql).fetchall(), f"{title}: no rows from\n{sql}"


def test_queries_use_real_columns_and_the_h3_area(demo):
    _, root, facts, profiles, text = demo
    hex_columns = set(pq.read_schema(next((root / "hex" / "countries").rglob("*.parquet"))).names)
    assert {"h6", "h5", "h4", "_cng_fid", "continent"} <= hex_columns and "h0" not in hex_columns  # h0: the path
    for name in set(re.findall(r"\bh\d+\b", "\n".join(sql_blocks(text)))):  # every h<res> named is a real column
        assert name in hex_columns | {"h0"}, name  # h0: from the h0= folder names
    assert "h3_" not in text and "h10" not in text  # the old docs' guesses
    km2 = h3.average_hexagon_area(6, unit="km^2")
    literals = {float(x) for x in re.findall(r"\* ([\d.]+), \d\) AS approx_km2", text)}
    assert literals and all(abs(x - km2) / km2 < 1e-5 for x in literals)
    # the place query's cell literal is real: its h0 is its parent, and features there are returned
    m = re.search(r"WHERE h0 = (\d+) AND h6 = (\d+)", text)
    h0, cell = int(m.group(1)), int(m.group(2))
    assert h3.str_to_int(h3.cell_to_parent(h3.int_to_str(cell), 0)) == h0


# ------------------------------------------------------------------------------------------------ README facts

def test_readme_carries_catalog_text_and_facts_from_the_products(demo):
    ds, root, facts, _, text = demo
    assert text.startswith(f"# {ds.title}\n")
    for free in (" ".join(ds.description.split()), ds.citation, ds.license, *ds.columns.values()):
        assert free in text
    layers = section(text, "Layers")
    for x in facts.layers:
        rows = pq.read_metadata(root / f"{x.slug}.parquet").num_rows
        m = re.search(rf"\| `{x.slug}` \| ([\d,]+) \| (\w+) \|", layers)
        assert m and int(m.group(1).replace(",", "")) == rows, x.slug
        for key in (f"{x.slug}.parquet", f"{x.slug}.png"):
            assert f"]({PUBLIC}{key}) ({describe_readme._size((root / key).stat().st_size)})" in layers
    assert "| `continent_lookup` | 8 | 2 |" in layers
    # the H3 facts: rows from the footers, the resolution's average area from h3 (m², within the printed rounding)
    countries = section(text, "Countries")
    hex_rows = sum(pq.read_metadata(f).num_rows for f in (root / "hex" / "countries").rglob("*.parquet"))
    assert f"{hex_rows:,} rows (one per feature and cell) in" in countries
    grid = section(text, "H3 grid")
    for res in (6, 5, 4, 0):
        m = re.search(rf"\| {res} \| `h{res}` \| ([\d,.]+) m² \(([\d,.]+) km²\)", grid)
        assert m, res
        assert float(m.group(1).replace(",", "")) == pytest.approx(h3.average_hexagon_area(res, unit="m^2"), abs=0.5)
        assert float(m.group(2).replace(",", "")) == pytest.approx(h3.average_hexagon_area(res, unit="km^2"), rel=1e-4)
    assert "15 m²" not in text
    assert "centre" in grid and "point on its surface" in grid  # containment and the small-part rule
    prov = section(text, "Provenance")
    assert "`run-0001`" in prov and facts.created in prov and f"describe `{describe.VERSION}`" in prov


def test_data_dictionary_lists_every_column_in_file_order(demo, sample):
    for _, root, facts, _, text in (demo, sample):
        for x in [*facts.layers, *[t for t in facts.tables if not t.slug.startswith(DOMAIN_KEY_PREFIX)]]:
            path = root / (x.files.get("geoparquet") or x.files["table"]).key
            heading = x.name if x.kind != "table" else f"{x.name} (table)"
            rows = dictionary(text, heading)
            assert list(rows) == pq.read_schema(path).names, x.slug
            assert all(len(r) == 4 for r in rows.values())


def test_undocumented_columns_appear_with_a_dash_and_coded_ones_name_their_domain(demo, sample):
    _, _, _, _, text = demo
    continents = dictionary(text, "Continents")
    assert "countries" not in load_catalog()["demo"].columns
    assert continents["countries"][1] == "—"  # present, not omitted
    assert continents["continent"][1] == "Continent name"
    _, _, _, _, text = sample
    table = dictionary(text, "basetable_2 (table)")
    assert table["DISTRICT_ID"][1].startswith("Coded values: domain [district_ID](lookup/domain-district_id.parquet)")
    assert table["SEGMENT_NAME"][1] == "—"
    assert dictionary(text, "test_areas")["FEATURE_NA"][1] == "Feature name"
    assert "| district_ID | 41 | `basetable_2.DISTRICT_ID` |" in section(text, "Coded-value domains")


def test_profile_null_shares_and_examples_are_the_data(demo, sample):
    _, root, _, profiles, _ = sample
    table = pq.read_table(root / "lookup" / "basetable_2.parquet")
    profile = profiles["lookup/basetable_2.parquet"]
    for name in table.column_names:
        examples, share = profile[name]
        assert share == pytest.approx(table.column(name).null_count / table.num_rows)
        assert all(v in table.column(name).to_pylist() for v in examples)
    _, root, _, profiles, text = demo
    countries = pq.read_table(root / "countries.parquet", columns=["_cng_fid", "name", "continent", "pop_est", "bbox"])
    profile = profiles["countries.parquet"]
    firsts = {c: profile[c][0][0] for c in countries.column_names}  # the first examples come from one row
    row = countries.filter(countries.column("_cng_fid").to_numpy() == firsts["_cng_fid"]).to_pylist()
    assert row == [firsts]
    assert profile["geometry"] == (["MultiPolygon"], 0.0)
    assert "Examples: from all 177 rows." in section(text, "Countries")


def test_relative_links_point_at_real_files(sample):
    _, root, _, _, text = sample
    links = re.findall(r"\]\(([^)#]+)\)", text)
    assert len(links) > 10 and not any(link.startswith(("http", "/")) for link in links)
    for link in links:
        assert (root / link).exists(), link
    assert "run DuckDB from here" in text


# ----------------------------------------------------------------------------------------------------- thumbnails

def non_background(png: Path) -> np.ndarray:
    image = imread(png)
    return (np.abs(image[..., :3] - 1.0) > 0.02).any(axis=2)  # white background


def test_thumbnails_are_pngs_of_the_requested_width_with_the_data_drawn(demo, sample, tmp_path):
    for _, root, facts, _, text in (demo, sample):
        for x in facts.layers:
            png = root / f"{x.slug}.png"
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            drawn = non_background(png)
            assert drawn.shape[1] == 800, x.slug
            assert drawn.sum() >= 4 * min(x.rows, 100), f"{x.slug}: blank"  # a feature is at least a 3x3 mark
            assert x.files["thumbnail"].href.endswith(f"{x.slug}.png") and f"]({x.files['thumbnail'].href})" in text
    _, root, _, _, _ = demo
    countries = non_background(root / "countries.png")
    assert 0.2 < countries.mean() < 0.7  # land fills a good part of a world map
    assert 0.4 < countries.shape[0] / countries.shape[1] < 0.55  # 360° x ~174°
    small = describe.thumbnail(root / "country_labels.parquet", tmp_path / "labels.png", width_px=321)
    assert imread(small).shape[1] == 321 and non_background(small).sum() > 100


def test_thumbnail_reads_in_batches_without_changing_the_map(demo, tmp_path, monkeypatch):
    _, root, _, _, _ = demo
    batches = []
    real = describe_thumbnail._geometry_batches

    def counting(pf, max_vertices):
        for geoms in real(pf, max_vertices):
            batches.append(len(geoms))
            yield geoms

    monkeypatch.setattr(describe_thumbnail, "_geometry_batches", counting)
    one = describe.thumbnail(root / "countries.parquet", tmp_path / "one.png")
    assert batches == [177]
    batches.clear()
    many = describe.thumbnail(root / "countries.parquet", tmp_path / "many.png", max_vertices=500)
    assert len(batches) > 20 and sum(batches) == 177 and max(batches) < 30
    a, b = imread(one), imread(many)
    assert a.shape == b.shape
    assert (np.abs(a - b).max(axis=2) > 0.1).mean() < 0.01  # the same map (antialiased seams aside)


def test_thumbnail_of_data_across_the_antimeridian_is_not_world_wide(tmp_path):
    countries = gpd.read_file(shared("naturalearth_lowres") / "naturalearth_lowres.shp")
    pacific = countries[countries.name.isin(["Fiji", "New Zealand", "United States of America"])]
    source = tmp_path / "pacific.gpkg"
    pyogrio.write_dataframe(pacific, source, layer="pacific", promote_to_multi=True)
    gp = tmp_path / "pacific.parquet"
    geoparquet.write_geoparquet(str(source), "pacific", gp, kind="polygon")
    assert json.loads(pq.read_metadata(gp).metadata[b"geo"])["columns"]["geometry"]["bbox"][2] - \
        json.loads(pq.read_metadata(gp).metadata[b"geo"])["columns"]["geometry"]["bbox"][0] > 350  # Fiji is split
    (x0, _, x1, _), cut = describe_thumbnail._frame(pq.ParquetFile(gp))
    assert cut is not None and x0 == pytest.approx(166.5, abs=0.1) and x1 == pytest.approx(360 - 66.96, abs=0.1)
    drawn = non_background(describe.thumbnail(gp, tmp_path / "pacific.png")).any(axis=0)
    empty = np.diff(np.flatnonzero(np.concatenate([[True], drawn, [True]])))  # runs of blank columns (+1)
    assert empty.max() - 1 < 0.15 * len(drawn)  # world-wide, the middle 65% would be blank
    # a world layer keeps the world extent
    assert describe_thumbnail._frame(pq.ParquetFile(shared_countries(tmp_path)))[1] is None


def shared_countries(tmp_path: Path) -> Path:
    gp = tmp_path / "world.parquet"
    geoparquet.write_geoparquet(str(shared("naturalearth_lowres") / "naturalearth_lowres.shp"), "naturalearth_lowres",
                                gp, kind="polygon")
    return gp


def test_hex_queries_work_when_h0_is_not_a_parent(sample, tmp_path, monkeypatch):
    """Without 0 among the parents the files have no h0 column; the queries use the h0= folder (hive) instead."""
    ds, root, _, _, _ = sample
    ds = ds.model_copy(update={"h3": H3Settings(resolution=7, parents=[6])})
    new = tmp_path / "sample"
    new.mkdir()
    for name in ("test_areas.parquet", "inventory.json"):
        (new / name).write_bytes((root / name).read_bytes())
    assert hex_layer(str(new / "test_areas.parquet"), new / "hex" / "test_areas",
                     HexSettings(7, (6,), "center")).passed
    assert "h0" not in pq.read_schema(next((new / "hex").rglob("*.parquet"))).names
    inv = discovery.Inventory.from_json(json.loads((new / "inventory.json").read_text()))
    facts = gather(ds, new, inv)
    text = describe.dataset_readme(facts, describe.profile_products(facts, new), None)
    blocks = [b for b in sql_blocks(text) if "hex/" in b]
    assert len(blocks) == 3 and "WHERE h0 = " in blocks[2]
    for sql, rows in zip(blocks, run_all(blocks, new, None, monkeypatch)):
        assert rows, sql
