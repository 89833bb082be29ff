"""Staleness you can see: `asset_status` (what `cng-assets status` prints) names exactly the right partitions and
causes after a code version bump and after a partial re-upload of a FileGDB source, and walks the whole
downstream graph. Each partition's own status and causes are also checked against Dagster's own stale resolver,
asked one partition at a time, which `asset_status` replaces with a few bulk queries per asset."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import dagster as dg
import pyogrio
import pytest

from cng_assets.catalog import Dataset
from cng_assets.dagster_private import StaleStatus, observe, stale_resolver
from cng_assets.definitions import definitions_with
from cng_assets.defs import stored
from cng_assets.demo import LAYERS, build_demo_source
from cng_assets.lineage import FRESH, MISSING, STALE, WILL_BE_STALE, asset_status
from cng_assets.runner import materialize_dataset
from cng_assets.transforms import geoparquet
from tests.conftest import write_gdb

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


def copy_changed(new: Path, old: Path) -> list[str]:
    """An upload that sends only files whose bytes differ (as `aws s3 sync` does)."""
    changed = [p.name for p in sorted(new.iterdir()) if not (old / p.name).exists() or (old / p.name).read_bytes() != p.read_bytes()]
    for name in changed:
        shutil.copy2(new / name, old / name)
    return changed


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The dataset materialized once, kept as a snapshot: the source FileGDB, the products and the instance."""
    root = tmp_path_factory.mktemp("lineage")
    work = root / "world"
    src = build_demo_source(root / "src" / "demo.gpkg")
    frames = {n.replace(" ", "_"): pyogrio.read_dataframe(src, layer=n) for n in LAYERS if n != "Country labels"}
    gdb = write_gdb(work / "raw" / "demo.gdb", frames)
    ds = Dataset(name="lin", title="lineage", source=str(gdb), prefix="lin", datetime="2020-01-01",
                 h3={"resolution": 2, "parents": [0]}, columns={"name": "Country name"})
    (work / "home").mkdir()
    with dg.instance_for_test(temp_dir=str(work / "home")) as instance:
        report = materialize_dataset(ds, instance, str(work / "data"))
        assert not report.failed, report.failed
    shutil.copytree(work, root / "snapshot", symlinks=True)  # copy2: the files' times, so their ETags, are kept
    return ds, frames, work, root / "snapshot"


@pytest.fixture
def world(built, tmp_path):
    """Each test gets the materialized world as it was built, at the same paths (the source's path is in its
    catalog entry and the instance's records), so a test may change the source or the instance."""
    ds, frames, work, snapshot = built
    shutil.rmtree(work)
    shutil.copytree(snapshot, work, symlinks=True)
    with dg.instance_for_test(temp_dir=str(work / "home")) as instance:
        yield ds, instance, str(work / "data"), frames, work / "raw" / "demo.gdb", tmp_path


def by_key(rows) -> dict:
    return {(r.asset.split("/")[-1], r.partition): r for r in rows}


def _dagster_cause(cause) -> str:
    what = {"CODE": "new code version", "DATA": "new upstream data", "DEPENDENCIES": "dependencies changed"}[cause.category.value]
    dep = cause.dependency
    name = "/".join(dep.asset_key.path) + (f"[{dep.partition_key}]" if dep and dep.partition_key else "") if dep else ""
    return f"{what}: {cause.reason}" + (f" ({name})" if dep else "")


