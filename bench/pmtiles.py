"""PMTiles: this project's `write_pmtiles` against the old tool's pipeline (GeoParquet -> GeoJSONSeq -> tippecanoe).

Run from the project root (no network; about 3 minutes on 2 cores):

    .venv/bin/python bench/pmtiles.py                     # demo countries and the 100,000 synthetic parcels
    .venv/bin/python bench/pmtiles.py --old-timeout 60 --repeat 1
    .venv/bin/python bench/pmtiles.py --breakdown-only    # only where tippecanoe's CPU goes, on the parcels

Inputs: the demo's countries layer (GeoParquet made once by `write_geoparquet`, cached under bench/out/pmtiles/)
and the PAD-US-like synthetic layer of bench/geoparquet.py (100,000 features by default, `--parcels N`), made into
GeoParquet once and cached under bench/out/hex/ as bench/hex.py does.
Paths, each run in its own spawned process:

  old   the old tool: GeoParquet -> a GeoJSONSeq file -> `tippecanoe -zg --drop-densest-as-needed
        --extend-zooms-if-still-dropping` reading that file (the tippecanoe README's recipe). The old tool used
        ogr2ogr for the first step; this environment has no ogr2ogr and its GDAL reads no Parquet, so it is
        emulated with geopandas.read_parquet + pyogrio.write_dataframe(driver="GeoJSONSeq") to a temp file.
        tippecanoe gets --old-timeout seconds; a run that takes longer is killed and reported as not finished.
  new   `write_pmtiles`: batches streamed to tippecanoe's stdin, max zoom chosen from the data (capped)
  same  `write_pmtiles` with the zoom range the old path's -zg chose: the pipelines alone, like for like
        (not run again when the new path's own choice is that range)

Peak RSS is given per process: the Python process (VmHWM) and its tippecanoe child (VmHWM, sampled).
Last, where tippecanoe's CPU goes on the parcels: reading alone (max zoom 0) from our NDJSON stream and from a
FlatGeobuf file, and the zoom range cut at several max zooms.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

# Only the standard library at module level: spawned children re-import this file, and heavy imports here
# would count towards every path's RSS.
ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out" / "pmtiles"
# This file shares its name with the `pmtiles` package: keep its folder off the import path (spawned children
# inherit sys.path), so `import pmtiles` finds the package.
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]


def _vm_hwm_mib(pid: str = "self") -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):  # the child has just exited
        return 0.0


class ChildPeak(threading.Thread):
    """Peak RSS of this process's children (tippecanoe), their VmHWM sampled every 0.1 s. Not ru_maxrss: a child
    inherits its parent's ru_maxrss through fork+exec, so it would report at least the Python process's peak."""

    def __init__(self):
        super().__init__(daemon=True)
        self.mib, self.done = 0.0, threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.1):
            for kids in Path("/proc/self/task").glob("*/children"):
                for pid in kids.read_text().split():
                    self.mib = max(self.mib, _vm_hwm_mib(pid))

    def __enter__(self) -> ChildPeak:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.join()


def _archive(path: str) -> dict:
    from pmtiles.reader import MmapSource, Reader

    with open(path, "rb") as f:
        h = Reader(MmapSource(f)).header()
    return {"min_zoom": h["min_zoom"], "max_zoom": h["max_zoom"], "tiles": h["addressed_tiles_count"],
            "bytes": os.path.getsize(path)}


def run_old(src: str, layer: str, out: str, timeout: float) -> dict:
    import geopandas as gpd
    import pyogrio

    from cng_assets.transforms.pmtiles import find_tippecanoe

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-pmtiles-", dir=OUT) as tmp:
        seq = Path(tmp) / f"{layer}.geojsonl"
        df = gpd.read_parquet(src)
        pyogrio.write_dataframe(df.drop(columns=["bbox"], errors="ignore"), seq, driver="GeoJSONSeq")
        del df
        convert = time.perf_counter() - t0
        tiles = Path(tmp) / "out.pmtiles"  # moved to `out` when finished; a killed run leaves its files in tmp
        args = [find_tippecanoe(), "-o", str(tiles), "-l", layer, "-zg", "--drop-densest-as-needed",
                "--extend-zooms-if-still-dropping", "-q", str(seq)]
        with ChildPeak() as tip:
            try:
                subprocess.run(args, check=True, timeout=timeout, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                finished = True
                os.replace(tiles, out)
            except subprocess.TimeoutExpired:  # run() has killed and reaped tippecanoe
                finished = False
    seconds = time.perf_counter() - t0
    res = {"seconds": seconds, "convert_seconds": convert, "finished": finished, "py_mib": _vm_hwm_mib(),
           "tip_mib": tip.mib}
    return {**res, **(_archive(out) if finished else {})}


def run_new(src: str, layer: str, out: str, zooms: tuple[int, int] | None = None) -> dict:
    from cng_assets.transforms.pmtiles import write_pmtiles

    t0 = time.perf_counter()
    kw = {"min_zoom": zooms[0], "max_zoom": zooms[1]} if zooms else {}
    with ChildPeak() as tip:
        stats = write_pmtiles(src, out, layer=layer, scratch_dir=str(OUT), **kw)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "finished": True, "py_mib": _vm_hwm_mib(), "tip_mib": tip.mib, "features": stats.features,
            "zoom_reason": stats.zoom_reason, "dropped_at_max_zoom": stats.dropped_at_max_zoom,
            "args": " ".join(stats.tippecanoe_args), **_archive(out)}


def in_child(fn, *args) -> dict:
    with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def demo_countries() -> str:
    """The demo's countries layer as this project's GeoParquet (cached)."""
    out = OUT / "demo_countries.parquet"
    if not out.exists():
        from cng_assets.demo import build_demo_source
        from cng_assets.transforms.geoparquet import write_geoparquet

        with tempfile.TemporaryDirectory(dir=OUT) as tmp:
            src = build_demo_source(Path(tmp) / "demo.gpkg")
            write_geoparquet(str(src), "Countries", Path(tmp) / "c.parquet", kind="polygon")
            os.replace(Path(tmp) / "c.parquet", out)
    return str(out)


def best(runs: list[dict]) -> dict:
    done = [r for r in runs if r["finished"]]
    return min(done, key=lambda r: r["seconds"]) if done else runs[-1]


def bench(name: str, src: str, layer: str, repeat: int, timeout: float) -> dict:
    outs = {p: str(OUT / f"{name}.{p}.pmtiles") for p in ("old", "new", "same")}
    runs: dict[str, list[dict]] = {"old": [], "new": []}
    for _ in range(repeat):  # interleaved, so drift (page cache, CPU clock) hits both paths alike
        runs["old"].append(in_child(run_old, src, layer, outs["old"], timeout))
        runs["new"].append(in_child(run_new, src, layer, outs["new"]))
    res = {"name": name, "old": best(runs["old"]), "new": best(runs["new"]), "same": None}
    zooms = (res["old"].get("min_zoom"), res["old"].get("max_zoom"))
    if zooms == (res["new"]["min_zoom"], res["new"]["max_zoom"]):
        res["same"] = res["new"]  # the new path already ran at the old path's zooms
    elif res["old"]["finished"]:
        res["same"] = best([in_child(run_new, src, layer, outs["same"], zooms) for _ in range(repeat)])
    print(f"  {name}: old {_secs(res['old'], timeout)}, new {res['new']['seconds']:.2f}s"
          + (f", new at the old zooms {res['same']['seconds']:.2f}s" if res["same"] else ""))
    return res


def _secs(r: dict | None, timeout: float) -> str:
    if r is None:
        return "-"
    return f"{r['seconds']:.2f}" if r["finished"] else f"did not finish in {timeout:.0f} s"


def report(results: list[dict], timeout: float) -> None:
    head = ["input", "features", "old s", "new s", "old/new", "same s", "old/same", "zooms old", "zooms new",
            "tiles old", "tiles new", "MiB old py+tip", "MiB new py+tip"]
    rows = []
    for r in results:
        o, n, s = r["old"], r["new"], r["same"]

        def ratio(a, b):
            return f"{a['seconds'] / b['seconds']:.2f}x" if a and b and a["finished"] else "-"

        rows.append([r["name"], f"{n['features']:,}", _secs(o, timeout), f"{n['seconds']:.2f}", ratio(o, n),
                     _secs(s, timeout), ratio(o, s),
                     f"{o['min_zoom']}-{o['max_zoom']}" if o["finished"] else "-", f"{n['min_zoom']}-{n['max_zoom']}",
                     f"{o['tiles']:,}" if o["finished"] else "-", f"{n['tiles']:,}",
                     f"{o['py_mib']:.0f}+{o['tip_mib']:.0f}", f"{n['py_mib']:.0f}+{n['tip_mib']:.0f}"])
    widths = [max(len(x) for x in col) for col in zip(head, *rows)]
    print()
    for line in [head, ["-" * w for w in widths], *rows]:
        print("  ".join(x.ljust(w) if i == 0 else x.rjust(w) for i, (x, w) in enumerate(zip(line, widths))))
    print("\nold/new = old time / new time, each with its own zoom choice; old/same = old time / new time at the "
          "old path's zooms (the pipelines alone). > 1 means the new path is faster, < 1 slower.")
    print("Times: best of the repeats, whole path (old: GeoJSONSeq conversion + tippecanoe; new: zoom choice + "
          "streaming + tippecanoe + reading the header back), each in a fresh spawned process.")
    print("MiB: peak RSS of the Python process + peak RSS of its tippecanoe child (separate processes; "
          "the old path's Python peak is geopandas holding the whole layer, where ogr2ogr would stream).")
    print("\nPer input:")
    for r in results:
        o, n = r["old"], r["new"]
        print(f"  {r['name']}:")
        if o["finished"]:
            print(f"    old: GeoJSONSeq conversion {o['convert_seconds']:.2f}s, tippecanoe -zg chose z{o['max_zoom']}, "
                  f"{o['bytes']:,} bytes")
        else:
            print(f"    old: GeoJSONSeq conversion {o['convert_seconds']:.2f}s, then tippecanoe did not finish "
                  f"in {timeout:.0f} s (killed)")
        print(f"    new: max zoom {n['max_zoom']} by {n['zoom_reason']}; {n['bytes']:,} bytes; features dropped "
              f"at the max zoom to fit 500 KB tiles: {n['dropped_at_max_zoom']:,}")
        print(f"    new: tippecanoe {n['args']}")


def breakdown(src: str, layer: str) -> None:
    """Where tippecanoe's CPU goes on one layer: reading (max zoom 0) from our NDJSON stream and from a FlatGeobuf
    file, then the whole zoom range cut at several max zooms; CPU-seconds of tippecanoe (children's rusage)."""
    import pyarrow.parquet as pq
    import pyogrio

    from cng_assets.transforms import pmtiles as T

    pf, geom_col, bbox_col, _ = T._open(Path(src), layer)
    columns = T._attribute_columns(pf, geom_col, bbox_col, None, layer)
    max_zoom, _ = T.choose_max_zoom(pf, geom_col, bbox_col, points=False)
    with tempfile.TemporaryDirectory(prefix="bench-pmtiles-", dir=OUT) as tmp:
        c0 = time.process_time()
        with open(Path(tmp) / "in.geojsonl", "wb") as f:
            for chunk, _, _ in T._features(pf, geom_col, columns):
                f.write(chunk)
        ndjson = time.process_time() - c0
        c0 = time.process_time()
        table = pq.read_table(src).drop_columns([c for c in (bbox_col,) if c])
        pyogrio.write_arrow(table, Path(tmp) / "in.fgb", driver="FlatGeobuf", geometry_name=geom_col,
                            geometry_type="Unknown", crs="EPSG:4326", SPATIAL_INDEX="NO")
        fgb = time.process_time() - c0

        def tippecanoe(z: int, source: str) -> float:
            r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            args = [T.find_tippecanoe(), *T.tippecanoe_args("o.pmtiles", layer, 0, z, points=False), "--force"]
            if source.endswith(".fgb"):
                subprocess.run([*args, source], cwd=tmp, check=True, capture_output=True)
            else:
                with open(source, "rb") as f:
                    subprocess.run(args, cwd=tmp, stdin=f, check=True, capture_output=True)
            r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            return r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime

        full = tippecanoe(max_zoom, str(Path(tmp) / "in.geojsonl"))
        print(f"\nWhere tippecanoe's CPU goes ({Path(src).name}, {pf.metadata.num_rows:,} features, zooms 0-{max_zoom}, "
              f"CPU-seconds; share of the full run in brackets):")
        print(f"  our NDJSON stream, made in Python: {ndjson:.2f} (a FlatGeobuf file instead: {fgb:.2f})")
        for label, z, source in (("read NDJSON from stdin (max zoom 0)", 0, "in.geojsonl"),
                                 ("read FlatGeobuf file (max zoom 0)", 0, "in.fgb"),
                                 *((f"zooms 0-{z} (NDJSON)", z, "in.geojsonl") for z in sorted({4, 6, 8, max_zoom - 1})
                                   if 0 < z < max_zoom)):
            cpu = tippecanoe(z, str(Path(tmp) / source))
            print(f"  {label}: {cpu:.2f} ({cpu / full:.0%})")
        print(f"  zooms 0-{max_zoom} (NDJSON, what write_pmtiles runs): {full:.2f} (100%)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2, help="runs per path and input; best time wins (default 2)")
    parser.add_argument("--old-timeout", type=float, default=120, help="seconds for the old path's tippecanoe (120)")
    parser.add_argument("--breakdown-only", action="store_true", help="only where tippecanoe's CPU goes (parcels)")
    parser.add_argument("--parcels", type=int, default=100_000, help="features of the synthetic layer (100000)")
    args = parser.parse_args()
    t0 = time.perf_counter()
    OUT.mkdir(parents=True, exist_ok=True)

    print(f"Inputs (outputs under {OUT.relative_to(ROOT)}):")
    inputs = [("demo_countries", demo_countries(), "countries")]
    print(f"  demo_countries: {Path(inputs[0][1]).relative_to(ROOT)}")
    from bench.geoparquet import make_synthetic
    from bench.hex import to_geoparquet

    gdb, gdb_layer, _ = make_synthetic(args.parcels, 42)
    parcels = to_geoparquet(f"parcels_n{args.parcels}_s42", gdb, gdb_layer)
    inputs.append((f"parcels_{args.parcels // 1000}k", parcels, "parcels"))
    print(f"  {inputs[-1][0]}: {Path(parcels).relative_to(ROOT)}")

    load = os.getloadavg()[0]
    if not args.breakdown_only:
        print(f"Tiling ({args.repeat} run(s) per path and input):")
        results = [bench(name, src, layer, args.repeat, args.old_timeout) for name, src, layer in inputs]
        report(results, args.old_timeout)
    breakdown(parcels, "parcels")
    print(f"\nLoad average (1 min) before the run: {load:.2f} on {os.cpu_count()} cores (well above 0: other "
          "processes shared the CPUs, and the timings are noisier).")
    print(f"Total wall time: {time.perf_counter() - t0:.1f}s")


if __name__ == "__main__":
    main()
