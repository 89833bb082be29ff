"""Every private Dagster API the project uses, in one module, each where no public one does the job (checked
against dagster 1.13). tests/test_dagster_private.py holds a contract test per name, so an upgrade that breaks
one fails a test named for it instead of a sensor in production."""

from __future__ import annotations

import time
import uuid

import dagster as dg
from dagster._core.asset_graph_view.asset_graph_view import AssetGraphView, TemporalContext
from dagster._core.definitions.assets.graph.asset_graph_subset import AssetGraphSubset
from dagster._core.definitions.data_version import DATA_VERSION_TAG, CachingStaleStatusResolver, StaleStatus
from dagster._core.definitions.events import AssetKeyPartitionKey
from dagster._core.definitions.observe import observe  # runs an observable source's observation in-process
from dagster._core.definitions.partitions.context import partition_loading_context
from dagster._core.execution.backfill import PartitionBackfill
from dagster._time import get_current_datetime

__all__ = ["DATA_VERSION_TAG", "AssetKeyPartitionKey", "StaleStatus", "add_backfill", "backfill_run_request",
           "observe", "partition_loading_context", "stale_resolver"]


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
