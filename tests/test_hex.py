"""The hex engine against h3-py (the reference implementation), on real and awkward polygons."""

import io
import json
import os
import shutil
import subprocess
import sys

import geopandas as gpd
import h3
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import shapely
from click.testing import CliRunner

from cng_assets.cli import main
from cng_assets.transforms.geoparquet import write_geoparquet
from cng_assets.transforms.hex import cells as C
from cng_assets.transforms.hex import runs
from cng_assets.transforms.hex.chunk import MARKER, run_chunk
from cng_assets.transforms.hex.consolidate import consolidate, read_back_checks
from cng_assets.transforms.hex.edges import EdgeGrid
from cng_assets.transforms.hex.fill import (
    KERNEL_MAX_CELLS,
    REACH,
    HexSettings,
    _clip,
    cover,
    estimate_cells,
    kernel_fill,
    large_fill,
    root_resolution,
)
from cng_assets.transforms.hex.lattice import lattice_fill
from cng_assets.transforms.hex.layer import chunk_units, hex_layer
from cng_assets.transforms.hex.plan import _partition, plan_digest, plan_layer
from cng_assets.transforms.verify import hex as hex_check
from tests.conftest import shared


def h3py_cells(part, res) -> set[int]:
    """The reference: h3-py's centre-containment fill of one polygon."""
    shape = h3.LatLngPoly([(y, x) for x, y in part.exterior.coords],
                          *[[(y, x) for x, y in ring.coords] for ring in part.interiors])
    return {h3.str_to_int(c) for c in h3.polygon_to_cells(shape, res)}


def large(part, res, mode="center", roots=None) -> np.ndarray:
    return np.concatenate(list(large_fill(part, res, mode, roots)) or [np.empty(0, np.uint64)])


def test_bit_arithmetic_matches_h3():
    rng = np.random.default_rng(3)
    lat, lng = np.degrees(np.arcsin(rng.uniform(-1, 1, 300))), rng.uniform(-180, 180, 300)
    cells = np.array([h3.str_to_int(h3.latlng_to_cell(a, b, 10)) for a, b in zip(lat, lng)], dtype=np.uint64)
    for p in (9, 8, 5, 0):
        expected = [h3.str_to_int(h3.cell_to_parent(h3.int_to_str(int(c)), p)) for c in cells]
        assert C.parent(cells, p).tolist() == expected
    assert C.valid_at(cells, 10).all() and not C.valid_at(cells, 9).any()
    assert not C.valid_at(cells ^ np.uint64(7), 10).all()  # a digit of 7 inside the resolution is not a cell
    coarse = C.parent(cells[:5], 6)
    expected = sorted(h3.str_to_int(k) for c in coarse for k in h3.cell_to_children(h3.int_to_str(int(c)), 9))
    assert sorted(C.children(coarse, 6, 9).tolist()) == expected
    pentagons = np.array([h3.str_to_int(p) for p in h3.get_pentagons(5)], dtype=np.uint64)
    expected = sorted(h3.str_to_int(k) for c in pentagons for k in h3.cell_to_children(h3.int_to_str(int(c)), 7))
    assert sorted(C.children(pentagons, 5, 7).tolist()) == expected  # the deleted K-axis subsequence is skipped


@pytest.mark.parametrize("sample, res, step, lattice_share", [("coutwildrnp", 10, 4, 0.9),
                                                              ("naturalearth_lowres", 5, 9, 0.1)])
def test_exactly_centre_containment_on_real_polygons(sample, res, step, lattice_share):
    parts = shapely.get_parts(gpd.read_file(shared(sample) / f"{sample}.shp").geometry.values)
    parts = parts[(shapely.bounds(parts)[:, 2] - shapely.bounds(parts)[:, 0]) < 180][::step]  # h3-py misreads wider ones
    index, kernel = kernel_fill(parts, res, "center")
    small = estimate_cells(parts, res) <= KERNEL_MAX_CELLS  # the parts a chunk sends to kernel_fill
    _, _, left = lattice_fill(parts[small], res)
    # at resolution 5 most country parts are wider than a resolution-2 cell, the coarsest anchor: the kernel's
    assert (~left).mean() >= lattice_share, "the compiled lattice fill took fewer small parts than it should"
    for i, part in enumerate(parts):
        reference = h3py_cells(part, res)
        coarse_to_fine = large(part, res)
        assert len(coarse_to_fine) == len(set(coarse_to_fine.tolist()))  # no duplicates
        assert set(coarse_to_fine.tolist()) == reference, f"part {i}"
        assert set(kernel[index == i].tolist()) == reference, f"part {i}"


def _blob(lng, lat, radius_deg, rng, hole=False):
    """An irregular polygon of 7-40 vertices around (lng, lat), sometimes with a hole."""
    n = int(rng.integers(7, 40))
    angle = np.sort(rng.uniform(0, 2 * np.pi, n))
    r = radius_deg * rng.uniform(0.4, 1.0, n)
    ring = np.column_stack([lng + r * np.cos(angle) / np.cos(np.radians(lat)), lat + r * np.sin(angle)])
    poly = shapely.make_valid(shapely.Polygon(ring))
    if hole:
        poly = shapely.make_valid(poly.difference(shapely.Point(lng, lat).buffer(radius_deg * 0.3)))
    return max(shapely.get_parts(poly), key=shapely.area) if poly.geom_type != "Polygon" else poly


