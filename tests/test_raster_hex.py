"""Raster hex engine against a brute-force reference: every valid pixel centre -> h3-py's latlng_to_cell, values
grouped per cell in plain Python. Synthetic rasters (made here) and RGB.byte.tif (from ../shared, when present)."""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

import h3
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import rasterio
from pyproj import Transformer
from rasterio.transform import from_origin

from cng_assets.errors import CngInputError
from cng_assets.transforms.hex import runs
from cng_assets.transforms.raster import hex as RH
from cng_assets.transforms.raster.hex import STATS, consolidate_raster_hex, raster_hex
from cng_assets.transforms.verify.raster import check_raster_hex
from tests.conftest import shared

ALL = list(STATS)


def write_raster(path: Path, data: np.ndarray, crs: str, transform, nodata=None, mask=None) -> Path:
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(
            path, "w", driver="GTiff", height=data.shape[1], width=data.shape[2], count=data.shape[0],
            dtype=data.dtype, crs=crs, transform=transform, nodata=nodata) as dst:
        dst.write(data)
        if mask is not None:
            dst.write_mask(mask)
    return path


@pytest.fixture(scope="module")
def projected(tmp_path_factory) -> tuple[Path, np.ndarray, np.ndarray]:
    """int16, 2 bands, 100 m pixels in UTM 33N, few distinct values (so mode ties happen); nodata -9999 in a block
    of band 1 and in scattered pixels of band 2 (so the bands' cells differ)."""
    rng = np.random.default_rng(1)
    data = rng.integers(0, 6, size=(2, 90, 70)).astype(np.int16)
    data[0, 10:30, 5:40] = -9999
    data[1][rng.random((90, 70)) < 0.15] = -9999
    data[1, 60:, :] = -9999  # a strip where only band 1 has data
    path = write_raster(tmp_path_factory.mktemp("proj") / "proj.tif", data, "EPSG:32633",
                        from_origin(500_000, 5_000_000, 100, 100), nodata=-9999)
    return path, data, data != -9999


@pytest.fixture(scope="module")
def geographic(tmp_path_factory) -> tuple[Path, np.ndarray, np.ndarray]:
    """float32 in EPSG:4326, 1-degree pixels across several h0 cells; multiples of 1/8 (sums are exact, whatever
    the order), nodata -9999 in a block and NaN in scattered pixels."""
    rng = np.random.default_rng(2)
    data = (rng.integers(-400, 400, size=(1, 40, 50)) / 8).astype(np.float32)
    data[0, :6, :6] = -9999
    data[0][rng.random((40, 50)) < 0.05] = np.nan
    path = write_raster(tmp_path_factory.mktemp("geo") / "geo.tif", data, "EPSG:4326",
                        from_origin(-25, 20, 1, 1), nodata=-9999)
    return path, data, (data != -9999) & ~np.isnan(data)