def assert_as_dagster_says(rows, defs, instance, dataset: str) -> None:
    """Every partition's own status and causes are what Dagster's resolver gives it (partition by partition);
    only the walk downstream may turn a fresh one into "will be stale"."""
    graph = defs.resolve_asset_graph()
    resolver = stale_resolver(instance, graph)
    mine = {(r.asset, r.partition): r for r in rows}
    with dg.partition_loading_context(dynamic_partitions_store=instance):
        for key in graph.toposorted_asset_keys:
            node = graph.get(key)
            if not node.is_materializable or key.path[0] not in (dataset, "stac_catalog"):
                continue
            for pk in node.partitions_def.get_partition_keys() if node.partitions_def else [None]:
                row, status = mine.pop(("/".join(key.path), pk)), resolver.get_status(key, pk)
                causes = sorted({_dagster_cause(c) for c in resolver.get_stale_causes(key, pk)}) if status == StaleStatus.STALE else []
                # causes the resolver does not know: a legacy product, and the storage disagreeing with the instance
                ours = [c for c in row.causes if c.startswith(("legacy product: ", stored.CAUSE))]
                if status == StaleStatus.FRESH and not ours:
                    assert row.status in (FRESH, WILL_BE_STALE) and (row.status == FRESH) == (not row.causes), row
                else:
                    gone = any(c.startswith(stored.CAUSE + "not there") for c in ours)
                    expected = "missing" if gone else "stale" if ours else status.value.lower()
                    assert (row.status, sorted(row.causes)) == (expected, sorted(ours + causes)), row
    assert not mine, mine


def test_everything_fresh_after_a_run(world):
    ds, instance, data, *_ = world
    defs = definitions_with(ds, data)
    rows = asset_status(defs, instance, ds.name)
    assert rows and {r.status for r in rows} == {FRESH}, [r for r in rows if r.status != FRESH]
    assert_as_dagster_says(rows, defs, instance, ds.name)


def test_the_ui_columns_tab_has_the_catalogs_descriptions(world):
    ds, instance, *_ = world
    [record] = instance.fetch_materializations(
        dg.AssetRecordsFilter(dg.AssetKey([ds.name, "geoparquet"]), asset_partitions=["countries"]), limit=1).records
    schema = record.asset_materialization.metadata["dagster/column_schema"].value
    columns = {c.name: c for c in schema.columns}
    assert columns["name"].description == "Country name"  # the catalog's
    assert columns["_cng_fid"].description.startswith("Row id: the feature's 1-based position")  # ours
    assert columns["geometry"].type == "WKB" and columns["pop_est"].description is None


def test_the_ui_shows_small_maps_inline_and_the_readme_preview_with_its_maps(world):
    ds, instance, data, *_ = world
    [thumb] = instance.fetch_materializations(
        dg.AssetRecordsFilter(dg.AssetKey([ds.name, "thumbnail"]), asset_partitions=["countries"]), limit=1).records
    meta = thumb.asset_materialization.metadata
    inline = meta["map"].value
    assert inline.startswith("![countries](data:image/png;base64,") and len(inline) < 8_000  # a few KB in the event
    assert meta["bytes"].value > 3 * len(inline)  # the product is the full-size PNG
    docs = instance.get_latest_materialization_event(dg.AssetKey([ds.name, "docs"])).asset_materialization
    preview = docs.metadata["preview"].value
    readme = (Path(data) / ds.prefix / "README.md").read_text()
    images = re.findall(r"!\[[^\]]*\]\(([^)]{0,40})", readme)  # relative image links would not resolve in the UI
    assert images and all(href.endswith(".png") for href in images)
    assert re.findall(r"!\[[^\]]*\]\(data:image/png;base64,", preview) and len(re.findall(r"!\[", preview)) == len(images)
    assert not re.search(r"!\[[^\]]*\]\([^d]", preview)


def test_code_version_bump_is_stale_and_everything_below_will_be(world, monkeypatch):
    ds, instance, data, *_ = world
    monkeypatch.setattr(geoparquet, "VERSION", geoparquet.VERSION + ".bumped")
    defs = definitions_with(ds, data)
    rows = asset_status(defs, instance, ds.name)
    assert_as_dagster_says(rows, defs, instance, ds.name)
    s = by_key(rows)
    for layer in ("countries", "continents"):
        assert s[("geoparquet", layer)].status == STALE
        assert any(c.startswith("new code version") for c in s[("geoparquet", layer)].causes)
        for below in ("pmtiles", "thumbnail", "hex_plan", "hex"):
            assert s[(below, layer)].status == WILL_BE_STALE, below
        assert s[("hex", layer)].causes  # reached through every chunk, past Dagster's 100-partition limit
    assert s[("table", "continent_lookup")].status == FRESH
    assert s[("stac", None)].status == WILL_BE_STALE and s[("docs", None)].status == WILL_BE_STALE


