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
    with dg.partition_loading_context(dynamic_partitions_store=instance):
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
    with dg.partition_loading_context(dynamic_partitions_store=instance):
        resolver = P.stale_resolver(instance, graph)
        assert resolver.get_status(down.key, "a") == P.StaleStatus.FRESH
        assert resolver.get_status(down.key, "b") == P.StaleStatus.MISSING

    @dg.asset(partitions_def=parts, deps=[up], code_version="2", name="down")
    def bumped() -> None: ...

    graph2 = dg.Definitions(assets=[up, bumped]).resolve_asset_graph()
    with dg.partition_loading_context(dynamic_partitions_store=instance):
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


def test_stale_dependency_limit_is_where_the_resolver_stops_looking_upstream(tmp_path):
    """An unpartitioned asset over a partitioned one: a new upstream data version makes it stale below the limit,
    and is not looked at from the limit on (cng_assets.lineage follows the same rule)."""
    many = dg.DynamicPartitionsDefinition(name="many")

    @dg.asset(partitions_def=many, code_version="1")
    def wide() -> None: ...

    @dg.asset(deps=[wide], code_version="1")
    def summary() -> None: ...

    graph = dg.Definitions(assets=[wide, summary]).resolve_asset_graph()
    for n, looked_at in ((P.STALE_DEPENDENCY_LIMIT - 1, True), (P.STALE_DEPENDENCY_LIMIT, False)):
        (tmp_path / str(n)).mkdir()
        with dg.instance_for_test(temp_dir=str(tmp_path / str(n))) as instance:
            keys = [f"k{i}" for i in range(n)]
            instance.add_dynamic_partitions("many", keys)
            for k in keys:
                instance.report_runless_asset_event(dg.AssetMaterialization(wide.key, partition=k, tags={P.DATA_VERSION_TAG: "1"}))
            pointer = instance.fetch_materializations(wide.key, limit=1).records[0].storage_id
            instance.report_runless_asset_event(dg.AssetMaterialization(summary.key, tags={
                "dagster/code_version": "1", P.DATA_VERSION_TAG: "s", "dagster/input_data_version/wide": "1",
                "dagster/input_event_pointer/wide": str(pointer)}))
            with dg.partition_loading_context(dynamic_partitions_store=instance):
                assert P.stale_resolver(instance, graph).get_status(summary.key) == P.StaleStatus.FRESH
            instance.report_runless_asset_event(dg.AssetMaterialization(wide.key, partition="k0", tags={P.DATA_VERSION_TAG: "2"}))
            with dg.partition_loading_context(dynamic_partitions_store=instance):
                status = P.stale_resolver(instance, graph).get_status(summary.key)
            assert status == (P.StaleStatus.STALE if looked_at else P.StaleStatus.FRESH), n


def test_latest_storage_ids_by_partition_are_each_partitions_latest_event(world):
    _, instance = world
    for pk in ("a", "b", "a"):
        instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=up.key, partition=pk))
    instance.report_runless_asset_event(dg.AssetObservation(asset_key=up.key, partition="b"))
    newest = {r.partition_key: r.storage_id for r in reversed(instance.fetch_materializations(up.key, limit=10).records)}
    assert P.latest_storage_ids_by_partition(instance, up.key, dg.DagsterEventType.ASSET_MATERIALIZATION) == newest
    [obs] = instance.fetch_observations(up.key, limit=10).records
    assert P.latest_storage_ids_by_partition(instance, up.key, dg.DagsterEventType.ASSET_OBSERVATION) == {"b": obs.storage_id}


def test_latest_data_versions_by_partition_before_a_storage_id(world):
    _, instance = world
    for pk, version in (("a", "1"), ("b", "1"), ("a", "2")):
        instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=up.key, partition=pk,
                                                                    tags={P.DATA_VERSION_TAG: version}))
    instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=up.key, partition="b"))  # no version
    first = min(r.storage_id for r in instance.fetch_materializations(up.key, limit=10).records)
    kind = dg.DagsterEventType.ASSET_MATERIALIZATION
    assert P.latest_data_versions_by_partition(instance, up.key, kind) == {"a": "2"}  # b's latest has none
    assert P.latest_data_versions_by_partition(instance, up.key, kind, before_storage_id=first + 1) == {"a": "1"}
    instance.report_runless_asset_event(dg.AssetObservation(asset_key=up.key, partition="b", tags={P.DATA_VERSION_TAG: "o"}))
    assert P.latest_data_versions_by_partition(instance, up.key, dg.DagsterEventType.ASSET_OBSERVATION) == {"b": "o"}