def reference(path: Path, data: np.ndarray, valid: np.ndarray, res: int) -> dict[int, dict[int, list]]:
    """{band: {cell: [values]}}, one pixel at a time with h3-py: the values of the valid pixels whose centres fall
    in the cell; for a cell holding none whose own centre falls on a valid pixel, that pixel's values. Candidate
    cells: h3-py's polygon fill of the raster's lon/lat box, widened by two cell edges."""
    with rasterio.open(path) as src:
        transform, crs = src.transform, src.crs
    to_4326 = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    rows, cols = np.nonzero(valid.any(axis=0))
    xs, ys = rasterio.transform.xy(transform, rows, cols, offset="center")  # rasterio's own pixel centres
    lngs, lats = to_4326.transform(xs, ys)
    values, ok = data.tolist(), valid.tolist()
    out = {b: defaultdict(list) for b in range(1, data.shape[0] + 1)}
    for r, c, lng, lat in zip(rows.tolist(), cols.tolist(), np.asarray(lngs).tolist(), np.asarray(lats).tolist()):
        cell = h3.str_to_int(h3.latlng_to_cell(lat, lng, res))
        for b in out:
            if ok[b - 1][r][c]:
                out[b][cell].append(values[b - 1][r][c])
    aggregated = set().union(*out.values())
    h, w = valid.shape[1:]
    bx, by = to_4326.transform(*rasterio.transform.xy(transform, [0, 0, h, h], [0, w, 0, w], offset="ul"))
    pad = 2 * h3.average_hexagon_edge_length(res, "km") / 100
    box = h3.LatLngPoly([(min(by) - pad, min(bx) - pad), (min(by) - pad, max(bx) + pad),
                         (max(by) + pad, max(bx) + pad), (max(by) + pad, min(bx) - pad)])
    from_4326 = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
    for cell in map(h3.str_to_int, h3.polygon_to_cells(box, res)):
        if cell in aggregated:
            continue
        lat, lng = h3.cell_to_latlng(h3.int_to_str(cell))
        r, c = rasterio.transform.rowcol(transform, *from_4326.transform(lng, lat))  # floor: the pixel under it
        if 0 <= r < h and 0 <= c < w and valid[:, r, c].any():
            for b in out:
                if ok[b - 1][r][c]:
                    out[b][cell].append(values[b - 1][r][c])
    return out


def expected(values: list, stat: str):
    if stat == "mode":
        counts = Counter(values)
        top = max(counts.values())
        return min(v for v in counts if counts[v] == top)
    return {"mean": lambda v: sum(v) / len(v), "sum": sum, "min": min, "max": max, "count": len}[stat](values)


def product(out_dir: Path) -> pa.Table:
    """Every part file, h0 folders and files in cell order, h0 added from the folder name as a hive reader adds it;
    checks the folder of each row and ZSTD."""
    tables = []
    for folder in sorted(out_dir.glob("h0=*"), key=lambda p: int(p.name[3:])):
        for f in sorted(folder.glob("*.parquet"), key=lambda p: int(p.stem[5:])):
            meta = pq.ParquetFile(f).metadata
            assert meta.row_group(0).column(0).compression == "ZSTD"
            t = pq.read_table(f)
            h0 = {h3.str_to_int(h3.cell_to_parent(h3.int_to_str(c), 0)) for c in t.column(0).to_pylist()}
            assert h0 == {int(folder.name[3:])} and "h0" not in t.column_names  # h0: the folder name only
            assert f.stem == f"part-{t.column(0)[0].as_py()}"
            tables.append(t.append_column("h0", pa.array([int(folder.name[3:])] * len(t), pa.uint64())))  # as hive
    return pa.concat_tables(tables)


def run(path: Path, tmp: Path, res: int, parents=(0,), stats=None, chunks=1, window_rows=512, **kw):
    with rasterio.open(path) as src:
        height = src.height
    cuts = np.linspace(0, height, chunks + 1).astype(int)
    dirs = [tmp / f"chunk={i}" for i in range(chunks)]
    for d, lo, hi in zip(dirs, cuts[:-1], cuts[1:]):
        raster_hex(str(path), d, res, parents, stats, window_rows=window_rows, rows=(int(lo), int(hi)), **kw)
    rows = consolidate_raster_hex(dirs, tmp / "out", res, parents, stats)
    table = product(tmp / "out")
    assert rows == {k: int(v) for k, v in Counter(
        h3.str_to_int(h3.cell_to_parent(h3.int_to_str(c), 0)) for c in table.column(0).to_pylist()).items()}
    return table


