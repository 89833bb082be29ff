"""Every private Dagster API the project uses, in one module, each where no public one does the job (checked
against dagster 1.13). tests/test_dagster_private.py holds a contract test per name, so an upgrade that breaks
one fails a test named for it instead of a sensor in production."""

from __future__ import annotations

import time
import uuid

import dagster as dg
from dagster._core.asset_graph_view.asset_graph_view import AssetGraphView, TemporalContext
from dagster._core.definitions.assets.graph.asset_graph_subset import AssetGraphSubset
from dagster._core.definitions.data_version import (
    DATA_VERSION_TAG,
    SKIP_PARTITION_DATA_VERSION_DEPENDENCY_THRESHOLD,
    CachingStaleStatusResolver,
    StaleStatus,
)
from dagster._core.definitions.events import AssetKeyPartitionKey
from dagster._core.definitions.observe import observe  # runs an observable source's observation in-process
from dagster._core.definitions.partitions.context import partition_loading_context
from dagster._core.execution.backfill import PartitionBackfill
from dagster._core.instance.types import CachingDynamicPartitionsLoader
from dagster._time import get_current_datetime

__all__ = ["DATA_VERSION_TAG", "STALE_DEPENDENCY_LIMIT", "AssetKeyPartitionKey", "SnapshotPartitionsStore", "StaleStatus",
           "add_backfill", "backfill_run_request", "latest_data_versions_by_partition",
           "latest_storage_ids_by_partition", "observe", "partition_loading_context", "stale_resolver"]

# Dagster's stale resolver neither checks nor propagates through an edge where a partition has this many upstream
# partitions or more (a layer's hex over its 200 chunks); runs record such an input as if unpartitioned.
STALE_DEPENDENCY_LIMIT = SKIP_PARTITION_DATA_VERSION_DEPENDENCY_THRESHOLD


def backfill_run_request(targets: set[AssetKeyPartitionKey], asset_graph, tags: dict[str, str]) -> dg.RunRequest:
    """A sensor's RunRequest for one backfill of exactly these partitions (`RunRequest.for_asset_graph_subset` is
    public; the subset type it takes is not)."""
    return dg.RunRequest.for_asset_graph_subset(AssetGraphSubset.from_asset_partition_set(targets, asset_graph), tags=tags)


def add_backfill(instance: dg.DagsterInstance, asset_graph, targets: set[AssetKeyPartitionKey], tags: dict[str, str],
                 title: str) -> str:
    """Submit a backfill of exactly these partitions, as the UI's "Materialize selected" does (the GraphQL
    mutation takes ranges per asset, not a set of partitions of many assets)."""
    backfill_id = uuid.uuid4().hex[:8]
    instance.add_backfill(PartitionBackfill.from_asset_graph_subset(
        backfill_id=backfill_id, backfill_timestamp=time.time(), tags=tags, dynamic_partitions_store=instance,
        asset_graph_subset=AssetGraphSubset.from_asset_partition_set(targets, asset_graph), title=title,
        description=None, run_config=None))
    return backfill_id


def stale_resolver(instance: dg.DagsterInstance, asset_graph) -> CachingStaleStatusResolver:
    """Dagster's own stale-status resolver (what the UI's "stale" badge uses); no public API exposes it."""
    view = AssetGraphView(temporal_context=TemporalContext(effective_dt=get_current_datetime(), last_event_id=None),
                          instance=instance, asset_graph=asset_graph)
    return CachingStaleStatusResolver(instance, asset_graph, loading_context=view)


def latest_storage_ids_by_partition(instance: dg.DagsterInstance, asset_key: dg.AssetKey,
                                    event_type: dg.DagsterEventType) -> dict[str, int]:
    """The storage id of every partition's latest event of this type (materialization or observation), in one
    query: what Dagster's own partition-status cache reads (the instance method is not in the public API)."""
    return dict(instance.get_latest_storage_id_by_partition(asset_key, event_type))


def latest_data_versions_by_partition(instance: dg.DagsterInstance, asset_key: dg.AssetKey, event_type: dg.DagsterEventType,
                                      before_storage_id: int | None = None) -> dict[str, str]:
    """The data version of every partition's latest event of this type (of those with a storage id below
    `before_storage_id`, when given), in one query; a partition whose latest event has no data version is left
    out. The event log indexes only a few tags, the data version among them, so this is the one tag it can give
    for every partition at once (`EventLogStorage.get_latest_tags_by_partition`)."""
    tags = instance.event_log_storage.get_latest_tags_by_partition(asset_key, event_type, [DATA_VERSION_TAG],
                                                                   before_cursor=before_storage_id)
    return {pk: t[DATA_VERSION_TAG] for pk, t in tags.items() if DATA_VERSION_TAG in t}


class SnapshotPartitionsStore(CachingDynamicPartitionsLoader):
    """A dynamic-partitions store (for `partition_loading_context`) that reads each partitions set once and
    answers every later question from that read: mapping 12,000 chunk x layer partitions through Dagster's
    partition mappings otherwise asks the instance about every key."""

    def __init__(self, instance: dg.DagsterInstance):
        super().__init__(instance)
        self._sets: dict[str, frozenset[str]] = {}

    def _keys(self, partitions_def_name: str) -> frozenset[str]:
        if partitions_def_name not in self._sets:
            self._sets[partitions_def_name] = frozenset(self.get_dynamic_partitions(partitions_def_name))
        return self._sets[partitions_def_name]

    def has_dynamic_partition(self, partitions_def_name: str, partition_key: str) -> bool:
        return partition_key in self._keys(partitions_def_name)

    def get_existing_dynamic_partitions(self, partitions_def_name: str, partition_keys) -> set[str]:
        keys = self._keys(partitions_def_name)
        return {k for k in partition_keys if k in keys}
