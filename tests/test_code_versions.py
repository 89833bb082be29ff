"""Each asset's code version hashes exactly the catalog fields it reads: an edit stales the products it changes and
no others (Dagster's own stale resolver, on materializations recorded as a run records them)."""

from __future__ import annotations

import dagster as dg
import pytest

from cng_assets import dagster_private as P
from cng_assets.catalog import Dataset
from cng_assets.definitions import build_definitions

HEX = ("hex_plan", "hex_chunk", "hex")
RASTER = ("cog", "raster_hex_chunk", "raster_hex", "geozarr")


def entry(h3: dict | None = None, raster: dict | None = None) -> Dataset:
    return Dataset(name="cv", title="cv", source="raw/cv.gpkg", prefix="cv", datetime="2020-01-01",
                   h3={"resolution": 5, "parents": [0], "max_chunks": 2, **(h3 or {})}, raster=raster or {})


def graph(ds: Dataset, tmp_path):
    return build_definitions([ds], str(tmp_path / "data")).resolve_asset_graph()


def key(asset: str) -> dg.AssetKey:
    return dg.AssetKey(["cv", asset])


@pytest.fixture
def recorded(tmp_path):
    """geoparquet -> plan -> two chunks -> hex of layer `l`, recorded with the code and input data versions a run records."""
    before = graph(entry(), tmp_path)
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        for name, keys in (("cv__polygons", ["l"]), ("cv__features", ["l"]), ("cv__chunks", ["000", "001"])):
            instance.add_dynamic_partitions(name, keys)

        def materialize(asset: str, partition: str, deps: list[tuple[str, str]], version: str = "1"):
            tags = {"dagster/code_version": before.get(key(asset)).code_version, P.DATA_VERSION_TAG: version}
            for dep, dep_partition in deps:
                [rec] = instance.fetch_materializations(dg.AssetRecordsFilter(
                    asset_key=key(dep), asset_partitions=[dep_partition]), limit=1).records
                tags[f"dagster/input_data_version/{key(dep).to_user_string()}"] = rec.asset_materialization.tags[P.DATA_VERSION_TAG]
                tags[f"dagster/input_event_pointer/{key(dep).to_user_string()}"] = str(rec.storage_id)
            instance.report_runless_asset_event(dg.AssetMaterialization(key(asset), partition=partition, tags=tags))

        materialize("geoparquet", "l", [])
        materialize("hex_plan", "l", [("geoparquet", "l")])
        for chunk in ("000|l", "001|l"):
            materialize("hex_chunk", chunk, [("hex_plan", "l")])
        materialize("hex", "l", [("hex_chunk", "000|l"), ("hex_chunk", "001|l")])
        yield instance, materialize


def stale(instance, asset_graph) -> dict[str, list[str]]:
    """The stale causes Dagster gives each hex asset of layer `l` (its first chunk for hex_chunk)."""
    with dg.partition_loading_context(dynamic_partitions_store=instance):
        resolver = P.stale_resolver(instance, asset_graph)
        return {a: [c.reason for c in resolver.get_stale_causes(key(a), "000|l" if a == "hex_chunk" else "l")] for a in HEX}


def test_attributes_stale_the_hex_only(recorded, tmp_path):
    instance, _ = recorded
    assert stale(instance, graph(entry(), tmp_path)) == {a: [] for a in HEX}
    # consolidation alone reads h3.attributes: no plan and no chunk pod runs again for it
    assert stale(instance, graph(entry({"attributes": "none"}), tmp_path)) == {
        "hex_plan": [], "hex_chunk": [], "hex": ["has a new code version"]}


def test_chunking_stales_the_plan_then_its_chunks_never_the_hex_code(recorded, tmp_path):
    instance, materialize = recorded
    after = graph(entry({"target_cells_per_chunk": 5000}), tmp_path)
    assert stale(instance, after) == {"hex_plan": ["has a new code version"], "hex_chunk": [], "hex": []}
    materialize("hex_plan", "l", [("geoparquet", "l")], version="2")  # the new plan: its chunks follow it
    causes = stale(instance, after)
    assert causes["hex_chunk"] == ["has a new dependency data version"]
    assert "has a new code version" not in causes["hex"]  # the product's bytes never depended on the chunking


@pytest.mark.parametrize("change,stales", [
    ({"h3": {"resolution": 6, "parents": [0]}}, set(HEX)),
    ({"h3": {"containment": "overlap"}}, {"hex_chunk", "hex"}),
    ({"h3": {"max_chunks": 3}}, {"hex_plan", "raster_hex_chunk"}),
    ({"h3": {"max_cells": 10_000}}, set()),  # a budget refuses a plan; it changes no product
    ({"raster": {"target_pixels_per_chunk": 1000}}, {"raster_hex_chunk"}),
    ({"raster": {"stats": ["mean"]}}, {"raster_hex_chunk", "raster_hex"}),
    ({"raster": {"categorical": True}}, {"cog", "geozarr"}),
    ({"raster": {"resolution": 4}}, {"raster_hex_chunk", "raster_hex"}),
])
def test_each_field_changes_the_code_versions_of_the_assets_that_read_it(change, stales, tmp_path):
    before, after = graph(entry(), tmp_path), graph(entry(**change), tmp_path)
    changed = {a for a in (*HEX, *RASTER) if before.get(key(a)).code_version != after.get(key(a)).code_version}
    assert changed == stales


def test_a_field_name_that_is_not_in_the_catalog_is_refused():
    with pytest.raises(ValueError, match="h3.atributes"):
        entry().code_version("1", "h3.atributes")
