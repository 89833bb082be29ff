"""H3 hex fill: this project's engine end to end against the h3ronpy kernel alone and the old tool's h3-py path.

Run from the project root (no network; about 5-6 minutes on 2 cores, the first run also makes the inputs):

    .venv/bin/python bench/hex.py                 # 50,000 synthetic parcels, real samples, the giant polygon
    .venv/bin/python bench/hex.py --quick         # 5,000 parcels, no giant polygon, short old-path sample
    .venv/bin/python bench/hex.py --parcels 20000 --repeat 3

Inputs (GeoParquet made once by `write_geoparquet`, cached under bench/out/hex/): synthetic PAD-US-like parcels
(areas log-uniform 0.001-100 km², fixed seed) at res 10; naturalearth_lowres at res 7 and coutwildrnp at res 10
(../shared/data); one giant ellipse-like polygon near (-170, 25) with a 20k-vertex wiggly boundary and over 100
million res-10 cells. Paths, each run in its own spawned process (so each peak RSS belongs to one path only):

  engine  `hex_layer`: GeoParquet -> plan, fill, `h0=<cell>/part-*.parquet` sorted with attributes, checks
  kernel  h3ronpy `wkb_to_cells` (centroid containment) on every polygon part: cells in memory only
  old     the old tool re-created with h3-py: per polygon `polygon_to_cells` (string ids), per cell
          `cell_to_parent` for each parent resolution, one pyarrow table written to Parquet

Every child runs with RAYON_NUM_THREADS=1. The default is one run per path and input (--repeat N: best of N).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import shutil
import subprocess
import sys
import time
import traceback
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

# Only the standard library at module level: spawned children re-import this file, and heavy imports here
# would count towards every path's RSS.
ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out" / "hex"
SHARED = ROOT.parent / "shared" / "data"
INPUT_VERSION = 1  # bump when an input generator changes: cached inputs are keyed by it
FID = "_cng_fid"
GIB = 1024
sys.path.insert(0, str(ROOT))  # spawned children inherit sys.path; also makes `bench.geoparquet` importable


def _peak_rss_mib() -> float:
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent through fork+exec.
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024


def _cpu_seconds() -> float:
    """User + system CPU time of this process, every thread included (DuckDB, Arrow, rayon)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _single_thread_kernel() -> None:
    # rayon sizes its pool once, on first use: this must run before h3ronpy does anything.
    os.environ["RAYON_NUM_THREADS"] = "1"


def run_engine(geoparquet: str, res: int, parents: tuple[int, ...], out_dir: str) -> dict:
    _single_thread_kernel()
    from cng_assets.transforms.hex.fill import HexSettings
    from cng_assets.transforms.hex.layer import hex_layer

    shutil.rmtree(out_dir, ignore_errors=True)
    baseline = _peak_rss_mib()
    t0, c0 = time.perf_counter(), _cpu_seconds()
    result = hex_layer(geoparquet, out_dir, HexSettings(res, parents, "center"), attributes="all")
    wall, cpu = time.perf_counter() - t0, _cpu_seconds() - c0
    peak = _peak_rss_mib()

    import duckdb  # after the peak is taken: per-feature counts only serve the comparison between paths

    per_fid = dict(duckdb.sql(f"SELECT {FID}, count(*) FROM read_parquet('{out_dir}/h0=*/*.parquet') "
                              "GROUP BY 1").fetchall())
    return {"cells": sum(result.rows_per_h0.values()), "seconds": wall, "cpu": cpu, "peak_mib": peak,
            "baseline_mib": baseline, "chunks": len(result.chunks),
            "fill_seconds": sum(c.seconds for c in result.chunks),
            "representative": sum(c.representative_cells for c in result.chunks),
            "checks": [(c.name, c.passed, c.detail) for c in result.checks], "per_fid": per_fid}


