"""Status at scale: `asset_status` (what `cng-assets status --dataset D` prints) for one dataset of 60 polygon
layers x 200 chunks with every partition materialized (12,304 rows), and ticks of the dataset's chunk-run sensor,
against the instance the CLI uses (SQLite under a DAGSTER_HOME; with `--postgres` also a throwaway PostgreSQL
server configured by k8s/instance/dagster.yaml, the production storage).

    .venv/bin/python bench/status_at_scale.py                 # SQLite: fresh + bumped, and the sensor ticks
    .venv/bin/python bench/status_at_scale.py --postgres      # and the same on PostgreSQL (its fill: minutes)
    .venv/bin/python bench/status_at_scale.py --profile --scenarios fresh --no-ticks   # cProfile of one call

The instance is filled without runs, one event at a time through the public API (`report_runless_asset_event`;
about 2 minutes for SQLite, made once under bench/out/status/ and copied for each run, since a run adds events):
the `source` observations (a data version per layer), then every partition of every materializable asset in
graph order, each materialization with the tags a run gives it (code version, data version, each parent's input
data version and event pointer) and, for a chunk, a chunk run's metadata. A layer's plan uses its first n
chunks (n differs by layer); the rest are recorded as the chunk sensor records them: empty, without a run or
provenance tags. Two scenarios are timed:

  fresh    as filled: every row fresh
  bumped   geoparquet's code version bumped (as tests/test_lineage.py does): every geoparquet partition stale,
           everything below it "will be stale", so every row has causes

then one tick of `scale__chunk_runs` with no cursor, and one after a new hex_plan materialization (200 chunks)
for one layer, through tests/ticks.py (which also validates each run request's config against its job).
Figures are wall time (time.perf_counter) and CPU time of this process (time.process_time); the PostgreSQL
server's own CPU is in the wall time only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# not bench/ itself: bench/pmtiles.py would shadow the pmtiles package
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

OUT = ROOT / "bench" / "out" / "status"
FILLED = "cng-bench-filled.json"  # in a filled home: what it holds
FILL_VERSION = 2  # bump when fill() changes


def dataset():
    from cng_assets.catalog import Dataset

    return Dataset(name="scale", title="scale", source="s3://b/raw/scale.gdb", prefix="scale", datetime="2020-01-01")


def inventory(n_layers: int):
    from cng_assets.transforms.layers import POLYGON, Inventory, Layer

    return Inventory(layers=[Layer(name=f"Layer {i}", slug=f"layer_{i:02d}", kind=POLYGON, geometry_type="MultiPolygon",
                                   features=10_000 + i, crs="EPSG:4326", fields=[("name", "String")])
                             for i in range(n_layers)], domains=[], skipped=[])


def planned(i: int, max_chunks: int) -> int:
    """How many chunks layer i's plan uses: spread over 1..max_chunks, the first layer all of them."""
    return max_chunks if i == 0 else 1 + (i * 53) % max_chunks


def _digest(*parts: str) -> str:
    return hashlib.sha256("".join(parts).encode()).hexdigest()


