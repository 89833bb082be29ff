"""Raster hex: this project's engine against the old tool's approach, side by side on the same raster, one run.

    .venv/bin/python bench/raster_hex.py [--res N] [--synthetic]

Input: ../shared/data/RGB.byte.tif (3-band uint8, 300 m pixels, res 8) when present, else a synthetic 2000x2000
3-band uint8 raster with 30 m pixels in UTM 33N (res 10), made once under bench/out/raster_hex/. Paths, each in
its own fresh subprocess (imports done before the clock starts; RAYON_NUM_THREADS=1):

  new  `raster_hex` over the whole raster as one chunk, then `consolidate_raster_hex`: per-band statistics per
       cell (uint8: mode, count), written as the h0=<cell>/part-*.parquet product
  old  the old tool re-created: pixel centres to lon/lat with pyproj (vectorised), then each pixel to an H3
       *string* with h3.latlng_to_cell in a Python loop, no aggregation, one Parquet of (h3, band values).
       It skips nodata pixels (the engine does too), which only flatters the old path.

Rate = raster pixels (width x height, the same for both) per CPU-second (time.process_time: every thread).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# not bench/ itself: bench/pmtiles.py would shadow the pmtiles package
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
OUT = ROOT / "bench" / "out" / "raster_hex"
RGB = ROOT.parent / "shared" / "data" / "RGB.byte.tif"


def _peak_rss_mib() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024


def synthetic() -> Path:
    """2000x2000, 3 bands of uint8 in smooth patches (so cells are not pure noise), nodata 0 in a border."""
    path = OUT / "synthetic-2000.tif"
    if path.exists():
        return path
    import numpy as np
    import rasterio
    from rasterio.transform import from_origin

    OUT.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:2000, 0:2000]
    data = np.stack([(1 + (np.sin(x / (40 + 10 * k)) + np.cos(y / (55 + 7 * k)) + 2) * 60
                      + rng.integers(0, 8, x.shape)).astype(np.uint8) for k in range(3)])
    data[:, :100, :] = 0
    data[:, :, :150] = 0
    tmp = path.with_suffix(".tmp.tif")
    with rasterio.open(tmp, "w", driver="GTiff", width=2000, height=2000, count=3, dtype="uint8", nodata=0,
                       crs="EPSG:32633", transform=from_origin(400_000, 5_100_000, 30, 30)) as dst:
        dst.write(data)
    tmp.rename(path)
    return path


def run_new(path: str, res: int, work: Path) -> dict:
    from cng_assets.transforms.raster.hex import consolidate_raster_hex, raster_hex

    t0, c0 = time.perf_counter(), time.process_time()
    chunk = raster_hex(path, work / "chunk", res, (res - 1, 0))
    c1 = time.process_time()
    rows = consolidate_raster_hex([work / "chunk"], work / "out", res, (res - 1, 0))
    cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    size = sum(f.stat().st_size for f in (work / "out").rglob("*.parquet"))
    return {"cpu": cpu, "wall": wall, "chunk_cpu": c1 - c0, "rows": sum(rows.values()), "bytes": size,
            "valid_pixels": chunk.valid_pixels, "floor_cpu": chunk.cpu_project + chunk.cpu_index}


def run_old(path: str, res: int, work: Path) -> dict:
    import h3
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    import rasterio
    from pyproj import Transformer

    t0, c0 = time.perf_counter(), time.process_time()
    with rasterio.open(path) as src:
        data = src.read(masked=True)
        transform, crs = src.transform, src.crs
    valid = ~np.ma.getmaskarray(data).all(axis=0)
    rows, cols = np.nonzero(valid)
    xs, ys = rasterio.transform.xy(transform, rows, cols, offset="center")
    lngs, lats = Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(xs, ys)
    ids = [h3.latlng_to_cell(lat, lng, res) for lat, lng in zip(lats.tolist(), lngs.tolist())]
    table = pa.table({"h3": ids, **{f"b{i + 1}": data.data[i][valid] for i in range(data.shape[0])}})
    pq.write_table(table, work / "old.parquet")
    cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    return {"cpu": cpu, "wall": wall, "rows": table.num_rows, "bytes": (work / "old.parquet").stat().st_size,
            "valid_pixels": int(valid.sum())}


def child(which: str, path: str, res: int) -> None:
    # import what the path needs before the clock starts, so neither path pays for imports
    import h3  # noqa: F401
    import pyarrow.parquet  # noqa: F401
    import rasterio  # noqa: F401

    import cng_assets.transforms.raster.hex  # noqa: F401

    with tempfile.TemporaryDirectory(prefix="raster-hex-bench-") as work:
        out = (run_new if which == "new" else run_old)(path, res, Path(work))
    out["peak_mib"] = _peak_rss_mib()
    print(json.dumps(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--res", type=int, help="H3 resolution (default 8 for RGB.byte.tif, 10 for the synthetic)")
    parser.add_argument("--synthetic", action="store_true", help="use the synthetic raster even if RGB.byte.tif is there")
    parser.add_argument("--child", choices=["new", "old"], help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.input, args.res)

    path, default_res = (RGB, 8) if RGB.exists() and not args.synthetic else (synthetic(), 10)
    res = args.res or default_res
    import rasterio

    with rasterio.open(path) as src:
        pixels, shape = src.width * src.height, f"{src.width}x{src.height}x{src.count} {src.dtypes[0]}"
    print(f"input {path.name} ({shape}, {pixels:,} pixels), H3 res {res}")
    env = {**os.environ, "RAYON_NUM_THREADS": "1"}
    results = {}
    for which in ("new", "old"):
        proc = subprocess.run([sys.executable, __file__, "--child", which, "--input", str(path), "--res", str(res)],
                              env=env, capture_output=True, text=True, cwd=ROOT)
        if proc.returncode:
            raise SystemExit(f"{which} path failed:\n{proc.stderr}")
        results[which] = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"{'path':5} {'CPU s':>7} {'wall s':>7} {'px/CPU-s':>12} {'rows':>10} {'MiB out':>8} {'peak MiB':>9}")
    for which, r in results.items():
        print(f"{which:5} {r['cpu']:7.2f} {r['wall']:7.2f} {pixels / r['cpu']:12,.0f} {r['rows']:10,} "
              f"{r['bytes'] / 2**20:8.2f} {r['peak_mib']:9.0f}")
    new, old = results["new"], results["old"]
    print(f"valid pixels: {new['valid_pixels']:,} (both paths skip the rest); new chunk CPU {new['chunk_cpu']:.2f}s, "
          f"consolidate {new['cpu'] - new['chunk_cpu']:.2f}s; of the new path's CPU, {new['floor_cpu']:.2f}s "
          f"({new['floor_cpu'] / new['cpu']:.0%}) is pyproj + h3ronpy on every valid pixel: its floor")
    print(f"ratio new/old (pixels per CPU-second): {old['cpu'] / new['cpu']:.1f}x")


if __name__ == "__main__":
    main()