def run_kernel(geoparquet: str, res: int) -> dict:
    _single_thread_kernel()
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    import shapely
    from h3ronpy.vector import ContainmentMode, wkb_to_cells

    table = pq.read_table(geoparquet, columns=[FID, "geometry"])
    parts, index = shapely.get_parts(shapely.from_wkb(table.column("geometry").to_numpy(zero_copy_only=False)),
                                     return_index=True)
    wkb = pa.array(shapely.to_wkb(parts))
    baseline = _peak_rss_mib()
    t0, c0 = time.perf_counter(), _cpu_seconds()
    # flatten=False (lists per part) only so cells can be counted per feature; flatten=True timed the same.
    lists = pa.array(wkb_to_cells(wkb, res, containment_mode=ContainmentMode.ContainsCentroid, flatten=False))
    cells = len(lists.flatten())
    wall, cpu = time.perf_counter() - t0, _cpu_seconds() - c0
    peak = _peak_rss_mib()
    counts = np.bincount(index, lists.value_lengths().fill_null(0).to_numpy(zero_copy_only=False),
                         minlength=table.num_rows).astype(np.int64)
    fids = table.column(FID).to_numpy()
    return {"cells": cells, "seconds": wall, "cpu": cpu, "peak_mib": peak, "baseline_mib": baseline,
            "per_fid": dict(zip(fids.tolist(), counts.tolist())),
            "parts_per_fid": dict(zip(fids.tolist(), np.bincount(index, minlength=table.num_rows).tolist()))}


def run_old(geoparquet: str, res: int, parents: tuple[int, ...], out: str, budget: float, seed: int) -> dict:
    """The old tool's path on features in a seeded random order, stopping once `budget` seconds have passed."""
    import h3
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    import shapely

    baseline = _peak_rss_mib()
    t0, c0 = time.perf_counter(), _cpu_seconds()
    table = pq.read_table(geoparquet, columns=[FID, "geometry"])
    geoms = shapely.from_wkb(table.column("geometry").to_numpy(zero_copy_only=False))
    fids = table.column(FID).to_pylist()
    out_fid, out_cell, out_parents = [], [], {p: [] for p in parents}
    per_fid = {}
    for i in np.random.default_rng(seed).permutation(len(geoms)):  # random order: the sample spans all sizes
        before = len(out_cell)
        for part in shapely.get_parts(geoms[i]):
            ring = [(y, x) for x, y in part.exterior.coords[:-1]]
            holes = [[(y, x) for x, y in r.coords[:-1]] for r in part.interiors]
            cells = h3.polygon_to_cells(h3.LatLngPoly(ring, *holes), res)
            out_cell.extend(cells)
            for p in parents:
                out_parents[p].extend(h3.cell_to_parent(c, p) for c in cells)
        out_fid.extend([fids[i]] * (len(out_cell) - before))
        per_fid[fids[i]] = len(out_cell) - before
        if time.perf_counter() - t0 > budget:
            break
    pq.write_table(pa.table({FID: out_fid, f"h{res}": out_cell, **{f"h{p}": v for p, v in out_parents.items()}}),
                   out)
    wall, cpu = time.perf_counter() - t0, _cpu_seconds() - c0
    return {"cells": len(out_cell), "seconds": wall, "cpu": cpu, "peak_mib": _peak_rss_mib(),
            "baseline_mib": baseline, "features_done": len(per_fid), "features": len(geoms),
            "sample": len(per_fid) < len(geoms), "per_fid": per_fid}


def in_child(fn, *args) -> dict:
    """One fresh spawned process per call; a crash or OOM kill becomes {"error": ...} instead of ending the run."""
    try:
        with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
            return pool.submit(fn, *args).result()
    except Exception as e:  # noqa: BLE001 - reported in the table, the other paths still run
        return {"error": f"{type(e).__name__}: {e}".strip(), "traceback": traceback.format_exc(limit=3)}


# ---------------------------------------------------------------------------------------------------- inputs