def assert_matches(table: pa.Table, ref: dict, res: int, parents, stats: dict[int, list[str]]) -> None:
    cells = table.column(f"h{res}").to_pylist()
    assert cells == sorted(cells) and len(set(cells)) == len(cells)
    assert set(cells) == set().union(*(set(per_cell) for per_cell in ref.values()))
    for name in (f"h{res}", *(f"h{p}" for p in parents)):
        assert table.schema.field(name).type == pa.uint64()
    assert all(h3.is_valid_cell(h3.int_to_str(c)) and h3.get_resolution(h3.int_to_str(c)) == res for c in cells)
    for p in parents:
        assert table.column(f"h{p}").to_pylist() == [
            h3.str_to_int(h3.cell_to_parent(h3.int_to_str(c), p)) for c in cells]
    checked = 0
    for b, wanted in stats.items():
        assert table.schema.field(f"b{b}_count").type == pa.uint32()
        for s in wanted:
            got = table.column(f"b{b}_{s}").to_pylist()
            want = [expected(ref[b][c], s) if c in ref[b] else (0 if s == "count" else None) for c in cells]
            assert got == want, (b, s)
            checked += sum(w is not None for w in want)
    assert checked > len(cells)


def test_projected_against_reference(projected, tmp_path):
    path, data, valid = projected
    stats = {"b1": ALL}  # band 2 (integer): the default, mode and count
    table = run(path, tmp_path, 9, (8, 0), stats)
    assert table.column_names == ["h9", "h8", *(f"b1_{s}" for s in ALL), "b2_mode", "b2_count", "h0"]
    assert table.schema.field("b1_mode").type == table.schema.field("b1_min").type == pa.int16()
    assert table.schema.field("b1_mean").type == table.schema.field("b1_sum").type == pa.float64()
    ref = reference(path, data, valid, 9)
    assert_matches(table, ref, 9, (8, 0), {1: ALL, 2: ["mode", "count"]})
    counts = np.asarray(table.column("b1_count"))
    assert counts.mean() > 5 and sum(counts) == valid[0].sum()  # cells hold several pixels; every pixel counted
    assert pa.compute.min(table.column("b1_min")).as_py() >= 0  # nodata (-9999) never reaches a statistic
    assert table.column("b2_mode").null_count > 0  # the strip where band 2 is all nodata


def test_geographic_against_reference(geographic, tmp_path):
    path, data, valid = geographic
    stats = {"*": ["mean", "sum", "min", "max", "count"]}
    table = run(path, tmp_path, 2, (1, 0), stats)
    assert_matches(table, reference(path, data, valid, 2), 2, (1, 0), {1: stats["*"]})
    assert len({h3.cell_to_parent(h3.int_to_str(c), 0) for c in table.column("h2").to_pylist()}) > 2
    assert not np.isnan(np.asarray(table.column("b1_mean"))).any()


def test_float_mode(geographic, tmp_path):
    """Mode of float values (not packable into one sort key: the two-key path), split into chunks."""
    path, data, valid = geographic
    table = run(path, tmp_path, 2, (), {"b1": ["mode", "count"]}, chunks=3, window_rows=5)
    assert_matches(table, reference(path, data, valid, 2), 2, (), {1: ["mode", "count"]})


def test_float_defaults_and_band_selection(geographic, tmp_path):
    path, _, _ = geographic
    table = run(path, tmp_path, 2, (), bands=[1])
    assert table.column_names == ["h2", "b1_mean", "b1_min", "b1_max", "b1_count", "h0"]
    assert table.schema.field("b1_min").type == pa.float32()


@pytest.mark.parametrize("fixture", ["projected", "geographic"])
def test_chunks_merge_exactly(fixture, request, tmp_path):
    path, _, _ = request.getfixturevalue(fixture)
    res, stats = (9, {"*": ALL}) if fixture == "projected" else (2, {"*": ["mean", "sum", "min", "max", "count"]})
    whole = run(path, tmp_path / "one", res, (0,), stats)
    split = run(path, tmp_path / "three", res, (0,), stats, chunks=3, window_rows=7)
    assert split.equals(whole)
    names = lambda d: sorted(p.relative_to(d).as_posix() for p in d.glob("h0=*/*.parquet"))  # noqa: E731
    assert names(tmp_path / "three" / "out") == names(tmp_path / "one" / "out")
    # the merge was exercised: some cells are in two chunks
    per_chunk = [set(pa.concat_tables([runs.read(f) for f in (tmp_path / "three" / f"chunk={i}").glob("g=*")])
                     .column("cell").to_pylist()) for i in range(3)]
    assert per_chunk[0] & per_chunk[1] and per_chunk[1] & per_chunk[2]


