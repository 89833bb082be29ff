"""GeoParquet conversion: this project's `write_geoparquet` against the old tool's DuckDB `ST_Read` -> `COPY`.

Run from the project root (needs the dev extra, for `duckdb-extension-spatial`; no network):

    .venv/bin/python bench/geoparquet.py                      # 100,000 synthetic features, best of 3
    .venv/bin/python bench/geoparquet.py --features 20000 --repeat 1

Inputs: a synthetic PAD-US-like layer (EPSG:5070, ~1% bow-tie rings; cached under bench/out/) and the real
samples in ../shared/data. Every conversion runs in its own spawned process, so the timings are cold-process
timings of the conversion call alone, and each peak RSS belongs to one path only.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

# Only the standard library at module level: spawned children re-import this file, and heavy imports
# here would count towards both paths' RSS.
ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
SHARED = ROOT.parent / "shared" / "data"
SYNTH_VERSION = 2  # bump when the generator changes: cached inputs are keyed by it
sys.path.insert(0, str(ROOT))  # spawned children inherit sys.path


def _peak_rss_mib() -> float:
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent through fork+exec, so a spawned child
    # would report at least the parent's peak (the parent holds the synthetic input's libraries).
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux, bytes on macOS


def run_old(src: str, layer: str, out: str) -> dict:
    """The old tool: GDAL (bundled in DuckDB spatial) -> Parquet, as is."""
    import duckdb
    import duckdb_extension_spatial as spatial

    ext = os.path.join(os.path.dirname(spatial.__file__), "extensions/v1.5.5/spatial.duckdb_extension")
    baseline = _peak_rss_mib()
    t0 = time.perf_counter()
    con = duckdb.connect()
    con.execute(f"LOAD '{ext}'")
    load = time.perf_counter() - t0
    con.execute(f"COPY (SELECT * FROM ST_Read('{src}', layer='{layer}')) TO '{out}' (FORMAT parquet)")
    con.close()
    return {"seconds": time.perf_counter() - t0, "peak_mib": _peak_rss_mib(), "baseline_mib": baseline,
            "load_seconds": load}


def run_new(src: str, layer: str, out: str) -> dict:
    from cng_assets.transforms.geoparquet import write_geoparquet

    baseline = _peak_rss_mib()
    t0 = time.perf_counter()
    stats = write_geoparquet(src, layer, out, kind="polygon")
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "peak_mib": _peak_rss_mib(), "baseline_mib": baseline,
            "rows": stats.rows_written, "repaired": stats.counts.repaired, "dropped": stats.dropped,
            "split_antimeridian": stats.counts.split_antimeridian}


def in_child(fn, *args) -> dict:
    with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def make_synthetic(n: int, seed: int) -> tuple[str, str, str]:
    """A PAD-US-like MultiPolygon layer in EPSG:5070; returns (path, layer, driver). Cached by n, seed, version."""
    import geopandas as gpd
    import numpy as np
    import pyogrio
    import shapely

    layer = "PADUS_Synthetic"
    stem = OUT / f"padus_synth_n{n}_s{seed}_v{SYNTH_VERSION}"
    for driver, ext in (("OpenFileGDB", ".gdb"), ("GPKG", ".gpkg")):
        if stem.with_suffix(ext).exists():
            return str(stem.with_suffix(ext)), layer, driver

    t0 = time.perf_counter()
    OUT.mkdir(parents=True, exist_ok=True)  # any bench may be the first on a fresh clone
    rng = np.random.default_rng(seed)
    nparts = np.where(rng.random(n) < 0.15, rng.integers(2, 5, n), 1)  # ~15% multipart
    feat_of_part = np.repeat(np.arange(n), nparts)
    first = np.r_[True, feat_of_part[1:] != feat_of_part[:-1]]
    n_parts = len(feat_of_part)
    bowtie_parts = np.flatnonzero(first)[rng.random(n) < 0.01]  # ~1% of features: their first part
    area = 10 ** rng.uniform(-3, 2, n) * 1e6  # m², log-uniform 0.001-100 km²
    share = rng.uniform(0.2, 1.0, n_parts)
    part_area = area[feat_of_part] * share / np.bincount(feat_of_part, share)[feat_of_part]

    # Star-shaped rings (strictly increasing angles, jittered radii) are irregular yet always simple.
    nv = rng.integers(8, 65, n_parts)
    part_of_v = np.repeat(np.arange(n_parts), nv)
    start = np.cumsum(nv) - nv
    k = np.arange(nv.sum()) - start[part_of_v]
    theta = 2 * np.pi * (k + rng.uniform(0, 0.8, len(k))) / nv[part_of_v]
    radius = rng.uniform(0.5, 1.5, len(k))
    radius[np.isin(part_of_v, bowtie_parts)] = 1.0  # convex, so the bow-tie below surely self-intersects
    x, y = radius * np.cos(theta), radius * np.sin(theta)
    nxt = np.arange(len(k)) + 1
    nxt[start + nv - 1] = start
    unit_area = 0.5 * np.bincount(part_of_v, x * y[nxt] - x[nxt] * y)
    scale = np.sqrt(part_area / unit_area)
    extent = scale * np.maximum.reduceat(radius, start)

    # Parts of one feature sit side by side along a random direction, far enough apart not to overlap.
    gaps = np.where(first, 0.0, (extent + np.roll(extent, 1)) * 1.05)
    offset = np.cumsum(gaps)
    offset -= offset[np.flatnonzero(first)][feat_of_part]
    phi = rng.uniform(0, 2 * np.pi, n)
    cx = rng.uniform(-2.3e6, 2.2e6, n)  # the contiguous US in Conus Albers (a box: some land in CA/MX/sea)
    cy = rng.uniform(0.3e6, 3.1e6, n)
    pf = feat_of_part[part_of_v]
    px = cx[pf] + (offset * np.cos(phi[feat_of_part]))[part_of_v] + scale[part_of_v] * x
    py = cy[pf] + (offset * np.sin(phi[feat_of_part]))[part_of_v] + scale[part_of_v] * y

    # Bow-ties: reversing vertices 1..nv/2 of a convex ring makes exactly two edges cross, near its centre.
    order = np.arange(len(k))
    for p in bowtie_parts:
        s, half = start[p], nv[p] // 2
        order[s + 1: s + half + 1] = order[s + 1: s + half + 1][::-1]
    rings = shapely.linearrings(np.column_stack([px[order], py[order]]), indices=part_of_v)
    geoms = shapely.multipolygons(shapely.polygons(rings), indices=feat_of_part)

    acres = area / 4046.8564224
    mang = rng.choice(["BLM", "USFS", "NPS", "FWS", "DOD", "STAT", "CNTY", "CITY", "NGO", "PVT"], n,
                      p=[.2, .2, .05, .05, .05, .2, .1, .07, .04, .04])
    des = rng.choice(["NF", "NP", "NWR", "WA", "SP", "LP", "CONE", "PUB", "REC", "SW"], n)
    names = rng.choice(["Cedar", "Eagle", "Bear", "Willow", "Pine", "Red Rock", "Sage", "Elk", "Coyote", "Juniper"], n)
    df = gpd.GeoDataFrame({
        "Unit_Nm": [f"{a} {d} {i}" for a, d, i in zip(names, des, rng.integers(1, 999, n))],
        "Mang_Type": np.select([np.isin(mang, ["BLM", "USFS", "NPS", "FWS", "DOD"]), mang == "STAT",
                                np.isin(mang, ["CNTY", "CITY"])], ["FED", "STAT", "LOC"], "PVT"),
        "Mang_Name": mang,
        "Des_Tp": des,
        "GAP_Sts": rng.choice(["1", "2", "3", "4"], n, p=[.1, .2, .4, .3]),
        "State_Nm": rng.choice(["CA", "NV", "UT", "AZ", "CO", "OR", "WA", "ID", "MT", "WY", "NM", "TX"], n),
        "GIS_Acres": np.round(acres, 2),
        "Date_Est": rng.integers(1872, 2024, n).astype(np.int32),  # int32: FileGDB writes int64 as float
        "Comments": np.where(rng.random(n) < 0.3, "Boundary from agency survey", None),
    }, geometry=geoms, crs="EPSG:5070")

    for driver, ext in (("OpenFileGDB", ".gdb"), ("GPKG", ".gpkg")):
        final = stem.with_suffix(ext)
        partial = stem.with_name(stem.name + "_partial").with_suffix(ext)  # renamed when complete
        try:
            pyogrio.write_dataframe(df, partial, layer=layer, driver=driver, geometry_type="MultiPolygon")
        except Exception as e:  # noqa: BLE001 - any writer failure falls back to the next format
            print(f"  writing {driver} failed ({e}); trying the next format")
            continue
        os.replace(partial, final)
        invalid = int((~shapely.is_valid(geoms)).sum())
        print(f"  generated {n:,} features ({invalid:,} invalid bow-ties, {n_parts - n:,} extra parts) "
              f"as {driver} {final.relative_to(ROOT)} in {time.perf_counter() - t0:.1f}s")
        return str(final), layer, driver
    raise RuntimeError("could not write the synthetic input as OpenFileGDB or GPKG")


def describe_output(out: str) -> dict:
    """What a GeoParquet file holds: rows, size, CRS, invalid geometries, version, compression."""
    import pyarrow.parquet as pq
    import shapely
    from pyproj import CRS

    pf = pq.ParquetFile(out)
    geo = json.loads((pf.metadata.metadata or {}).get(b"geo", b"{}"))
    col = geo.get("primary_column")
    meta = geo.get("columns", {}).get(col, {})
    crs = CRS.from_json_dict(meta["crs"]) if meta.get("crs") else CRS.from_user_input("OGC:CRS84")
    auth = crs.to_authority()
    wkb = pf.read(columns=[col]).column(col).to_numpy(zero_copy_only=False) if col else []
    return {"rows": pf.metadata.num_rows, "bytes": os.path.getsize(out),
            "crs": ":".join(auth) if auth else crs.name, "invalid": int((~shapely.is_valid(shapely.from_wkb(wkb))).sum()),
            "version": geo.get("version", "none"), "types": meta.get("geometry_types"),
            "compression": pf.metadata.row_group(0).column(0).compression if pf.metadata.num_row_groups else "-",
            "row_groups": pf.metadata.num_row_groups, "covering": "covering" in meta}


def bench(name: str, src: str, layer: str, repeat: int) -> dict:
    import pyogrio

    features = pyogrio.read_info(src, layer=layer, force_feature_count=True)["features"]
    outs = {"old": str(OUT / f"{name}.old.parquet"), "new": str(OUT / f"{name}.new.parquet")}
    runs: dict[str, list[dict]] = {"old": [], "new": []}
    for _ in range(repeat):  # interleaved, so drift (page cache, CPU clock) hits both paths alike
        for path, fn in (("old", run_old), ("new", run_new)):
            runs[path].append(in_child(fn, src, layer, outs[path]))
    res = {"name": name, "features": features, "new_stats": runs["new"][-1],
           "load_seconds": min(r["load_seconds"] for r in runs["old"])}
    for path in ("old", "new"):
        res[path] = {"seconds": min(r["seconds"] for r in runs[path]),
                     "peak_mib": max(r["peak_mib"] for r in runs[path]),
                     "baseline_mib": max(r["baseline_mib"] for r in runs[path]), **describe_output(outs[path])}
    print(f"  {name}: old {res['old']['seconds']:.2f}s, new {res['new']['seconds']:.2f}s")
    return res


def report(results: list[dict]) -> None:
    head = ["input", "features", "old s", "new s", "old/new", "old MiB", "new MiB", "old bytes", "new bytes",
            "old rows", "new rows"]
    rows = [[r["name"], f"{r['features']:,}", f"{r['old']['seconds']:.2f}", f"{r['new']['seconds']:.2f}",
             f"{r['old']['seconds'] / r['new']['seconds']:.2f}x", f"{r['old']['peak_mib']:.0f}",
             f"{r['new']['peak_mib']:.0f}", f"{r['old']['bytes']:,}", f"{r['new']['bytes']:,}",
             f"{r['old']['rows']:,}", f"{r['new']['rows']:,}"] for r in results]
    widths = [max(len(x) for x in col) for col in zip(head, *rows)]
    print()
    for line in [head, ["-" * w for w in widths], *rows]:
        print("  ".join(x.ljust(w) if i == 0 else x.rjust(w) for i, (x, w) in enumerate(zip(line, widths))))
    print("\nold/new = old time / new time: > 1 means the new path is faster, < 1 means it is slower.")
    print("Times: best of the repeats, conversion call only, each in a fresh spawned process; old includes "
          f"duckdb.connect + LOAD spatial ({min(r['load_seconds'] for r in results):.2f}s), which dominates tiny inputs.")
    print("Peak RSS: the whole child process (interpreter + imports + conversion); after imports alone it was "
          + ", ".join(f"{r['name']} old {r['old']['baseline_mib']:.0f} / new {r['new']['baseline_mib']:.0f} MiB"
                      for r in results) + ".")
    print("\nThe ratio is not like for like. The new path does work the old one skips: reprojection to EPSG:4326, "
          "repair of invalid geometries (make_valid), antimeridian splitting, promotion to MultiPolygon, CCW ring "
          "orientation, a bbox covering column, a Hilbert sort (DuckDB, spilling to disk), ZSTD and 16k-row "
          "row groups, GeoParquet 1.1 metadata. The old path copies GDAL's features as they are.")
    print("\nPer input:")
    for r in results:
        o, n, s = r["old"], r["new"], r["new_stats"]
        print(f"  {r['name']}:")
        print(f"    old: CRS {o['crs']} (as in the source, coordinates not reprojected), {o['invalid']:,} invalid "
              f"geometries kept, types {o['types']}, GeoParquet {o['version']}, {o['compression']}, "
              f"{o['row_groups']} row group(s), bbox covering: {o['covering']}")
        print(f"    new: CRS {n['crs']}, {n['invalid']:,} invalid geometries, repaired {s['repaired']:,}, dropped "
              f"{s['dropped']:,}, split at antimeridian {s['split_antimeridian']:,}, types {n['types']}, "
              f"GeoParquet {n['version']}, {n['compression']}, {n['row_groups']} row group(s), "
              f"bbox covering: {n['covering']}")
        if o["rows"] != n["rows"]:
            print(f"    WARNING: row counts differ (old {o['rows']:,}, new {n['rows']:,}): the new path dropped "
                  f"{s['dropped']:,} null, empty or unrepairable features that the old path kept")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=int, default=100_000, help="synthetic features (default 100000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per path and input; best time wins (default 3)")
    parser.add_argument("--seed", type=int, default=42, help="seed of the synthetic input (default 42)")
    args = parser.parse_args()
    t0 = time.perf_counter()
    OUT.mkdir(parents=True, exist_ok=True)

    print(f"Inputs (cached under {OUT.relative_to(ROOT)}):")
    src, layer, driver = make_synthetic(args.features, args.seed)
    print(f"  synthetic: {driver} {Path(src).name}, layer {layer}, EPSG:5070")
    inputs = [("synthetic_padus", src, layer)]
    if SHARED.is_dir():
        for stem in ("naturalearth_lowres", "coutwildrnp"):
            inputs.append((stem, str(SHARED / stem / f"{stem}.shp"), stem))
    else:
        print(f"  skipping the real samples: {SHARED} is absent")

    print(f"Converting ({args.repeat} run(s) per path and input):")
    results = [bench(name, src, layer, args.repeat) for name, src, layer in inputs]
    report(results)
    print(f"\nTotal wall time: {time.perf_counter() - t0:.1f}s")


if __name__ == "__main__":
    main()