def make_giant(vertices: int = 20_000) -> tuple[str, str]:
    """One polygon of ~1.5 million km² near (-170, 25), like the Papahānaumokuākea marine monument: an ellipse
    with 7.5° x 6.1° semi-axes and a wiggly boundary of `vertices` vertices, as a GPKG in EPSG:4326."""
    import geopandas as gpd
    import numpy as np
    import pyogrio
    import shapely

    name = "giant" if vertices == 20_000 else f"giant{vertices}"
    path, layer = OUT / f"{name}_v{INPUT_VERSION}.gpkg", "giant"
    if not path.exists():
        OUT.mkdir(parents=True, exist_ok=True)
        theta = np.linspace(0, 2 * np.pi, vertices, endpoint=False)
        r = 1 + 0.015 * np.sin(37 * theta) + 0.006 * np.sin(311 * theta + 1.0)  # stays star-shaped, so simple
        ring = np.column_stack([-170 + 7.5 * r * np.cos(theta), 25 + 6.1 * r * np.sin(theta)])
        df = gpd.GeoDataFrame({"Unit_Nm": ["Giant marine monument (synthetic)"], "Des_Tp": ["MNM"]},
                              geometry=[shapely.Polygon(ring)], crs="EPSG:4326")
        partial = path.with_name(path.stem + "_partial.gpkg")
        pyogrio.write_dataframe(df, partial, layer=layer, driver="GPKG")
        os.replace(partial, path)
    return str(path), layer


def to_geoparquet(name: str, src: str, layer: str) -> str:
    from cng_assets.transforms.geoparquet import write_geoparquet

    out = OUT / f"{name}_v{INPUT_VERSION}.parquet"
    if not out.exists():
        t0 = time.perf_counter()
        OUT.mkdir(parents=True, exist_ok=True)  # chunk_balance.py may be the first bench on a fresh clone
        partial = out.with_name(out.stem + "_partial.parquet")
        stats = write_geoparquet(src, layer, str(partial), kind="polygon")
        os.replace(partial, out)
        print(f"  {name}: GeoParquet with {stats.rows_written:,} rows (dropped {stats.dropped:,}) in "
              f"{time.perf_counter() - t0:.1f}s")
    return str(out)


def inputs(args) -> list[dict]:
    from bench.geoparquet import make_synthetic

    res10 = (10, (9, 8, 0))
    src, layer, _ = make_synthetic(args.parcels, args.seed)
    cases = [{"name": "parcels", "kind": "parcels", "src": src, "layer": layer, "res": res10}]
    if SHARED.is_dir():
        cases += [{"name": "naturalearth", "kind": "large", "src": str(SHARED / "naturalearth_lowres" /
                   "naturalearth_lowres.shp"), "layer": "naturalearth_lowres", "res": (7, (6, 5, 0))},
                  {"name": "coutwildrnp", "kind": "large", "src": str(SHARED / "coutwildrnp" / "coutwildrnp.shp"),
                   "layer": "coutwildrnp", "res": res10}]
    else:
        print(f"  skipping the real samples: {SHARED} is absent")
    if not args.quick:
        cases.append({"name": "giant", "kind": "large", **dict(zip(("src", "layer"), make_giant())), "res": res10})
    for c in cases:
        stem = f"parcels_n{args.parcels}_s{args.seed}" if c["name"] == "parcels" else c["name"]
        c["geoparquet"] = to_geoparquet(stem, c["src"], c["layer"])
    return cases


# ---------------------------------------------------------------------------------------------------- running


def best(runs: list[dict]) -> dict:
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return runs[-1]
    return {**ok[-1], "seconds": min(r["seconds"] for r in ok), "cpu": min(r["cpu"] for r in ok),
            "peak_mib": max(r["peak_mib"] for r in ok)}


def mem_available_mib() -> float:
    with open("/proc/meminfo") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("MemAvailable:")) / 1024


