"""Contract tests for the private Dagster APIs in cng_assets/dagster_private.py: one per name, so a Dagster
upgrade that changes one fails here, named, rather than in a sensor or `cng-assets status`."""

from __future__ import annotations

import dagster as dg
import pytest

from cng_assets import dagster_private as P

parts = dg.DynamicPartitionsDefinition(name="layers")


@dg.asset(partitions_def=parts, code_version="1")
def up() -> None: ...


@dg.asset(partitions_def=parts, deps=[up], code_version="1")
def down() -> None: ...


@pytest.fixture
def world(tmp_path):
    defs = dg.Definitions(assets=[up, down])
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        instance.add_dynamic_partitions("layers", ["a", "b"])
        yield defs, instance


def targets():
    return {P.AssetKeyPartitionKey(up.key, "a"), P.AssetKeyPartitionKey(down.key, "a")}


def test_backfill_run_request_is_a_backfill_of_exactly_those_partitions(world):
    defs, instance = world
    with P.partition_loading_context(dynamic_partitions_store=instance):
        request = P.backfill_run_request(targets(), defs.resolve_asset_graph(), {"t": "1"})
    assert request.requires_backfill_daemon() and request.tags == {"t": "1"}
    assert set(request.asset_graph_subset.iterate_asset_partitions()) == targets()


def test_add_backfill_is_listed_by_the_instance_with_its_targets(world):
    defs, instance = world
    backfill_id = P.add_backfill(instance, defs.resolve_asset_graph(), targets(), {"cng/reason": "x"}, "title")
    backfill = instance.get_backfill(backfill_id)
    assert backfill.title == "title" and backfill.tags == {"cng/reason": "x"}
    assert set(backfill.asset_backfill_data.target_subset.iterate_asset_partitions()) == targets()


def test_stale_resolver_sees_missing_fresh_and_code_changes(world):
    defs, instance = world
    dg.materialize([up, down], instance=instance, partition_key="a")
    graph = defs.resolve_asset_graph()
    with P.partition_loading_context(dynamic_partitions_store=instance):
        resolver = P.stale_resolver(instance, graph)
        assert resolver.get_status(down.key, "a") == P.StaleStatus.FRESH
        assert resolver.get_status(down.key, "b") == P.StaleStatus.MISSING

    @dg.asset(partitions_def=parts, deps=[up], code_version="2", name="down")
    def bumped() -> None: ...

    graph2 = dg.Definitions(assets=[up, bumped]).resolve_asset_graph()
    with P.partition_loading_context(dynamic_partitions_store=instance):
        assert P.stale_resolver(instance, graph2).get_status(down.key, "a") == P.StaleStatus.STALE


def test_data_version_tag_is_what_materializations_carry(world):
    _, instance = world
    dg.materialize([up], instance=instance, partition_key="a")
    record = instance.fetch_materializations(up.key, limit=1).records[0]
    assert P.DATA_VERSION_TAG == "dagster/data_version" and P.DATA_VERSION_TAG in record.asset_materialization.tags


def test_observe_records_an_observable_sources_data_version(tmp_path):
    @dg.observable_source_asset
    def src():
        return dg.DataVersion("v1")

    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        P.observe([src], instance=instance)
        obs = instance.fetch_observations(src.key, limit=1).records[0].asset_observation
        assert obs.tags[P.DATA_VERSION_TAG] == "v1"