def test_lattice_fill_is_exactly_centre_containment_around_the_globe():
    """The compiled lattice fill against h3-py on polygons it did not make: random places on every face, next to
    icosahedron face edges (cells spanning two faces) and pentagons, up to 79° latitude, at resolutions 7-11.
    Parts it cannot decide go to the kernel; every part it takes must match the reference exactly."""
    rng = np.random.default_rng(11)
    places = [(rng.uniform(-178, 178), np.degrees(np.arcsin(rng.uniform(-0.98, 0.98)))) for _ in range(160)]
    two_faces = [c for c in h3.get_res0_cells() for c in h3.cell_to_children(c, 2) if len(h3.get_icosahedron_faces(c)) > 1]
    places += [h3.cell_to_latlng(c)[::-1] for c in rng.choice(two_faces, 60, replace=False)]
    places += [h3.cell_to_latlng(n)[::-1] for p in h3.get_pentagons(4)[:6] for n in h3.grid_ring(p, 2)[:3]]
    taken = total = 0
    for k, (lng, lat) in enumerate(places):
        res = int(rng.integers(7, 12))
        radius = h3.average_hexagon_edge_length(res, "km") / 111 * rng.uniform(0.7, 12)
        parts = np.array([_blob(lng, lat, radius, rng, hole=k % 4 == 0)])
        index, cells, left = lattice_fill(parts, res)
        total += 1
        if left[0]:
            continue
        taken += 1
        assert set(cells.tolist()) == h3py_cells(parts[0], res), f"place {k} at ({lng:.4f}, {lat:.4f}) res {res}"
        assert len(cells) == len(set(cells.tolist()))
    assert taken / total > 0.6, f"the lattice took only {taken} of {total} parts"


def test_lattice_fill_decides_centres_on_an_edge_by_the_exact_centre():
    """Edges through cell centres: those cells are undecided on the lattice and must get the same answer as the
    exact test everywhere else in the engine (centre strictly inside)."""
    centre = h3.latlng_to_cell(45.5, -122.6, 9)
    ring = [h3.cell_to_latlng(c)[::-1] for c in h3.grid_ring(centre, 3)[::3]]
    part = shapely.Polygon(ring)
    index, cells, left = lattice_fill(np.array([part]), 9)
    assert not left[0]
    assert set(cells.tolist()) == set(large(part, 9).tolist())


def test_overlap_containment_is_the_cells_touching_the_polygon():
    part = shapely.get_parts(gpd.read_file(shared("coutwildrnp") / "coutwildrnp.shp").geometry.values)[0]
    cells = large(part, 9, "overlap")
    assert h3py_cells(part, 9) < set(cells.tolist())  # a superset of the centre cells
    assert shapely.intersects(part, C.hexagons(cells)).all()
    neighbours = {h3.str_to_int(n) for c in cells for n in h3.grid_ring(h3.int_to_str(int(c)), 1)}
    left_out = np.array(sorted(neighbours - set(cells.tolist())), dtype=np.uint64)
    assert not shapely.intersects(part, C.hexagons(left_out)).any()  # the neighbours left out really miss it


def test_antimeridian_polygons_get_local_cells(tmp_path):
    df = gpd.read_file(shared("naturalearth_lowres") / "naturalearth_lowres.shp")
    fiji = df.loc[df.name == "Fiji"].geometry.iloc[0]
    cells = np.concatenate([large(p, 7) for p in shapely.get_parts(fiji)])
    lng, _ = C.centres(cells)
    assert len(cells) > 100 and (np.abs(lng) > 176).all()  # both sides of ±180 near Fiji, no band around the globe
    assert set(cells.tolist()) == set().union(*(h3py_cells(p, 7) for p in shapely.get_parts(fiji)))

    russia = shapely.get_parts(df.loc[df.name == "Russia"].geometry.iloc[0])
    chukotka = russia[np.argmin(shapely.bounds(russia)[:, 0])]  # the part west of -180
    assert set(large(chukotka, 5).tolist()) == h3py_cells(chukotka, 5)


def test_polygon_around_a_pole_is_filled_by_its_centres():
    df = gpd.read_file(shared("naturalearth_lowres") / "naturalearth_lowres.shp")
    antarctica = max(shapely.get_parts(df.loc[df.name == "Antarctica"].geometry.iloc[0]), key=lambda p: p.area)
    cells = large(antarctica, 3)
    lng, lat = C.centres(cells)
    assert shapely.contains_xy(antarctica, lng, lat).all() and lat.max() < -60
    world = C.children(np.array([h3.str_to_int(c) for c in h3.get_res0_cells()], np.uint64), 0, 3)
    wlng, wlat = C.centres(world)
    assert set(cells.tolist()) == set(world[shapely.contains_xy(antarctica, wlng, wlat)].tolist())  # brute force