def test_incremental_merges_match(projected, tmp_path, monkeypatch):
    path, _, _ = projected
    whole = run(path, tmp_path / "a", 9, (0,), {"*": ALL})
    monkeypatch.setattr(RH, "COMPACT_ROWS", 1)  # merge into the chunk's partials after every window
    assert run(path, tmp_path / "b", 9, (0,), {"*": ALL}, window_rows=3).equals(whole)


def test_dataset_mask_excluded(tmp_path):
    rng = np.random.default_rng(3)
    data = rng.integers(1, 4, size=(1, 50, 40)).astype(np.uint8)
    mask = np.full((50, 40), 255, np.uint8)
    mask[:, :20] = 0  # the west half is masked (no nodata value at all)
    data[0, :, :20] = 200
    path = write_raster(tmp_path / "masked.tif", data, "EPSG:32633", from_origin(500_000, 5_000_000, 100, 100),
                        mask=mask)
    table = run(path, tmp_path, 9, (0,), {"b1": ALL})
    assert_matches(table, reference(path, data, (mask > 0)[None], 9), 9, (0,), {1: ALL})
    assert pa.compute.max(table.column("b1_max")).as_py() == 3
    assert sum(table.column("b1_count").to_pylist()) == 50 * 20


def test_rgb_against_reference(tmp_path):
    path = shared("RGB.byte.tif")
    with rasterio.open(path) as src:
        data = src.read()
        assert src.nodata == 0
    stats = {"b1": ALL}
    table = run(path, tmp_path, 8, (7, 0), stats)
    ref = reference(path, data, data != 0, 8)
    assert_matches(table, ref, 8, (7, 0), {1: ALL, 2: ["mode", "count"], 3: ["mode", "count"]})
    assert np.asarray(table.column("b1_count")).mean() > 4


def test_rgb_chunks_merge_exactly(tmp_path):
    path = shared("RGB.byte.tif")
    whole = run(path, tmp_path / "one", 8, (7, 0), {"*": ALL})
    assert run(path, tmp_path / "three", 8, (7, 0), {"*": ALL}, chunks=3, window_rows=100).equals(whole)


def test_chunk_stats_and_rows(projected, tmp_path):
    path, _, valid = projected
    s = raster_hex(str(path), tmp_path / "c", 9, (0,), rows=(20, 50), window_rows=8)
    assert s.rows == (20, 50) and s.windows == 4 and s.pixels == 30 * 70
    assert s.valid_pixels == valid[:, 20:50].any(axis=0).sum() and s.cells > 0 and s.outside == 0
    empty = raster_hex(str(path), tmp_path / "e", 9, (0,), rows=(5, 5))
    assert empty.cells == 0 and (tmp_path / "e" / RH.MARKER).exists()