def fill(instance, defs, ds, n_layers: int) -> dict:
    """Every partition materialized (see the module docstring); returns counts and the time taken."""
    import dagster as dg

    from cng_assets.dagster_private import DATA_VERSION_TAG, partition_loading_context
    from cng_assets.defs.partitions import empty_chunks, partition_keys
    from cng_assets.defs.sources import observations, source_key
    from cng_assets.transforms.hex.chunk import ChunkStats

    t0 = time.perf_counter()
    inv = inventory(n_layers)
    for name, keys in partition_keys(ds, inv, observed=True).items():
        if keys:
            instance.add_dynamic_partitions(name, keys)
    versions = {k: f"etag-{k}-1" for k in inv.table_keys() + inv.keys("polygon", "other", "raster")}
    for event in observations(ds, versions, versions):
        instance.report_runless_asset_event(event)

    graph = defs.resolve_asset_graph()
    src = source_key(ds)
    data_version: dict[tuple, str] = {(src, k): v for k, v in versions.items()}
    latest_sid = {src: instance.fetch_observations(src, limit=1).records[0].storage_id}
    n = {slug: planned(i, ds.h3.max_chunks) for i, slug in enumerate(inv.keys("polygon"))}
    events = 0
    with partition_loading_context(dynamic_partitions_store=instance):
        for key in graph.toposorted_asset_keys:
            node = graph.get(key)
            if not node.is_materializable:
                continue
            pks = node.partitions_def.get_partition_keys() if node.partitions_def else [None]
            for pk in pks:
                if key.path[-1] == "hex_chunk":
                    layer, c = pk.keys_by_dimension["layer"], int(pk.keys_by_dimension["chunk"])
                    if c >= n[layer]:
                        if c == n[layer]:  # the sensor records a layer's unplanned chunks together
                            for event in empty_chunks(ds, "hex_chunk", layer, n[layer]):
                                instance.report_runless_asset_event(event)
                                events += 1
                        data_version[(key, str(pk))] = None
                        continue
                tags = {"dagster/code_version": node.code_version}
                inputs = []
                for parent in sorted(node.parent_keys, key=str):
                    if graph.get(parent).partitions_def is None:
                        v = data_version.get((parent, None))
                    else:
                        up = list(graph.get_parent_partition_keys_for_child(
                            str(pk) if pk else None, parent, key).partitions_subset.get_partition_keys())
                        v = (data_version.get((parent, up[0])) if len(up) == 1
                             else _digest(*sorted(str(data_version.get((parent, u))) for u in up)) if up else None)
                    v = v or "NULL"
                    inputs.append(v)
                    tags[f"dagster/input_data_version/{parent.to_user_string()}"] = v
                    tags[f"dagster/input_event_pointer/{parent.to_user_string()}"] = str(latest_sid.get(parent, "NULL"))
                tags[DATA_VERSION_TAG] = _digest(node.code_version or "", *inputs)
                metadata = {"uri": f"s3://b/{key.to_user_string()}/{pk}", "bytes": 123456}
                if key.path[-1] == "hex_chunk":  # what a chunk run records
                    metadata = {**ChunkStats(features=900, parts=950, cells=1000, groups=3, seconds=12.5,
                                             peak_rss_mib=812.0).to_dict(),
                                "empty": False, "units": 10, "memory_gib": 8, "estimated_cells": 1200}
                if key.path[-1] == "hex_plan":
                    metadata = {"chunks": n[pk], "units": 10 * n[pk], "plan_digest": _digest(pk)[:16]}
                instance.report_runless_asset_event(dg.AssetMaterialization(
                    asset_key=key, partition=pk, tags=tags, metadata=metadata))
                data_version[(key, str(pk) if pk else None)] = tags[DATA_VERSION_TAG]
                events += 1
            records = instance.fetch_materializations(key, limit=1).records
            if records:
                latest_sid[key] = records[0].storage_id
    return {"events": events + len(versions), "seconds": time.perf_counter() - t0, "layers": n_layers,
            "planned_chunks": sum(n.values())}


def timed(fn, *args):
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn(*args)
    return out, time.perf_counter() - w0, time.process_time() - c0


def time_status(label: str, defs, instance, ds, profile: bool) -> None:
    from cng_assets.lineage import asset_status

    if profile:
        import cProfile
        import pstats

        prof = cProfile.Profile()
        prof.enable()
    rows, wall, cpu = timed(asset_status, defs, instance, ds.name)
    if profile:
        prof.disable()
        pstats.Stats(prof).sort_stats("cumulative").print_stats(30)
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.status] = counts.get(r.status, 0) + 1
    print(f"  status {label:<7} {len(rows):6d} rows  {wall:7.2f} s wall  {cpu:7.2f} s CPU  "
          f"{len(rows) / wall:8.0f} rows/s  {len(rows) / max(cpu, 1e-9):8.0f} rows/CPU-s   "
          + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))


def bumped_defs(ds):
    from cng_assets.definitions import build_definitions
    from cng_assets.transforms import geoparquet

    old = geoparquet.VERSION
    geoparquet.VERSION = old + ".bumped"
    try:
        return build_definitions([ds])
    finally:
        geoparquet.VERSION = old


def time_ticks(defs, instance, ds) -> None:
    import dagster as dg

    from tests.ticks import tick

    name = f"{ds.name}__chunk_runs"
    first, wall, cpu = timed(tick, defs, instance, name, None)
    print(f"  tick {name} first (no cursor)        {wall:7.2f} s wall  {cpu:7.2f} s CPU  "
          f"{len(first.run_requests or [])} runs")
    instance.report_runless_asset_event(dg.AssetMaterialization(
        asset_key=[ds.name, "hex_plan"], partition="layer_00", metadata={"chunks": 200},
        tags={"dagster/code_version": defs.resolve_asset_graph().get(dg.AssetKey([ds.name, "hex_plan"])).code_version}))
    second, wall, cpu = timed(tick, defs, instance, name, first.cursor)
    print(f"  tick {name} after a new plan         {wall:7.2f} s wall  {cpu:7.2f} s CPU  "
          f"{len(second.run_requests or [])} runs, {len(second.asset_events or [])} empty chunks")


