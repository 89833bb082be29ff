"""The ugly corpus (tests/ugly_corpus.py) through `cng-assets run` as a user runs it, each product checked against
its source by a path of its own: pyogrio or plain JSON for the source, the readers' default calls for the product,
areas in an equal-area CRS per `_cng_fid`, the tiles decoded at max zoom, raster pixels put in H3 cells by h3-py.
A refused input must say dataset, layer and what to do, without a traceback, and publish nothing for that layer."""

from __future__ import annotations

import gzip
import json
import re
import zipfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import duckdb
import geopandas as gpd
import h3
import mapbox_vector_tile as mvt
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pyogrio
import pytest
import rasterio
import shapely
from pmtiles.reader import MmapSource, Reader, all_tiles
from pyproj import CRS, Transformer

from tests.conftest import cli_done
from tests.ugly_corpus import CASES, H3, RUNS, Case, build, grow

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d")
MERCATOR_LAT = 85.0511  # tiles stop there: a feature wholly beyond cannot be in them
AREA_TOLERANCE = 0.005  # relative: vertices projected one by one, densified edges, GDAL's curve linearisation


@dataclass
class Corpus:
    folder: Path
    out: Path
    done: dict  # run name: the finished `cng-assets run` (for "crs_given": the second run)
    rows_before_growth: int | None

    def dataset_dir(self, case: Case) -> Path:
        return self.out / RUNS[case.run].dataset

    def slug(self, case: Case) -> str:
        """The layer's product name, from the run's inventory (the layer table `cng-assets layers` prints)."""
        inventory = self.dataset_dir(case) / "inventory.json"
        assert inventory.is_file(), f"no inventory for run {case.run!r}:\n{self.said(case)}"
        slugs = {x["name"]: x["slug"] for x in json.loads(inventory.read_text())["layers"]}
        assert case.layer in slugs, f"layer {case.layer!r} is not in the inventory: {sorted(slugs)}"
        return slugs[case.layer]

    def said(self, case: Case) -> str:
        done = self.done[case.run]
        return f"exit {done.returncode}\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"


def _run(folder: Path, out: Path, name: str):
    run = RUNS[name]
    return cli_done(folder / f"home-{name}", "run", "--source", str(folder / run.source), "--dataset", run.dataset,
                    "--out", str(out), *H3, *run.args)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Corpus:
    folder = tmp_path_factory.mktemp("ugly")
    build(folder)
    out = folder / "out"

    def given_twice():
        _run(folder, out, "crs_given")
        product = out / RUNS["crs_given"].dataset / "grows.parquet"
        before = pq.read_metadata(product).num_rows if product.exists() else None
        grow(folder)
        return _run(folder, out, "crs_given"), before

    with ThreadPoolExecutor(2) as pool:  # the runs wait on Dagster's storage much of the time: two at once
        given = pool.submit(given_twice)
        done = dict(zip(("gpkg", "files", "zip"), pool.map(lambda n: _run(folder, out, n), ("gpkg", "files", "zip"))))
        done["crs_given"], before = given.result()
    for name, finished in done.items():  # kept beside the corpus, to read when a case fails
        (folder / f"{name}.out").write_text(f"exit {finished.returncode}\n{finished.stdout}\n{finished.stderr}")
    return Corpus(folder, out, done, before)


# -- the source, read without this project ----------------------------------------------------------------------

def _source(corpus: Corpus, case: Case) -> tuple[list, CRS, list[dict]]:
    """(geometries in source order, their CRS, attribute records) of the case's source layer."""
    path = corpus.folder / case.source
    if path.suffix == ".geojson":  # as plain JSON: properties exactly as written (duplicate names, ids, offsets)
        features = json.loads(path.read_text(encoding="utf-8"))["features"]
        geoms = [shapely.geometry.shape(f["geometry"]) if f["geometry"] else None for f in features]
        return geoms, CRS("EPSG:4326"), [f["properties"] for f in features]
    if path.suffix == ".zip":
        with zipfile.ZipFile(path) as z:
            inner = next(n for n in z.namelist() if n.endswith(".shp"))
        path = f"/vsizip/{path}/{inner}"
    frame = pyogrio.read_dataframe(path, layer=case.layer, encoding=case.encoding)
    crs = frame.crs or CRS(RUNS[case.run].args[RUNS[case.run].args.index("--crs") + 1])
    return list(frame.geometry.values), crs, frame.drop(columns="geometry").to_dict("records")


FAMILY = {"polygon": ("Polygon", "MultiPolygon"), "line": ("LineString", "MultiLineString"), "point": ("Point", "MultiPoint")}


def _parts(g) -> list:
    """The non-empty single parts of a geometry, collections opened."""
    if g is None or g.is_empty:
        return []
    if g.geom_type.startswith("Multi") or g.geom_type == "GeometryCollection":
        return [q for p in shapely.get_parts(g) for q in _parts(p)]
    return [g]