def test_every_descendant_centre_lies_within_the_cap_the_fill_tests():
    """The coarse-to-fine fill decides a cell by a cap of REACH x the circumradius bound: every vertex must lie
    within the bound, and every descendant's centre well within the cap, on cells across two faces, around
    pentagons and at random, from h3-py's own boundaries and children."""
    rng = np.random.default_rng(5)
    for r in (1, 3, 6, 9):
        coarse = [h3.cell_to_parent(c, r) for c in h3.get_pentagons(r + 1)]
        coarse += list(rng.choice([c for c in h3.get_res0_cells() for c in h3.cell_to_children(c, 1)
                                   if len(h3.get_icosahedron_faces(c)) > 1], 6))
        coarse = [h3.cell_to_parent(c, r) if h3.get_resolution(c) > r else
                  h3.cell_to_center_child(c, r) for c in coarse]
        coarse += [h3.latlng_to_cell(np.degrees(np.arcsin(rng.uniform(-1, 1))), rng.uniform(-180, 180), r)
                   for _ in range(10)]
        bound = C.circumradius_bound(r)
        for c in set(coarse):
            centre = h3.cell_to_latlng(c)
            vertex = max(h3.great_circle_distance(centre, v, "rads") for v in h3.cell_to_boundary(c))
            assert vertex <= bound * (1 + 1e-9), c
            kids = h3.cell_to_children(c, r + 4)
            reach = max(h3.great_circle_distance(centre, h3.cell_to_latlng(k), "rads") for k in kids) / bound
            assert reach <= 1.05 < REACH["center"], (c, reach)


def test_edge_grid_finds_exactly_the_boxes_an_edge_touches():
    """Against GEOS on real polygons: a straight border on the bounding box (Sudan's 22° N), a multipolygon,
    holes, long diagonal edges among short ones; random boxes of every size and boxes whose sides lie on the
    polygon's bounds."""
    df = gpd.read_file(shared("naturalearth_lowres") / "naturalearth_lowres.shp")
    russia = df.loc[df.name == "Russia"].geometry.iloc[0]
    holed = shapely.Point(0, 0).buffer(10).difference(shapely.MultiPoint([(3, 3), (-4, 1)]).buffer(2))
    t = np.linspace(0, 2 * np.pi, 20_000, endpoint=False)
    wiggly = np.column_stack([np.cos(t) * (1 + 0.01 * np.sin(50 * t)), np.sin(t)])
    cut = shapely.Polygon(np.vstack([wiggly[:10_000], [[-0.9, -0.9], [0.9, -0.95]], wiggly[15_000:]]))
    grid = EdgeGrid(cut)  # two long diagonal edges among many short ones: listed along their path only
    assert len(grid.items) < 1.2 * len(grid.seg)
    rng = np.random.default_rng(9)
    for poly in (df.loc[df.name == "Sudan"].geometry.iloc[0], russia, holed, cut):
        xmin, ymin, xmax, ymax = poly.bounds
        n = 4000
        x, y = rng.uniform(xmin - 2, xmax + 2, n), rng.uniform(ymin - 2, ymax + 2, n)
        w, h = rng.exponential(0.3, n) * (xmax - xmin) / 20, rng.exponential(0.3, n) * (ymax - ymin) / 20
        x0, y0, x1, y1 = x - w, y - h, x + w, y + h
        y0[:200], y1[:200] = ymax, ymax + h[:200]  # sides on the bounds
        y0[200:400], y1[200:400] = ymin - h[200:400], ymin
        x0[400:600], x1[400:600] = xmax, xmax + w[400:600]
        x0[600:800], x1[600:800] = xmin - w[600:800], xmin
        expected = shapely.intersects(shapely.boundary(poly), shapely.box(x0, y0, x1, y1))
        got = EdgeGrid(poly).touched(x0, y0, x1, y1)
        assert 0.005 < expected.mean() < 0.95  # both answers occur
        assert (got == expected).all(), f"{(got != expected).sum()} boxes wrong"


def write_layer(tmp_path, geoms, crs=4326):
    src = tmp_path / "src.gpkg"
    gdf = gpd.GeoDataFrame({"name": [f"f{i}" for i in range(len(geoms))]}, geometry=list(geoms), crs=crs)
    gdf.to_file(src, layer="l")
    gp = tmp_path / "l.parquet"
    write_geoparquet(str(src), "l", gp, kind="polygon")
    return str(gp)


def read_hex(out) -> pd.DataFrame:
    return pq.read_table(out, partitioning=None).to_pandas()