def filled_home(args) -> Path:
    """The SQLite home filled for this many layers, made once under bench/out/status/ (on tmpfs while filling,
    where SQLite's commits cost no fsync) and copied for each run, since a run adds events."""
    import shutil

    from cng_assets.definitions import build_definitions
    from cng_assets.runner import project_instance

    cache = OUT / f"sqlite-{args.layers}layers-v{FILL_VERSION}"
    if args.refill and cache.exists():
        shutil.rmtree(cache)
    if not cache.exists():
        ds = dataset()
        scratch = Path(tempfile.mkdtemp(prefix="cng-status-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None))
        instance = project_instance(scratch)
        filled = fill(instance, build_definitions([ds]), ds, args.layers)
        instance.dispose()
        (scratch / FILLED).write_text(json.dumps(filled))
        cache.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(scratch, cache.with_suffix(".tmp"), dirs_exist_ok=True)
        cache.with_suffix(".tmp").rename(cache)
        shutil.rmtree(scratch, ignore_errors=True)
        print(f"SQLite: filled {cache} in {filled['seconds']:.1f} s ({filled['events']} events, {filled['layers']} layers, "
              f"{filled['planned_chunks']} planned chunks, the rest empty)")
    return cache


def run(home: Path, args, label: str) -> None:
    from cng_assets.definitions import build_definitions
    from cng_assets.runner import project_instance

    ds = dataset()
    defs = build_definitions([ds])
    instance = project_instance(home)
    marker = home / FILLED
    if marker.exists():
        filled = json.loads(marker.read_text())
        print(f"{label}: {filled['events']} events, {filled['layers']} layers, {filled['planned_chunks']} planned chunks")
    else:
        filled = fill(instance, defs, ds, args.layers)
        marker.write_text(json.dumps(filled))
        print(f"{label}: filled in {filled['seconds']:.1f} s ({filled['events']} events, {filled['layers']} layers, "
              f"{filled['planned_chunks']} planned chunks, the rest empty)")
    if "fresh" in args.scenarios:
        time_status("fresh", defs, instance, ds, args.profile)
    if "bumped" in args.scenarios:
        time_status("bumped", bumped_defs(ds), instance, ds, False)
    if args.ticks:
        time_ticks(defs, instance, ds)
    instance.dispose()


def main() -> None:
    import shutil

    parser = argparse.ArgumentParser()
    parser.add_argument("--layers", type=int, default=60)
    parser.add_argument("--postgres", action="store_true", help="also on a throwaway PostgreSQL server")
    parser.add_argument("--refill", action="store_true", help="fill the cached SQLite home again")
    parser.add_argument("--scenarios", default="fresh,bumped")
    parser.add_argument("--no-ticks", dest="ticks", action="store_false")
    parser.add_argument("--profile", action="store_true", help="cProfile the fresh status call")
    args = parser.parse_args()
    args.scenarios = args.scenarios.split(",")
    os.environ.setdefault("CNG_STORAGE", "local")

    cache = filled_home(args)
    with tempfile.TemporaryDirectory() as work:
        home = Path(work) / "home"
        shutil.copytree(cache, home)
        run(home, args, "SQLite")
    if args.postgres:
        from tests.servers import Postgres

        folder = Path(tempfile.mkdtemp(prefix="cng-pg-"))  # outside pytest's folders, as tests/conftest.py says
        server = Postgres(folder / "pg").start()
        try:
            import psycopg2  # dagster-postgres' driver

            conn = psycopg2.connect(server.url)  # no fsync per commit: the fill's 12,000 commits, not the reads
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("ALTER SYSTEM SET synchronous_commit = off")
                cur.execute("SELECT pg_reload_conf()")
            conn.close()
            home = folder / "home"
            home.mkdir()
            shutil.copy(ROOT / "k8s" / "instance" / "dagster.yaml", home / "dagster.yaml")
            os.environ.update({"DAGSTER_PG_HOST": "127.0.0.1", "DAGSTER_PG_PORT": str(server.port),
                               "DAGSTER_PG_USER": "postgres", "DAGSTER_PG_PASSWORD": "trust-auth", "DAGSTER_PG_DB": "postgres"})
            run(home, args, "PostgreSQL")
        finally:
            server.stop()
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