def test_bad_arguments(projected, tmp_path):
    path, _, _ = projected
    with pytest.raises(ValueError, match="median"):
        raster_hex(str(path), tmp_path / "c", 9, (0,), {"b1": ["median"]})
    with pytest.raises(ValueError, match="not among the bands"):
        raster_hex(str(path), tmp_path / "c", 9, (0,), {"b2": ["mean"]}, bands=[1])
    with pytest.raises(ValueError, match="coarser"):
        raster_hex(str(path), tmp_path / "c", 9, (10,))
    with pytest.raises(ValueError, match="outside"):
        raster_hex(str(path), tmp_path / "c", 9, (0,), rows=(0, 1000))
    raster_hex(str(path), tmp_path / "c", 9, (0,))  # defaults: mode and count
    with pytest.raises(ValueError, match="partials"):
        consolidate_raster_hex([tmp_path / "c"], tmp_path / "out", 9, (0,), {"*": ["mean"]})
    consolidate_raster_hex([tmp_path / "c"], tmp_path / "out", 9, (0,), {"*": ["count"]})  # a subset is fine
    with pytest.raises(FileExistsError):
        consolidate_raster_hex([tmp_path / "c"], tmp_path / "out", 9, (0,))
    raster_hex(str(path), tmp_path / "d", 9, (0,), rows=(80, 90))  # rows 80-90 are in chunk c too
    with pytest.raises(ValueError, match="disjoint"):
        consolidate_raster_hex([tmp_path / "c", tmp_path / "d"], tmp_path / "out2", 9, (0,))
    raster_hex(str(path), tmp_path / "e", 10, (0,), rows=(0, 10))
    with pytest.raises(ValueError, match="differ"):
        consolidate_raster_hex([tmp_path / "e", tmp_path / "c"], tmp_path / "out3", 10, (0,))