def test_tiny_parts_are_never_lost(tmp_path):
    # "Manhattan" with islands of ~25 m² (a res-10 cell is ~15,000 m²), an island alone, and a tiny square
    mainland = shapely.box(-74.02, 40.70, -73.97, 40.75)
    islands = [shapely.box(-74.05 + i * 0.004, 40.69, -74.05 + i * 0.004 + 0.00005, 40.69005) for i in range(5)]
    gp = write_layer(tmp_path, [shapely.MultiPolygon([mainland, *islands]), islands[0],
                                shapely.box(-73.99, 40.72, -73.98995, 40.72005)])
    out = tmp_path / "hex"
    result = hex_layer(gp, out, HexSettings(10, (9, 8, 0)))
    assert result.passed, [(c.name, c.detail) for c in result.checks]
    hexed = read_hex(out)
    assert set(hexed._cng_fid) == {1, 2, 3}
    island_cells = {h3.str_to_int(h3.latlng_to_cell(p.y, p.x, 10)) for p in shapely.point_on_surface(islands)}
    assert island_cells <= set(hexed.loc[hexed._cng_fid == 1, "h10"])
    assert set(h3py_cells(mainland, 10)) | island_cells == set(hexed.loc[hexed._cng_fid == 1, "h10"])
    assert len(hexed.loc[hexed._cng_fid == 2]) == 1 and len(hexed.loc[hexed._cng_fid == 3]) == 1
    assert sum(c.representative_cells for c in result.chunks) == 7


def test_tiny_part_inside_another_parts_cell_adds_no_duplicate(tmp_path):
    cell = h3.latlng_to_cell(40.0, -105.0, 10)
    hexagon = shapely.Polygon([(x, y) for y, x in h3.cell_to_boundary(cell)])
    corner = shapely.Point(hexagon.exterior.coords[0]).buffer(0.0002)  # a notch at one corner
    notch_island = shapely.Point(hexagon.exterior.coords[0]).buffer(0.00003)  # inside the notch, outside the part
    feature = shapely.MultiPolygon([hexagon.difference(corner), notch_island.intersection(hexagon)])
    out = tmp_path / "hex"
    result = hex_layer(write_layer(tmp_path, [feature]), out, HexSettings(10, (9, 0)))
    assert result.passed
    assert read_hex(out).h10.tolist() == [h3.str_to_int(cell)]  # the island's cell is the main part's cell
    assert sum(c.representative_cells for c in result.chunks) == 0


def chunk_rows(chunk_dir) -> pd.DataFrame:
    """A chunk's (fid, cell) rows, read with pyarrow's own IPC reader; each file's record batches sorted by cell."""
    tables = [pa.ipc.open_file(f).read_all() for f in sorted(chunk_dir.glob("g=*.arrow"))]
    for t in tables:
        for batch in t.to_batches():
            cells = batch.column("cell").to_numpy()
            assert (cells[1:] >= cells[:-1]).all()
    return pa.concat_tables(tables).to_pandas() if tables else pd.DataFrame({"_cng_fid": [], "cell": []})


def test_giant_feature_split_across_chunks_gives_the_same_cells(tmp_path):
    t = np.linspace(0, 2 * np.pi, 2000, endpoint=False)
    blob = shapely.Polygon(np.column_stack([-105 + 1.2 * np.cos(t) * (1 + 0.05 * np.sin(17 * t)),
                                            40 + 0.9 * np.sin(t) * (1 + 0.05 * np.sin(17 * t))]))
    small = [shapely.box(-100 + i * 0.1, 40, -100 + i * 0.1 + 0.05, 40.05) for i in range(30)]
    gp = write_layer(tmp_path, [blob, *small])
    plan = plan_layer(gp, 8, max_chunks=6, target_cells=5_000)  # ~48k cells of work would want 10 chunks
    assert plan.column("chunk").to_numpy().max() == 5  # capped at 6
    split = plan.filter(plan.column("roots").is_valid())
    assert len(set(split.column("chunk").to_pylist())) > 1  # the blob spans several chunks
    assert plan_layer(gp, 8, max_chunks=6, target_cells=5_000).equals(plan)  # deterministic
    rows = []
    for k in range(6):
        run_chunk(gp, chunk_units(plan, k), HexSettings(8, (7, 0)), tmp_path / f"c{k}", plan_digest(plan))
        rows += [chunk_rows(tmp_path / f"c{k}")]
    cells = pd.concat(rows)
    blob_cells = cells.loc[cells._cng_fid == 1, "cell"]
    assert blob_cells.is_unique and set(blob_cells) == h3py_cells(blob, 8)
    with pytest.raises(ValueError, match="max_chunks must be 1..200"):
        plan_layer(gp, 8, max_chunks=201)


