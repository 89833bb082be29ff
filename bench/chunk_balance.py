"""Hex chunk balance: CPU of the heaviest chunk over the median one, main's planner against this one.

Run from the project root (no network; a few minutes on 2 busy cores, the first run also makes the inputs):

    .venv/bin/python bench/chunk_balance.py                   # 20,000 parcels, the giants, all at res 10
    .venv/bin/python bench/chunk_balance.py --parcels 80000 --giant-res 9

Inputs (bench/hex.py's generators, cached under bench/out/hex): synthetic parcels, and the ~1.5 M km² giant
polygon with 20k and with 1.5 M vertices. Each layer is planned by main's `plan_layer` (read from
`git show main:...`) and by the working tree's, with a `target_cells` that gives ~10-20 chunks; then every chunk
runs in one spawned process with RAYON_NUM_THREADS=1, timed with `time.process_time()` around `run_chunk`.
Last, CPU per cell and per vertex, from the giants' chunks: their ratio is what plan.VERTEX_WEIGHT is set from.
"""

from __future__ import annotations

import argparse
import importlib.util
import multiprocessing as mp
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.hex import _single_thread_kernel, make_giant, to_geoparquet  # noqa: E402  (stdlib-only imports)

PLAN = "cng_assets/transforms/hex/plan.py"


def planner(which: str):
    """The working tree's plan module, or main's loaded from git into a module of its own."""
    if which == "after":
        from cng_assets.transforms.hex import plan
        return plan
    source = subprocess.run(["git", "show", f"main:{PLAN}"], cwd=ROOT, capture_output=True, text=True, check=True)
    spec = importlib.util.spec_from_loader("_plan_main", loader=None)
    module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)  # dataclasses look it up there
    exec(compile(source.stdout, f"main:{PLAN}", "exec"), module.__dict__)
    return module


def run_plan(geoparquet: str, res: int, which: str, target_cells: float) -> dict:
    """In a child: plan, then run every chunk; per chunk its CPU seconds, cells, vertices read and estimate."""
    _single_thread_kernel()
    import numpy as np
    import pyarrow.compute as pc
    import shapely

    from cng_assets.transforms.hex.chunk import _read_rows, run_chunk
    from cng_assets.transforms.hex.fill import HexSettings
    from cng_assets.transforms.hex.layer import chunk_units

    plan_mod = planner(which)
    t0 = time.process_time()
    plan = plan_mod.plan_layer(geoparquet, res, target_cells=target_cells)
    plan_cpu = time.process_time() - t0
    settings = HexSettings(res, (max(0, res - 1), 0))
    geoms = _read_rows(geoparquet, np.unique(plan.column("row").to_numpy()))
    chunks = []
    with tempfile.TemporaryDirectory() as tmp:
        run_chunk(geoparquet, chunk_units(plan, 0)[:1], settings, Path(tmp) / "warm-up")  # lazy imports, caches
        for k in range(plan_mod.chunk_count(plan)):
            units = chunk_units(plan, k)
            vertices = 0  # what the fill reads: a piece reads its whole part
            for row, parts in zip(units.column("row").to_pylist(), units.column("parts").to_pylist()):
                all_parts = shapely.get_parts(geoms[row])
                vertices += int(shapely.get_num_coordinates(all_parts if parts is None else all_parts[parts]).sum())
            t0 = time.process_time()
            stats = run_chunk(geoparquet, units, settings, Path(tmp) / f"c{k}", plan_mod.plan_digest(plan))
            chunks.append({"cpu": time.process_time() - t0, "cells": stats.cells, "vertices": vertices,
                           "est": float(pc.sum(units.column("est_cells")).as_py() or 0)})
            shutil.rmtree(Path(tmp) / f"c{k}", ignore_errors=True)
    return {"plan_cpu": plan_cpu, "chunks": chunks}


def in_child(fn, *args) -> dict:
    with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def summary(r: dict) -> dict:
    import numpy as np

    cpu = np.array([c["cpu"] for c in r["chunks"]])
    cells = np.array([c["cells"] for c in r["chunks"]], float)
    est = np.array([c["est"] for c in r["chunks"]])
    worst = float(np.max(np.maximum(est, 1) / np.maximum(cells, 1)) if len(cells) else 0)
    return {"n": len(cpu), "max": cpu.max(), "median": float(np.median(cpu)), "ratio": cpu.max() / np.median(cpu),
            "est_over": worst, "est_under": float(np.max(np.maximum(cells, 1) / np.maximum(est, 1))),
            "plan_cpu": r["plan_cpu"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parcels", type=int, default=20_000)
    parser.add_argument("--parcel-res", type=int, default=10)
    parser.add_argument("--giant-res", type=int, default=10)
    parser.add_argument("--chunks", type=int, default=15, help="about how many chunks each plan should make")
    args = parser.parse_args()
    from bench.geoparquet import make_synthetic

    t_start = time.perf_counter()
    src, layer, _ = make_synthetic(args.parcels, 42)
    cases = [(f"{args.parcels:,} parcels", to_geoparquet(f"parcels_n{args.parcels}_s42", src, layer), args.parcel_res)]
    for v in (20_000, 1_500_000):
        name = "giant" if v == 20_000 else f"giant{v}"
        cases.append((f"giant, {v:,} vertices", to_geoparquet(name, *make_giant(v)), args.giant_res))

    import numpy as np

    after = []  # chunk runs of this planner, per layer
    print(f"{'layer':<24}{'res':>4} {'planner':<7}{'chunks':>7}{'max s':>8}{'median s':>9}{'max/med':>8}"
          f"{'est/act max':>12}{'act/est max':>12}{'plan s':>8}")
    for name, gp, res in cases:
        import pyarrow.parquet as pq
        import shapely

        from cng_assets.transforms.hex import fill
        geoms = shapely.from_wkb(pq.read_table(gp, columns=["geometry"]).column("geometry").to_numpy(zero_copy_only=False))
        target = float(fill.estimate_cells(geoms, res).sum()) / args.chunks  # cells only: vertices add some chunks
        for which in ("before", "after"):
            r = in_child(run_plan, gp, res, which, target)
            s = summary(r)
            after += [r["chunks"]] if which == "after" else []
            print(f"{name:<24}{res:>4} {which:<7}{s['n']:>7}{s['max']:>8.2f}{s['median']:>9.2f}{s['ratio']:>8.2f}"
                  f"{s['est_over']:>12.2f}{s['est_under']:>12.2f}{s['plan_cpu']:>8.2f}")
    # Every piece of a split part reads the whole part, so the two giants differ by their vertices alone.
    few, many = (np.array([[c["cpu"], c["cells"], c["vertices"]] for c in after[k]]) for k in (1, 2))
    per_cell = few[:, 0].sum() / few[:, 1].sum()
    per_vertex = (np.median(many[:, 0]) - np.median(few[:, 0])) / (np.median(many[:, 2]) - np.median(few[:, 2]))
    parcels = np.array([[c["cpu"], c["cells"], c["vertices"]] for c in after[0]]).sum(0)
    print(f"\nlarge fill: {per_cell * 1e6:.3f} us per cell; {per_vertex * 1e6:.3f} us per vertex a piece reads: "
          f"one vertex costs {per_vertex / per_cell:.1f} cells. Parcels (kernel fill): {parcels[0] / parcels[1] * 1e6:.3f} "
          f"us per cell, {parcels[2] / parcels[1]:.2f} vertices per cell")
    print(f"Total wall time: {time.perf_counter() - t_start:.1f}s")


if __name__ == "__main__":
    main()