@pytest.fixture(scope="module")
def kilometre(tmp_path_factory) -> tuple[Path, np.ndarray, np.ndarray]:
    """int16, 2 bands, 20 x 20 pixels of 1 km in UTM 33N: nodata in a block of band 1 and a row of band 2."""
    data = np.stack([np.arange(400).reshape(20, 20) % 7, np.arange(400).reshape(20, 20) // 20]).astype(np.int16)
    data[0, :5, :6] = -9999
    data[1, 12, :] = -9999
    path = write_raster(tmp_path_factory.mktemp("km") / "km.tif", data, "EPSG:32633",
                        from_origin(500_000, 5_000_000, 1000, 1000), nodata=-9999)
    return path, data, data != -9999


def test_cells_finer_than_pixels_take_the_pixel_under_their_centre(kilometre, tmp_path):
    """1 km pixels at res 9 (~0.1 km² cells): every cell whose centre falls on a valid pixel has its value, across
    chunk and window edges (was: one cell per pixel centre, 400 of the ~3,800 cells on the raster, 90% of its area
    without a value)."""
    path, data, valid = kilometre
    table = run(path, tmp_path, 9, (0,), {"*": ALL}, chunks=3, window_rows=4)
    assert_matches(table, reference(path, data, valid, 9), 9, (0,), {1: ALL, 2: ALL})
    expected = valid.any(axis=0).sum() * 1e6 / h3.average_hexagon_area(9, "m^2")
    assert 0.9 * expected < table.num_rows < 1.1 * expected and table.num_rows > 3000
    checks = {c.name: c for c in check_raster_hex(tmp_path / "out", str(path), 9)}
    assert all(c.passed for c in checks.values()), checks


def test_default_resolution_follows_pixel_size(kilometre, tmp_path):
    """The finest resolution whose average cell is at least a pixel: 1 km² pixels -> res 7 (5.2 km², res 8 is
    0.74 km²); 100 m pixels -> res 10 (0.015 km²)."""
    path, data, _ = kilometre
    assert RH.raster_resolution(str(path)) == 7
    fine = write_raster(tmp_path / "fine.tif", data, "EPSG:32633", from_origin(500_000, 5_000_000, 100, 100), -9999)
    assert RH.raster_resolution(str(fine)) == 10
    for res, side in ((7, 1000), (10, 100)):
        assert h3.average_hexagon_area(res, "m^2") >= side**2 * 0.99 > h3.average_hexagon_area(res + 1, "m^2")


def test_resolution_from_the_catalog_only_when_it_names_one(kilometre, tmp_path):
    """The vector layers' resolution (h3) does not set a raster's; the pixel size's does, unless the catalog's
    `raster.resolution` (or --resolution) names one; the product's files and its STAC Item say which and where it
    came from."""
    from cng_assets.catalog import Dataset, H3Settings, RasterSettings
    from cng_assets.defs.raster import hex_resolution
    from cng_assets.transforms import facts, layout, stac
    from cng_assets.transforms.layers import Inventory, Layer

    path, _, _ = kilometre
    base = dict(name="km", title="km", source=str(path), prefix="km", datetime="2020-01-01")
    settings, source = hex_resolution(Dataset(**base), str(path))
    assert (settings.resolution, settings.parents, source) == (7, (6, 5, 0), "pixel size")
    settings, source = hex_resolution(Dataset(**base, raster=RasterSettings(resolution=10)), str(path))
    assert (settings.resolution, settings.parents, source) == (10, (9, 8, 0), "catalog")
    settings, source = hex_resolution(Dataset(**base, h3=H3Settings(resolution=12, parents=[8, 6, 0])), str(path))
    assert (settings.resolution, settings.parents, source) == (7, (6, 5, 0), "pixel size")
    with pytest.raises(CngInputError, match=r"about 1,3\d\d,\d{3} cells .* budget of 100,000.*\(resolution 7\)"):
        hex_resolution(Dataset(**base, h3=H3Settings(max_cells=100_000), raster=RasterSettings(resolution=12)), str(path))

    root = tmp_path / "km"
    root.mkdir()
    (root / layout.cog("km")).write_bytes(path.read_bytes())
    raster_hex(str(path), tmp_path / "c", 7, (0,))
    consolidate_raster_hex([tmp_path / "c"], root / layout.hex("km"), 7, (0,), resolution_source="pixel size")
    layer = Layer("km", "km", "raster", None, 400, "EPSG:32633", [("b1", "int16")], raster={"path": str(path)})
    gathered = facts.gather(Dataset(**base), root, Inventory([layer], [], [])).rasters[0]
    item = stac.raster_item(facts.gather(Dataset(**base), root, Inventory([layer], [], [])), gathered).to_dict()
    assert item["properties"]["cng:h3_resolution"] == 7
    assert item["properties"]["cng:h3_resolution_source"] == "pixel size"


def test_hex_check_fails_on_uncovered_or_wrong_cells(kilometre, tmp_path):
    """The blocking check, against the source: a product with one cell per pixel centre (what was published
    before) fails coverage with its figures; a changed value fails the value check."""
    path, _, valid = kilometre
    raster_hex(str(path), tmp_path / "c", 9, (0,), {"*": ["mean", "count"]})
    for f in (tmp_path / "c").glob("[sn]=*.arrow"):  # no centre samples: the old product
        f.unlink()
    consolidate_raster_hex([tmp_path / "c"], tmp_path / "old", 9, (0,))
    checks = {c.name: c for c in check_raster_hex(tmp_path / "old", str(path), 9)}
    cover = checks["covers_raster"]
    assert not cover.passed and cover.detail["cells_with_values"] == valid.any(axis=0).sum()
    assert cover.detail["expected_from_valid_area"] > 3000 and checks["values_match_source"].passed

    raster_hex(str(path), tmp_path / "d", 9, (0,), {"*": ["mean", "count"]})
    consolidate_raster_hex([tmp_path / "d"], tmp_path / "new", 9, (0,))
    files = sorted((tmp_path / "new").glob("h0=*/*.parquet"))
    t = pq.read_table(files[0])
    mean = pa.compute.add(t.column("b2_mean"), 0.5)
    pq.write_table(t.set_column(t.column_names.index("b2_mean"), "b2_mean", mean), files[0])
    checks = {c.name: c for c in check_raster_hex(tmp_path / "new", str(path), 9)}
    assert checks["covers_raster"].passed and not checks["values_match_source"].passed
    assert checks["values_match_source"].detail["first_mismatches"][0]["column"] == "b2_mean"