def test_pieces_of_a_part_index_only_nearby_edges_and_add_up_to_the_whole():
    """A split feature's pieces (groups of root cells) index only the edges near their roots; on real polygons,
    one across ±180 and one around the pole among them, the pieces are disjoint and add up to h3-py's cells."""
    df = gpd.read_file(shared("naturalearth_lowres") / "naturalearth_lowres.shp")
    by_name = {n: max(shapely.get_parts(g), key=lambda p: p.area) for n, g in zip(df.name, df.geometry)}
    russia = shapely.get_parts(df.loc[df.name == "Russia"].geometry.iloc[0])
    chukotka = russia[np.argmin(shapely.bounds(russia)[:, 0])]  # touches -180
    cases = [(by_name["Brazil"], 5, None), (by_name["Madagascar"], 6, None), (chukotka, 5, None),
             (by_name["Antarctica"], 3, "pole")]
    for part, res, what in cases:
        r0 = root_resolution(part, res)
        roots = cover(part, r0)
        whole = large(part, res)
        pieces = [large(part, res, roots=roots[i:i + max(1, len(roots) // 5)])
                  for i in range(0, len(roots), max(1, len(roots) // 5))]
        together = np.concatenate(pieces)
        assert len(together) == len(set(together.tolist())) and set(together.tolist()) == set(whole.tolist())
        if what is None:
            assert set(whole.tolist()) == h3py_cells(part, res)
        clip = _clip(roots[:max(1, len(roots) // 5)], r0, REACH["center"])
        if part is by_name["Brazil"]:  # a piece of a big country reads only part of its coast
            assert clip is not None and len(EdgeGrid(part, clip).seg) < 0.7 * len(EdgeGrid(part).seg)


def test_rerun_chunk_and_consolidation_are_idempotent(tmp_path):
    gp = write_layer(tmp_path, [shapely.box(-105, 40, -104.9, 40.1), shapely.box(10, 50, 10.1, 50.1)])
    settings = HexSettings(9, (8, 0))
    plan = plan_layer(gp, 9)
    results = []
    for _ in range(2):
        stats = run_chunk(gp, chunk_units(plan, 0), settings, tmp_path / "c0", plan_digest(plan))  # same folder again
        done = consolidate([tmp_path / "c0"], gp, tmp_path / f"out{len(results)}", settings, chunk_rows=stats.cells)
        assert done.passed, [(c.name, c.detail) for c in done.checks]
        results.append(done.rows_per_h0)
    assert results[0] == results[1]


def test_checks_catch_bad_chunks_and_bad_files(tmp_path):
    gp = write_layer(tmp_path, [shapely.box(-105, 40, -104.9, 40.1), shapely.box(10, 50, 10.1, 50.1)])
    settings = HexSettings(9, (8, 0))
    plan = plan_layer(gp, 9)
    good = run_chunk(gp, chunk_units(plan, 0), settings, tmp_path / "good", plan_digest(plan))
    # a broken chunk: feature 2's rows lost, one row twice, one id that is no cell
    rows = chunk_rows(tmp_path / "good")
    rows = rows[rows._cng_fid == 1]
    bad = pd.concat([rows, rows.head(1), rows.head(1).assign(cell=rows.cell.iloc[0] | np.uint64(7 << 3 * 6))])
    (tmp_path / "bad").mkdir()
    marker = json.loads((tmp_path / "good" / MARKER).read_text())
    name = next(iter(marker["files"]))
    runs.write(pa.Table.from_pandas(bad, preserve_index=False), tmp_path / "bad" / name)
    (tmp_path / "bad" / MARKER).write_text(json.dumps({**marker, "files": {name: len(bad)}}))
    done = consolidate([tmp_path / "bad"], gp, tmp_path / "out", settings, chunk_rows=good.cells)
    assert {c.name for c in done.checks if not c.passed} == {  # the bad id also has no parents
        "every_feature_has_cells", "no_duplicate_cells", "cell_ids_valid", "rows_match_chunks", "parents_consistent",
        "every_source_fid_in_files", "cells_match_feature_areas"}
    # a written file whose parent column was tampered with after consolidation
    assert consolidate([tmp_path / "good"], gp, tmp_path / "ok", settings, chunk_rows=good.cells).passed
    f = next((tmp_path / "ok").glob("h0=*/*.parquet"))
    table = pq.read_table(f).to_pandas()
    table.loc[0, "h8"] = table.loc[len(table) - 1, "h8"] ^ np.uint64(1 << 3 * 7)
    table.to_parquet(f)
    assert {c.name for c in read_back_checks(tmp_path / "ok", settings, good.cells) if not c.passed} == {
        "parents_consistent"}
    # a file holding h0 next to its folder's key (right values, but hive readers refuse the clash)
    assert consolidate([tmp_path / "good"], gp, tmp_path / "ok2", settings, chunk_rows=good.cells).passed
    f = next((tmp_path / "ok2").glob("h0=*/*.parquet"))
    table = pq.read_table(f)
    pq.write_table(table.append_column("h0", pa.array(C.parent(table.column("h9").to_numpy(), 0))), f)
    (check,) = [c for c in read_back_checks(tmp_path / "ok2", settings, good.cells) if not c.passed]
    assert check.name == "parents_consistent" and check.detail["files_with_an_h0_column"] == [f"{f.parent.name}/{f.name}"]


def test_fill_memory_stays_bounded_on_a_100_million_cell_polygon():
    """One ~1.5 million km² polygon (the size of Papahānaumokuākea) at res 10, in a fresh process."""
    script = """
import numpy as np, shapely
from cng_assets.transforms.hex.fill import large_fill
t = np.linspace(0, 2 * np.pi, 20000, endpoint=False)
r = 1 + 0.03 * np.sin(37 * t) + 0.01 * np.sin(301 * t)
poly = shapely.Polygon(np.column_stack([-170 + 7.4 * r * np.cos(t), 25 + 6.0 * r * np.sin(t)]))
n = sum(len(b) for b in large_fill(poly, 10, "center"))
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent (pytest) through fork and exec
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM")).split()[1]
print(n, int(hwm) // 1024)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.split()
    cells, peak_mib = int(out[0]), int(out[1])
    assert cells >= 100_000_000 and peak_mib < 1024


def test_source_columns_named_like_cell_columns(tmp_path):
    """A layer with its own `h10`, `H0`, `h8` once failed ("To use 'column_encoding' set 'use_dictionary' to
    False"): our GeoParquet renames them, and the hex renames them too in a GeoParquet made elsewhere."""
    square = shapely.box(-105.01, 40.0, -105.0, 40.01)
    frame = gpd.GeoDataFrame({"h10": ["a"], "H0": [7], "h8": [1.5]}, geometry=[square], crs=4326)
    src = tmp_path / "src.geojson"
    frame.to_file(src, driver="GeoJSON")
    ours, elsewhere = tmp_path / "ours.parquet", tmp_path / "elsewhere.parquet"
    write_geoparquet(str(src), "src", ours, kind="polygon")
    frame.assign(_cng_fid=[1]).to_parquet(elsewhere)
    for gp in (ours, elsewhere):
        out = tmp_path / f"hex-{gp.stem}"
        result = hex_layer(str(gp), out, HexSettings(10, (9, 8)))  # no h0 column: pandas reads the folders' h0
        assert result.passed, [(c.name, c.detail) for c in result.checks]
        hexed = pd.read_parquet(out)
        assert set(hexed.h10) == h3py_cells(square, 10)
        assert hexed[["src_h10", "src_H0", "src_h8"]].drop_duplicates().values.tolist() == [["a", 7, 1.5]]


def test_cli_hex_writes_h0_partitions_with_attributes(tmp_path):
    gp = tmp_path / "w.parquet"
    write_geoparquet(str(shared("coutwildrnp") / "coutwildrnp.shp"), "coutwildrnp", gp, kind="polygon")
    out = tmp_path / "hex"
    result = CliRunner().invoke(main, ["hex", str(gp), str(out), "--resolution", "8", "--parents", "7,0"])
    assert result.exit_code == 0, result.output
    files = sorted(out.glob("h0=*/*.parquet"))
    assert files and all(f.parent.name == f"h0={C.parent(pq.read_table(f).column('h8').to_numpy()[:1], 0)[0]}"
                         for f in files)
    t = pq.read_table(files[0])
    assert t.schema.field("h8").type == "uint64" and {"_cng_fid", "h8", "h7", "NAME"} <= set(t.column_names)
    assert "h0" not in t.column_names  # the folder name holds it: a hive reader adds it
    assert pq.read_table(out).num_rows == sum(pq.read_metadata(f).num_rows for f in files)
    assert t.column("h8").to_pylist() == sorted(t.column("h8").to_pylist())
    again = CliRunner().invoke(main, ["hex", str(gp), str(out), "--resolution", "8", "--parents", "9"])
    assert again.exit_code == 2 and "coarser than resolution 8" in again.output and files == sorted(out.glob("h0=*/*.parquet"))


def test_chunk_killed_mid_write_leaves_no_visible_output(tmp_path):
    script = f"""
import os, signal
from cng_assets.storage import LocalStorage
with LocalStorage(root={str(tmp_path)!r}).publish_dir("b", "ds/hex/_chunks/l/chunk=000") as d:
    (d / "h0=1").mkdir()
    (d / "h0=1" / "part.parquet").write_bytes(b"PAR1 half")
    os.kill(os.getpid(), signal.SIGKILL)
"""
    assert subprocess.run([sys.executable, "-c", script]).returncode < 0
    assert not (tmp_path / "b" / "ds").exists()
    assert json.dumps(sorted(p.name for p in tmp_path.iterdir())) == '[".staging"]'


def test_split_pieces_are_estimated_by_their_real_cells(tmp_path):
    world = gpd.read_file(shared("naturalearth_lowres") / "naturalearth_lowres.shp")
    country = max(shapely.get_parts(world.geometry.values), key=lambda p: p.area)  # the largest part, in square degrees
    gp = write_layer(tmp_path, [country])
    plan = plan_layer(gp, 6, target_cells=50_000)
    pieces = plan.filter(plan.column("roots").is_valid()).to_pylist()
    assert len(pieces) > 5
    for piece in pieces:
        actual = len(large(country, 6, roots=np.array(piece["roots"], np.uint64)))
        assert max(actual, 1) / 1.5 <= max(piece["est_cells"], 1) <= 1.5 * max(actual, 1)


def test_chunks_are_contiguous_runs_with_the_lightest_heaviest():
    work = np.array([1.0, 1, 1, 1.5, 4, 4, 0.5])  # cutting at each quarter of the total would put 1.5 + 4 together
    groups = _partition(work, 4)
    assert groups.tolist() == sorted(groups.tolist()) and groups.max() < 4
    assert np.bincount(groups, work).max() == 4.5
    assert _partition(np.zeros(3), 2).tolist() == [0, 0, 0] and len(_partition(np.zeros(0), 2)) == 0


def test_consolidation_units_in_parallel_write_what_one_worker_writes(tmp_path, monkeypatch):
    """Several units (TARGET_ROWS made small) written by 3 threads: the same files, rows and checks as 1 thread;
    a GeoParquet made elsewhere with sparse `_cng_fid`s gets its attributes by binary search, not a lookup table."""
    from cng_assets.transforms.hex import consolidate as CO

    blobs = [shapely.Point(-120 + 3 * i, 40).buffer(0.1) for i in range(8)]  # each in its own group cell
    gp = write_layer(tmp_path, blobs)
    sparse = pq.read_table(gp)
    sparse = sparse.set_column(0, "_cng_fid", pa.array([7 * 10**i for i in range(8)], pa.int64()))
    pq.write_table(sparse, tmp_path / "sparse.parquet")
    settings = HexSettings(9, (8, 0))
    monkeypatch.setattr(CO, "TARGET_ROWS", 2000)
    for layer in (gp, str(tmp_path / "sparse.parquet")):
        plan = plan_layer(layer, 9)
        stats = run_chunk(layer, chunk_units(plan, 0), settings, tmp_path / "c", plan_digest(plan))
        assert len(CO._units([tmp_path / "c"])) > 4
        outs = []
        for workers in (1, 3):
            out = tmp_path / f"out{workers}"
            done = consolidate([tmp_path / "c"], layer, out, settings, chunk_rows=stats.cells, workers=workers)
            assert done.passed, [(c.name, c.detail) for c in done.checks]
            outs.append(sorted(p.relative_to(out).as_posix() for p in out.rglob("*.parquet")))
        assert outs[0] == outs[1]
        meta = pq.ParquetFile(next((tmp_path / "out3").rglob("*.parquet"))).metadata
        stats = {meta.schema.column(i).name: meta.row_group(0).column(i).statistics for i in range(meta.num_columns)}
        assert all(stats[c].has_min_max for c in ("_cng_fid", "h9", "h8"))  # readers prune row groups by these
        one, three = (pd.read_parquet(tmp_path / f"out{w}").sort_values(["h8", "_cng_fid"]).reset_index(drop=True)
                      for w in (1, 3))
        pd.testing.assert_frame_equal(one, three)
        source = pq.read_table(layer)
        names = dict(zip(source.column("_cng_fid").to_pylist(), source.column("name").to_pylist()))
        assert (one["name"].astype(str) == one["_cng_fid"].map(names)).all() and one["_cng_fid"].nunique() == 8
        for d in ("c", "out1", "out3"):
            shutil.rmtree(tmp_path / d)


class _CountingFile(io.FileIO):
    """A file that counts the bytes read from it (what a range-reading S3 file would fetch)."""

    def __init__(self, path):
        super().__init__(path, "rb")
        self.bytes_read = 0

    def read(self, n=-1):
        data = super().read(n)
        self.bytes_read += len(data)
        return data

    def readinto(self, b):
        n = super().readinto(b)
        self.bytes_read += n or 0
        return n


def test_chunk_reads_only_the_row_groups_its_units_need(tmp_path):
    """The hex_chunk asset opens the GeoParquet (on S3: range reads) instead of downloading it: a chunk holding one
    feature of fifty, one per row group, reads a small part of the file and makes the cells it makes from a path."""
    gp = write_layer(tmp_path, [shapely.Point(-105 + i * 0.2, 40).buffer(0.02, quad_segs=500) for i in range(50)])
    table = pq.read_table(gp)
    one_per_group = tmp_path / "groups.parquet"
    pq.write_table(table, one_per_group, row_group_size=1)
    assert pq.ParquetFile(one_per_group).metadata.num_row_groups == 50
    plan = plan_layer(str(one_per_group), 10)
    units = plan.slice(17, 1)
    settings = HexSettings(10, (9, 0))
    with _CountingFile(one_per_group) as f:
        opened = run_chunk(pa.PythonFile(f), units, settings, tmp_path / "opened", plan_digest(plan))
        read = f.bytes_read
    by_path = run_chunk(str(one_per_group), units, settings, tmp_path / "path", plan_digest(plan))
    assert opened.cells == by_path.cells > 0
    assert chunk_rows(tmp_path / "opened").equals(chunk_rows(tmp_path / "path"))
    assert read < one_per_group.stat().st_size / 4, (read, one_per_group.stat().st_size)


def test_sort_pairs_matches_lexsort_and_falls_back_for_ids_it_cannot_pack():
    rng = np.random.default_rng(3)
    for res in (0, 5, 10, 15):
        cells = np.array([h3.str_to_int(h3.latlng_to_cell(float(a), float(b), res))
                          for a, b in rng.uniform(-80, 80, (400, 2))], np.uint64)
        fids = rng.integers(0, 40 if res == 15 else 10**6, len(cells))  # 12 bits of fid fit beside a res-15 cell
        order = np.lexsort((fids, cells))
        got = C.sort_pairs(fids, cells, res)
        assert (got[0] == fids[order]).all() and (got[1] == cells[order]).all()
        again = C.sort_pairs(*got, res)  # already in order: returned as they are
        assert (again[0] == got[0]).all() and (again[1] == got[1]).all()
        bad = cells.copy()
        bad[7] ^= np.uint64(1 << 60)  # another mode: not packable, so lexsort keeps the id as it is
        order = np.lexsort((fids, bad))
        assert (C.sort_pairs(fids, bad, res)[1] == bad[order]).all()
        assert C.valid_at(cells, res).all() and not C.valid_at(bad, res)[7] and C.valid_at(bad, res).sum() == 399


def test_usable_cpus_follow_the_cgroup_quota(tmp_path):
    import os

    from cng_assets.transforms.cpus import usable_cpus

    mask = len(os.sched_getaffinity(0))
    quota = tmp_path / "cpu.max"
    quota.write_text("max 100000\n")
    assert usable_cpus(cap=64, cpu_max=quota) == mask
    quota.write_text("150000 100000\n")  # a pod limit of 1.5 CPUs
    assert usable_cpus(cap=64, cpu_max=quota) == min(2, mask)
    quota.write_text("50000 100000\n")
    assert usable_cpus(cap=64, cpu_max=quota) == 1
    assert usable_cpus(cap=1, cpu_max=tmp_path / "absent") == 1


def test_a_chunk_from_another_plan_or_engine_version_is_not_consolidated(tmp_path):
    from cng_assets.transforms.hex.chunk import read_marker

    gp = write_layer(tmp_path, [shapely.box(-105, 40, -104.9, 40.1)])
    plan = plan_layer(gp, 9)
    run_chunk(gp, chunk_units(plan, 0), HexSettings(9, (8, 0)), tmp_path / "c", plan_digest(plan))
    assert read_marker(tmp_path / "c", plan_digest(plan))["cells"] > 0
    assert read_marker(tmp_path / "c", "another plan") is None and read_marker(tmp_path / "absent", "x") is None
    old = json.loads((tmp_path / "c" / MARKER).read_text())
    old.pop("version")  # as chunk VERSION 1 wrote it, beside Parquet files consolidation no longer reads
    (tmp_path / "c" / MARKER).write_text(json.dumps(old))
    assert read_marker(tmp_path / "c", plan_digest(plan)) is None


def test_the_image_precompile_step_caches_every_compiled_fill(tmp_path):
    """What the Dockerfile runs: afterwards the cache holds both compiled modules, and a fresh process filling
    a polygon finds everything it needs there (numba's index files are not rewritten)."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    subprocess.run([sys.executable, "-m", "cng_assets.transforms.hex.precompile"], env=env, check=True, timeout=600)
    index = sorted(tmp_path.rglob("*.nbi"))
    assert {p.name.split(".")[0] for p in index} >= {"lattice", "edges"}
    before = {p: p.stat().st_mtime_ns for p in index}
    subprocess.run([sys.executable, "-m", "cng_assets.transforms.hex.precompile"], env=env, check=True, timeout=600)
    assert {p: p.stat().st_mtime_ns for p in sorted(tmp_path.rglob("*.nbi"))} == before


@pytest.mark.parametrize("containment", ["center", "overlap"])
def test_source_checks_catch_a_lost_feature_and_halved_cells(tmp_path, containment):
    # a box of ~450 res-7 cells, a diagonal strip (~300 cells), one far south, and a feature smaller than a cell
    geoms = [shapely.box(-105, 40, -104.5, 40.5),
             shapely.Polygon([(10, 50), (11, 51), (11.2, 51), (10.2, 50)]),
             shapely.box(140, -35, 140.4, -34.7), shapely.box(-90, 30, -89.999, 30.001)]
    gp = write_layer(tmp_path, geoms)
    settings = HexSettings(7, (6, 0), containment)
    result = hex_layer(gp, tmp_path / "hex", settings)
    assert result.passed, [(c.name, c.detail) for c in result.checks]
    checks = {c.name: c.detail for c in result.checks}
    assert checks["every_source_fid_in_files"]["features_in_files"] == 4
    assert checks["cells_match_feature_areas"]["features_tested"] == 3  # the tiny one need only be present
    ratio = checks["cells_match_feature_areas"]["worst_cells_to_area_ratio"]
    assert 0.9 < ratio < 1.1 if containment == "center" else 1 <= ratio < 1.6
    files = sorted((tmp_path / "hex").glob("h0=*/*.parquet"))

    def tamper(keep) -> dict:  # rewrite every file with the rows `keep` selects, then check against the source
        out = tmp_path / "bad"
        shutil.rmtree(out, ignore_errors=True)
        for f in files:
            t = pq.read_table(f)
            (out / f.parent.name).mkdir(parents=True, exist_ok=True)
            pq.write_table(t.filter(keep(t.to_pandas())), out / f.parent.name / f.name)
        return {c.name: c for c in hex_check.source_checks(gp, out, settings)}

    lost = tamper(lambda df: pa.array(df._cng_fid != 4))
    assert not lost["every_source_fid_in_files"].passed and lost["every_source_fid_in_files"].detail["first_absent"] == [4]
    halved = tamper(lambda df: pa.array((df._cng_fid != 1) | (np.arange(len(df)) % 2 == 0)))
    assert halved["every_source_fid_in_files"].passed and not halved["cells_match_feature_areas"].passed
    assert [d["fid"] for d in halved["cells_match_feature_areas"].detail["first_outside"]] == [1]