def test_snapshot_partitions_store_reads_each_set_once_and_backs_partition_loading(world):
    defs, instance = world
    store = P.SnapshotPartitionsStore(instance)
    with dg.partition_loading_context(dynamic_partitions_store=store):
        assert parts.get_partition_keys() == ["a", "b"] and parts.has_partition_key("a")
        instance.add_dynamic_partitions("layers", ["c"])  # after the read: not seen
        assert not parts.has_partition_key("c") and parts.get_partition_keys() == ["a", "b"]
        graph = defs.resolve_asset_graph()
        assert {k.partition_key for k in graph.get_children_partitions(up.key, "a")} == {"a"}
    assert not store.has_dynamic_partition("layers", "c") and store.get_existing_dynamic_partitions("layers", ["a", "c"]) == {"a"}
    assert P.SnapshotPartitionsStore(instance).has_dynamic_partition("layers", "c")


def _check_asset_event_facts(instance, monkeypatch, key: dg.AssetKey) -> None:
    instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=key, partition="a", description="why",
                                                                tags={P.DATA_VERSION_TAG: "1", "cng/legacy": "audit"},
                                                                metadata={"rows": 3, "uri": dg.MetadataValue.path("/x"),
                                                                          "cng/stored": {"keys": ["k"], "fingerprint": "f"},
                                                                          "cng/note": "text, not pinned"}))
    instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=key, partition="b"))  # no tags
    instance.report_runless_asset_event(dg.AssetObservation(asset_key=key, partition="b", tags={P.DATA_VERSION_TAG: "o"}))
    kinds = {dg.DagsterEventType.ASSET_MATERIALIZATION: instance.fetch_materializations,
             dg.DagsterEventType.ASSET_OBSERVATION: instance.fetch_observations}
    for kind, fetch in kinds.items():
        records = fetch(key, limit=10).records
        expected = {r.storage_id: P.record_facts(r) for r in records}
        if kind == dg.DagsterEventType.ASSET_MATERIALIZATION:  # the JSON entries under cng/ are read, no other
            assert [expected[r.storage_id].pins for r in records[:2]] == [{}, {"cng/stored": {"keys": ["k"], "fingerprint": "f"}}]
        with monkeypatch.context() as m:  # read from the stored JSON, not through the records API
            m.setattr(type(instance), "fetch_materializations", None)
            m.setattr(type(instance), "fetch_observations", None)
            assert P.asset_event_facts(instance, key, kind, sorted(expected)) == expected
        with monkeypatch.context() as m:  # an event stored in a shape the reader does not know: the records API
            m.setattr(P, "_facts_from_json", lambda storage_id, text, event_type: None)
            assert P.asset_event_facts(instance, key, kind, sorted(expected)) == expected


def test_consolidated_event_log_config_loads_that_storage(tmp_path):
    config = {"event_log_storage": {**P.CONSOLIDATED_EVENT_LOG, "config": {"base_dir": str(tmp_path / "history")}}}
    with dg.instance_for_test(temp_dir=str(tmp_path), overrides=config) as instance:
        assert type(instance.event_log_storage).__name__ == "ConsolidatedSqliteEventLogStorage"
        instance.add_dynamic_partitions("layers", ["a"])
        dg.materialize([up], instance=instance, partition_key="a")
        assert len(instance.fetch_materializations(up.key, limit=5).records) == 1
    assert list((tmp_path / "history").glob("*.db"))  # one database for every run's events


def test_asset_event_facts_read_from_the_stored_json_are_the_records_facts(world, monkeypatch):
    _, instance = world
    dg.materialize([up], instance=instance, partition_key="a")  # a run's materialization, with its provenance tags
    _check_asset_event_facts(instance, monkeypatch, up.key)
    latest = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=up.key, asset_partitions=["a"]), limit=2).records
    run_event = P.asset_event_facts(instance, up.key, dg.DagsterEventType.ASSET_MATERIALIZATION, [latest[1].storage_id])
    assert run_event[latest[1].storage_id].tags["dagster/code_version"] == "1"


def test_asset_event_facts_on_postgres(postgres_server, monkeypatch, tmp_path):
    storage = {"storage": {"postgres": {"postgres_url": postgres_server.url}}}
    with dg.instance_for_test(temp_dir=str(tmp_path), overrides=storage) as instance:
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        _check_asset_event_facts(instance, monkeypatch, dg.AssetKey(["dagster_private_contract", f"up_{tmp_path.name}"]))