def bench(case: dict, args) -> dict:
    import pyarrow.parquet as pq

    name, gp = case["name"], case["geoparquet"]
    res, parents = case["res"]
    features = pq.ParquetFile(gp).metadata.num_rows
    runs = {"engine": [], "kernel": [], "old": []}
    skipped = {}
    for _ in range(args.repeat):  # interleaved, so drift (page cache, CPU clock) hits every path alike
        runs["engine"].append(in_child(run_engine, gp, res, parents, str(OUT / f"{name}.engine")))
        cells = runs["engine"][-1].get("cells")
        # measured: ~17 bytes per cell at the kernel's peak; 32 leaves room for the interpreter and inputs
        if cells and cells * 32 / 2**20 > 0.8 * mem_available_mib():
            skipped["kernel"] = (f"needs ~{cells * 32 / 2**30:.0f} GiB for {cells:,} cells, more than this "
                                 f"machine has available ({mem_available_mib() / GIB:.0f} GiB)")
        else:
            runs["kernel"].append(in_child(run_kernel, gp, res))
        if name == "giant":
            skipped["old"] = (f"one polygon of ~{(cells or 1e8) / 1e6:.0f}M cells cannot be sampled, and the old "
                              f"path would hold every cell and parent as a Python string (~{(cells or 1e8) * 4 * 70 / 2**30:.0f} GiB)")
        else:
            runs["old"].append(in_child(run_old, gp, res, parents, str(OUT / f"{name}.old.parquet"),
                                        args.old_budget, args.seed))
    out = {"name": name, "kind": case["kind"], "geoparquet": gp, "features": features, "res": res, "parents": parents,
           "skipped": skipped, **{p: best(r) for p, r in runs.items() if r}}
    print(f"  {name}: " + ", ".join(f"{p} " + (f"{out[p]['seconds']:.1f}s" if "error" not in out[p] else "FAILED")
                                    for p in runs if p in out))
    return out


# ---------------------------------------------------------------------------------------------------- report


def rate(r: dict | None) -> float | None:
    return r["cells"] / r["cpu"] if r and "error" not in r and r["cpu"] > 0 else None


def human(x: float | None) -> str:
    if x is None:
        return "-"
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if x >= div:
            return f"{x / div:.2f}{suffix}"
    return f"{x:.0f}"


def without_cells(r: dict) -> int:
    return sum(1 for n in r["per_fid"].values() if n == 0)


def report(results: list[dict]) -> None:
    head = ["input", "features", "res", "cells",
            "eng s", "eng c/s/core", "eng MiB", "krn s", "krn c/s/core", "krn MiB",
            "old s", "old c/s/core", "old MiB", "eng/krn", "eng/old"]
    rows = []
    for r in results:
        row = [r["name"], f"{r['features']:,}", str(r["res"])]
        e = r.get("engine")
        cells = e["cells"] if e and "error" not in e else (r.get("kernel") or {}).get("cells")
        row.append(f"{cells:,}" if cells else "-")
        for p in ("engine", "kernel", "old"):
            x = r.get(p)
            if x is None:
                row += ["skip", "skip", "skip"]
            elif "error" in x:
                row += ["FAIL", "FAIL", "FAIL"]
            else:
                star = "*" if x.get("sample") else ""
                row += [f"{x['seconds']:.1f}{star}", human(rate(x)) + star, f"{x['peak_mib']:.0f}{star}"]
        for p in ("kernel", "old"):
            a, b = rate(r.get("engine")), rate(r.get(p))
            row.append(f"{a / b:.2f}x" if a and b else "-")
        rows.append(row)
    widths = [max(len(x) for x in col) for col in zip(head, *rows)]
    print()
    for line in [head, ["-" * w for w in widths], *rows]:
        print("  ".join(x.ljust(w) if i == 0 else x.rjust(w) for i, (x, w) in enumerate(zip(line, widths))))

    print("\neng = engine end to end (GeoParquet -> sorted h0 partitions with attributes, checks included); "
          "krn = h3ronpy kernel alone (cells in memory); old = the old tool's h3-py path (string ids, parents, write).")
    print("cells = the engine's output rows. s = wall seconds of the measured call (best of the repeats). "
          "c/s/core = cells per CPU-second: cells / (user + sys CPU time of the child process over the call, "
          "all threads summed: DuckDB's 2, Arrow's, rayon pinned to 1 by RAYON_NUM_THREADS=1), i.e. the rate "
          "one core sustains. MiB = peak RSS (VmHWM) of the child, interpreter and imports included.")
    print("eng/krn, eng/old = ratio of c/s/core: > 1 means the engine does more cells per CPU-second.")
    print("* old path on a sample: features in a seeded random order until the time budget ran out; its rate is "
          "cells done / CPU time for the sample (its read and write included), its s and MiB are the sample's.")

    print("\nPer input:")
    for r in results:
        print(f"  {r['name']} (res {r['res']}, parents {','.join(map(str, r['parents']))}):")
        e, k, o = r.get("engine"), r.get("kernel"), r.get("old")
        for p in ("engine", "kernel", "old"):
            x = r.get(p)
            if x and "error" in x:
                print(f"    {p} FAILED: {x['error']}\n      " + x["traceback"].strip().replace("\n", "\n      "))
        for p, why in r["skipped"].items():
            print(f"    {p} skipped: {why}")
        if e and "error" not in e:
            rest = e["seconds"] - e["fill_seconds"]
            failed = [f"{n} {d}" for n, ok, d in e["checks"] if not ok]
            print(f"    engine: {e['chunks']} chunk(s); fill {e['fill_seconds']:.1f}s, plan + consolidate + checks "
                  f"{rest:.1f}s; CPU {e['cpu']:.1f}s; wall rate {human(e['cells'] / e['seconds'])} cells/s; "
                  f"{e['representative']:,} representative cells (parts with no cell centre inside); "
                  f"RSS after imports {e['baseline_mib']:.0f} MiB")
            print("    engine checks: " + ("all passed (" + ", ".join(n for n, _, _ in e["checks"]) + ")"
                                          if not failed else "FAILED: " + "; ".join(failed)))
        if k and "error" not in k:
            print(f"    kernel: CPU {k['cpu']:.1f}s; wall rate {human(k['cells'] / k['seconds'])} cells/s; "
                  f"{without_cells(k):,} features without cells; RSS after imports and input {k['baseline_mib']:.0f} MiB")
        if o and "error" not in o:
            what = (f"sample of {o['features_done']:,} of {o['features']:,} features" if o["sample"]
                    else f"all {o['features']:,} features")
            line = (f"    old: {what}, {o['cells']:,} cells; CPU {o['cpu']:.1f}s; wall rate "
                    f"{human(o['cells'] / o['seconds'])} cells/s; {without_cells(o):,} features without cells")
            if o["sample"] and e and "error" not in e and rate(o):
                full = e["cells"] / rate(o)
                grown = o["baseline_mib"] + (o["peak_mib"] - o["baseline_mib"]) * e["cells"] / max(o["cells"], 1)
                line += (f"; extrapolated to all {e['cells']:,} cells: ~{full:.0f} CPU-s and ~{grown / GIB:.1f} GiB "
                         "(RSS grows with the cells it holds)")
            print(line)
        compare(r)