def _expected_fids(geoms: list, kind: str) -> list[int]:
    """Source features a product keeps: a geometry with at least one part of the layer's family."""
    single = FAMILY[kind][0]
    return [i + 1 for i, g in enumerate(geoms) if any(p.geom_type == single for p in _parts(g))]


def _area(geom, crs, target: str, densify: bool) -> float:
    """Area in `target` of a geometry's polygonal parts, edges straight in `crs` (densified before projecting)."""
    polygons = [p for p in _parts(geom) if p.geom_type == "Polygon"]
    series = gpd.GeoSeries(polygons, crs=crs)
    if densify:
        series = series.segmentize(0.1 if series.crs.is_geographic else 10_000)
    return float(series.to_crs(target).area.sum())


def _fids_in_tiles(path: Path, layer: str) -> set[int]:
    """`_cng_fid` of every feature in the archive's tiles at its max zoom."""
    fids: set[int] = set()
    with open(path, "rb") as f:
        source = MmapSource(f)
        max_zoom = Reader(source).header()["max_zoom"]
        for (z, _, _), data in all_tiles(source):
            if z == max_zoom:
                data = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
                fids |= {x["properties"]["_cng_fid"] for x in mvt.decode(data).get(layer, {}).get("features", [])}
    return fids


def _same_instant(source: str | None, product) -> bool:
    if source is None or product is None:
        return source is None and product is None
    p = pd.Timestamp(product)
    return pd.Timestamp(source) == (p if p.tzinfo else p.tz_localize("UTC"))


# -- the checks ---------------------------------------------------------------------------------------------------

def _check_refused(corpus: Corpus, case: Case) -> None:
    done, dataset = corpus.done[case.run], RUNS[case.run].dataset
    said = done.stdout + done.stderr
    assert done.returncode != 0, f"exit 0 for an input that must be refused:\n{corpus.said(case)}"
    assert "Traceback" not in said, corpus.said(case)
    lines = [x for x in said.splitlines() if f"dataset '{dataset}'" in x and f"layer '{case.layer}'" in x]
    assert lines, f"no message names dataset {dataset!r} and layer {case.layer!r}:\n{corpus.said(case)}"
    assert any("What to do" in x and all(w in x for w in case.said) for x in lines), \
        f"the message does not say what to do ({', '.join(case.said)}): {lines}"
    slug = corpus.slug(case)
    root = corpus.dataset_dir(case)
    published = [str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()
                 and (slug in p.relative_to(root).parts[:-1] or p.name.startswith(f"{slug}."))]
    assert not published, f"published for a refused layer: {published}"


def _check_vector(corpus: Corpus, case: Case) -> None:
    slug = corpus.slug(case)
    root = corpus.dataset_dir(case)
    path = root / f"{slug}.parquet"
    assert path.is_file(), f"no {path.name}:\n{corpus.said(case)}"
    table = pq.read_table(path)
    frame = gpd.read_parquet(path)
    assert table.num_rows == duckdb.sql(f"SELECT count(*) FROM '{path}'").fetchone()[0] == len(frame)

    geoms, crs, records = _source(corpus, case)
    kept = _expected_fids(geoms, case.kind)
    fids = sorted(frame["_cng_fid"])
    assert fids == kept, (f"{len(geoms)} source features, {len(geoms) - len(kept)} without a {case.kind} "
                          f"({sorted(set(range(1, len(geoms) + 1)) - set(kept))}): expected fids {kept}, product has {fids}")
    frame = frame.set_index("_cng_fid")
    rows = {r["_cng_fid"]: r for r in table.drop_columns(["geometry", "bbox"]).to_pylist()}
    scope = [f for f in (case.fids or range(1, len(geoms) + 1)) if f in kept]

    for fid in scope:
        mine = frame.geometry.loc[fid]
        if case.kind == "polygon":
            meant = shapely.from_wkt(case.intended[fid]) if fid in case.intended else geoms[fid - 1]
            want = _area(meant, crs, case.area_crs, case.densify)
            got = _area(mine, "EPSG:4326", case.area_crs, case.densify)
            assert got == pytest.approx(want, rel=AREA_TOLERANCE), \
                f"feature {fid}: {got / 1e6:,.4f} km² in the product, {want / 1e6:,.4f} km² in the source ({case.area_crs})"
        else:
            lonlat = gpd.GeoSeries([geoms[fid - 1]], crs=crs).to_crs(4326).force_2d().iloc[0]
            assert np.allclose(shapely.get_coordinates(mine), shapely.get_coordinates(lonlat), atol=1e-9), \
                f"feature {fid}: {mine.wkt[:200]} in the product, {lonlat.wkt[:200]} in the source"
        source, product = records[fid - 1], rows[fid]
        stamps = {k for k, v in source.items() if isinstance(v, str) and TIMESTAMP.match(v)}
        stamps |= {k for k, v in source.items() if v is None and k in product and isinstance(product[k], pd.Timestamp)}
        for k in stamps:
            assert _same_instant(source[k], product.get(k)), f"feature {fid}: {k} {product.get(k)!r}, source {source[k]!r}"
        text = sorted(v for k, v in source.items() if isinstance(v, str) and k not in stamps)
        assert sorted(v for k, v in product.items() if isinstance(v, str)) == text, \
            f"feature {fid}: text {product} in the product, {source} in the source"
        for k, v in source.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k in product:
                assert product[k] == v, f"feature {fid}: {k} = {product[k]!r}, source {v!r}"

    if not kept:
        return
    tiles = root / f"{slug}.pmtiles"
    assert tiles.is_file(), f"no {tiles.name} for {len(kept)} features"
    on_map = [f for f in scope if frame.geometry.loc[f].bounds[3] > -MERCATOR_LAT and frame.geometry.loc[f].bounds[1] < MERCATOR_LAT]
    missing = set(on_map) - _fids_in_tiles(tiles, slug)
    assert not missing, f"features {sorted(missing)} are not in the tiles at max zoom"
    if case.kind == "polygon":
        cells = pd.read_parquet(root / "hex" / slug)
        missing = set(scope) - set(cells["_cng_fid"])
        assert not missing, f"features {sorted(missing)} have no H3 cell"