def test_partial_reupload_makes_exactly_that_layer_stale(world):
    ds, instance, data, frames, gdb, tmp_path = world
    v2 = write_gdb(tmp_path / "v2" / "demo.gdb", {**frames, "Countries": frames["Countries"].iloc[:-2]})
    changed = copy_changed(v2, gdb)
    assert changed and all(not n.startswith("a0000000a.") for n in changed)  # Continents' table untouched
    defs = definitions_with(ds, data)
    source = next(a for a in defs.assets if getattr(a, "key", None) == dg.AssetKey(["lin", "source"]))
    observe([source], instance=instance, resources=defs.resources)  # the source asset's own observation
    rows = asset_status(defs, instance, ds.name)
    assert_as_dagster_says(rows, defs, instance, ds.name)
    s = by_key(rows)
    assert s[("geoparquet", "countries")].status == STALE
    assert any("new upstream data" in c and "lin/source[countries]" in c for c in s[("geoparquet", "countries")].causes)
    assert s[("hex", "countries")].status == WILL_BE_STALE
    assert s[("geoparquet", "continents")].status == FRESH and s[("hex", "continents")].status == FRESH
    assert s[("table", "continent_lookup")].status == FRESH
    # discovery reads the source again: it may hold new layers (the storage says so; Dagster's resolver does not)
    assert s[("layers", None)].status == STALE and s[("layers", None)].causes[0].startswith("storage: the source")
    # a layer added to the source: its partitions appear as missing once discovery has run
    instance.add_dynamic_partitions("lin__features", ["lakes"])
    rows = asset_status(defs, instance, ds.name)
    assert_as_dagster_says(rows, defs, instance, ds.name)
    s = by_key(rows)
    assert s[("geoparquet", "lakes")].status == MISSING and s[("pmtiles", "lakes")].status == MISSING
    assert s[("stac", None)].status == WILL_BE_STALE  # the dataset docs will list the new layer


def test_reprocess_stale_submits_one_backfill_and_run_now_makes_it_fresh(world):
    from cng_assets.reprocess import run_now, select_targets, submit_backfill

    ds, instance, data, frames, gdb, tmp_path = world
    v2 = write_gdb(tmp_path / "v2" / "demo.gdb", {**frames, "Countries": frames["Countries"].iloc[:-2]})
    copy_changed(v2, gdb)
    defs = definitions_with(ds, data)
    source = next(a for a in defs.assets if getattr(a, "key", None) == dg.AssetKey(["lin", "source"]))
    observe([source], instance=instance, resources=defs.resources)
    targets = select_targets(defs, instance, ds.name, None, stale_only=True)
    names = {(t.asset_key.path[-1], str(t.partition_key) if t.partition_key else None) for t in targets}
    assert ("geoparquet", "countries") in names and ("hex", "countries") in names and ("stac", None) in names
    assert not any(p == "continents" or (p and p.endswith("|continents")) for _, p in names)
    only = select_targets(defs, instance, ds.name, ["continents"], stale_only=False)
    assert {p for _, p in ((t.asset_key.path[-1], t.partition_key) for t in only) if p and "|" not in str(p)} == {"continents"}

    backfill_id = submit_backfill(defs, {ds.name: ds}, instance, targets, "stale")
    [backfill] = [b for b in instance.get_backfills() if b.backfill_id == backfill_id]
    submitted = {(k.asset_key.path[-1], str(k.partition_key) if k.partition_key else None)
                 for k in backfill.asset_backfill_data.target_subset.iterate_asset_partitions()}
    # the new plan's chunks come from the chunk sensor (with the new plan's count), its hex by automation
    assert ("hex_plan", "countries") in submitted and ("geoparquet", "countries") in submitted
    assert not any(a in ("hex_chunk", "hex") for a, _ in submitted), submitted

    results = run_now(defs, {ds.name: ds}, instance, targets)
    assert all(ok for _, ok in results), [t for t, ok in results if not ok]
    rows = asset_status(defs, instance, ds.name)
    assert {r.status for r in rows} == {FRESH}, [(r.asset, r.partition, r.status, r.causes) for r in rows if r.status != FRESH]
    assert_as_dagster_says(rows, defs, instance, ds.name)