def labels(geoparquet: str) -> dict[int, str]:
    """A readable name per fid: the first string column whose name contains "name", else the first string one."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pq.read_schema(geoparquet)
    text = [f.name for f in schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)]
    col = next((c for c in text if "name" in c.lower()), text[0] if text else None)
    if col is None:
        return {}
    t = pq.read_table(geoparquet, columns=[FID, col])
    return dict(zip(t.column(FID).to_pylist(), t.column(col).to_pylist()))


def compare(r: dict) -> None:
    """Cell counts per feature: engine vs kernel (the same centre rule, plus the engine's representative cells)
    and old vs kernel on the features the old path did."""
    e, k, o = (r.get(p) if r.get(p) and "error" not in r[p] else None for p in ("engine", "kernel", "old"))
    names = labels(r["geoparquet"])
    if e and k:
        diff = {f: e["per_fid"].get(f, 0) - n for f, n in k["per_fid"].items()}
        # a representative cell is added per part with no cell centre inside: at most one per part
        odd = {f: d for f, d in diff.items() if not 0 <= d <= k["parts_per_fid"][f]}
        print(f"    cells engine - kernel: {e['cells'] - k['cells']:+,} ({e['representative']:,} representative)"
              + (f"; {len(odd)} feature(s) differ by more than representatives explain: " + ", ".join(
                  f"fid {f} ({names.get(f)}) engine {e['per_fid'].get(f, 0):,} kernel {k['per_fid'][f]:,}"
                  for f, _ in sorted(odd.items(), key=lambda x: -abs(x[1]))[:5]) if odd else ""))
    if o and k:
        odd = {f: n for f, n in o["per_fid"].items() if n != k["per_fid"].get(f)}
        print(f"    cells old - kernel on the old path's {o['features_done']:,} features: "
              + (f"{len(odd)} feature(s) differ: " + ", ".join(f"fid {f} ({names.get(f)}) old {n:,} kernel {k['per_fid'].get(f, 0):,}"
                                                       for f, n in list(odd.items())[:5]) if odd else "identical"))


KERNEL_TARGETS = {"parcels": 1.0, "naturalearth": 3.0, "coutwildrnp": 3.0, "giant": 6.0}  # engine ÷ kernel


def targets(results: list[dict]) -> None:
    def ok(flag: bool) -> str:
        return "met    " if flag else "NOT met"

    def ratio(r: dict, p: str) -> float | None:
        a, b = rate(r.get("engine")), rate(r.get(p))
        return a / b if a and b else None

    print("\nTargets (per-core rates; engine end to end; issue 13):")
    for r in results:
        want = KERNEL_TARGETS[r["name"]]
        x = ratio(r, "kernel")
        print(f"  [{ok(x is not None and x >= want) if x is not None else 'n/a    '}] engine >= {want:g}x kernel on "
              f"{r['name']}: " + (f"{x:.2f}x ({human(rate(r['engine']))} vs {human(rate(r['kernel']))} cells/s/core)"
                                  if x is not None else "not measured"))
    for r in results:
        x = ratio(r, "old")
        if x is not None:
            src = " (old rate from a sample)" if r["old"].get("sample") else ""
            print(f"  [{ok(x >= 5)}] engine >= 5x old on {r['name']}: {x:.2f}x ({human(rate(r['engine']))} vs "
                  f"{human(rate(r['old']))} cells/s/core){src}")
        else:
            print(f"  [n/a    ] engine >= 5x old on {r['name']}: old path not measured")
    for r in results:
        e = r.get("engine")
        if e and "error" not in e:
            print(f"  [{ok(e['peak_mib'] < GIB)}] engine peak RSS < 1 GiB on {r['name']}: {e['peak_mib']:,.0f} MiB")
    for r in results:
        e = r.get("engine")
        if e and "error" not in e:
            n = next((d["features_without_cells"] for name, _, d in e["checks"] if name == "every_feature_has_cells"),
                     None)
            print(f"  [{ok(n == 0)}] zero features without cells on {r['name']}: engine {n:,}"
                  + "".join(f", {p} {without_cells(r[p]):,}" + (" (in its sample)" if r[p].get("sample") else "")
                            for p in ("kernel", "old") if r.get(p) and "error" not in r[p]))
    giant = next((r for r in results if r["name"] == "giant"), None)
    if giant:
        cells = next((giant[p]["cells"] for p in ("engine", "kernel") if giant.get(p) and "error" not in giant[p]), 0)
        print(f"  [{ok(cells >= 100_000_000)}] giant polygon has >= 100M res-10 cells: {cells:,}")
    for r in results:
        for p in ("engine", "kernel", "old"):
            if r.get(p) and "error" in r[p]:
                print(f"  [FAILED ] {p} on {r['name']}: {r[p]['error']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parcels", type=int, default=None, help="synthetic parcels (default 50000; 5000 with --quick)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per path and input; best wins (default 1)")
    parser.add_argument("--old-budget", type=float, default=None,
                        help="seconds the old path runs per input before it stops and its rate is taken from the "
                             "sample (default 20; 5 with --quick)")
    parser.add_argument("--seed", type=int, default=42, help="seed of the parcels and the old path's sample order")
    parser.add_argument("--quick", action="store_true", help="a fast sanity run: fewer parcels, no giant polygon")
    args = parser.parse_args()
    args.parcels = args.parcels or (5_000 if args.quick else 50_000)
    args.old_budget = args.old_budget if args.old_budget is not None else (5.0 if args.quick else 20.0)
    t0 = time.perf_counter()
    OUT.mkdir(parents=True, exist_ok=True)

    print(f"Inputs (cached under {OUT.relative_to(ROOT)} and bench/out):")
    cases = inputs(args)
    # numba compiles the engine's fills on first use (the image does it at build time): not part of any run
    subprocess.run([sys.executable, "-m", "cng_assets.transforms.hex.precompile"], check=True, cwd=ROOT)
    print(f"Running ({args.repeat} run(s) per path and input, old-path budget {args.old_budget:g}s):")
    results = [bench(c, args) for c in cases]
    report(results)
    targets(results)
    print(f"\nTotal wall time: {time.perf_counter() - t0:.1f}s")


if __name__ == "__main__":
    main()