def _check_raster(corpus: Corpus, case: Case) -> None:
    import xarray as xr

    slug = corpus.slug(case)
    root = corpus.dataset_dir(case)
    with rasterio.open(corpus.folder / case.source) as src:
        values, transform, crs = src.read(1), src.transform, src.crs or CRS(RUNS[case.run].args[-1])
    rows, cols = values.shape
    centres = [transform * (c + 0.5, r + 0.5) for r in range(rows) for c in range(cols)]

    cog = root / f"{slug}.tif"
    assert cog.is_file(), f"no {cog.name}:\n{corpus.said(case)}"
    with rasterio.open(cog) as product:
        to_cog = Transformer.from_crs(crs, product.crs, always_xy=True)
        band = product.read(1)
        for r, c in ((0, 0), (0, cols - 1), (rows - 1, 0), (rows - 1, cols - 1)):  # each corner pixel where it was
            x, y = to_cog.transform(*(transform * (c + 0.5, r + 0.5)))
            pr, pc = product.index(x, y)
            assert 0 <= pr < band.shape[0] and 0 <= pc < band.shape[1], f"corner pixel ({r}, {c}) is outside the COG"
            found = int(band[pr, pc])
            assert abs(found // 1000 - r) <= 1 and abs(found % 1000 - c) <= 1, \
                f"the COG has pixel ({found // 1000}, {found % 1000}) where the source's corner pixel ({r}, {c}) is"
    zarr = xr.open_zarr(root / f"{slug}.zarr", group="0")
    assert zarr.data_vars, "the GeoZarr store has no variable"

    cells = pd.read_parquet(root / "hex" / slug)
    finest = max((c for c in cells.columns if re.fullmatch(r"h\d+", c) and c != "h0"), key=lambda c: int(c[1:]))
    lon, lat = Transformer.from_crs(crs, 4326, always_xy=True).transform(*np.array(centres).T)
    mine = Counter(h3.str_to_int(h3.latlng_to_cell(b, a, int(finest[1:]))) for a, b in zip(lon, lat))
    count = next(c for c in cells.columns if c.endswith("_count"))
    theirs = dict(zip(cells[finest].astype("uint64").tolist(), cells[count].astype(int).tolist()))
    assert sum(theirs.values()) == rows * cols, f"{sum(theirs.values())} pixels counted in the hex, {rows * cols} in the raster"
    assert theirs == dict(mine), f"pixels per {finest} cell differ from h3-py's cells of the pixel centres"


@pytest.mark.timeout(900)  # the corpus's runs, once for the module, come first
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_ugly_input(corpus, case):
    """One corpus case (its `about` says what it is), checked by the kind of product it must give."""
    if case.expect == "refused":
        _check_refused(corpus, case)
    elif case.kind == "raster":
        _check_raster(corpus, case)
    else:
        _check_vector(corpus, case)
    if case.name == "grows_between_runs":
        assert corpus.rows_before_growth == 3, f"the first run wrote {corpus.rows_before_growth} rows, not 3"
        assert "geoparquet[grows] ok" in corpus.done[case.run].stdout, f"not rebuilt:\n{corpus.said(case)}"


def test_product_steps_of_good_layers_did_not_fail(corpus):
    """A run's only failed steps are those of the layers the corpus expects refused; no run prints a traceback."""
    for name, done in corpus.done.items():
        refused = {corpus.slug(c) for c in CASES if c.run == name and c.expect == "refused"}
        failed = set(re.findall(r"^  \w+\[(?:[^|\]]*\|)?([^\]]+)\]: ", done.stdout, re.M))
        assert failed <= refused, f"run {name!r}: steps failed for {sorted(failed - refused)}:\n{done.stdout[-3000:]}"
        assert "Traceback" not in done.stdout + done.stderr, f"run {name!r}:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
