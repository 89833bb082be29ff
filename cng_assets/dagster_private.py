"""Every private Dagster API the project uses, in one module, each where no public one does the job (checked
against dagster 1.13). tests/test_dagster_private.py holds a contract test per name, so an upgrade that breaks
one fails a test named for it instead of a sensor in production."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

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
from dagster._core.execution.backfill import BulkActionStatus, PartitionBackfill
from dagster._core.instance.types import CachingDynamicPartitionsLoader
from dagster._core.storage.event_log.schema import SqlEventLogStorageTable
from dagster._core.storage.event_log.sql_event_log import SqlEventLogStorage
from dagster._core.storage.sqlalchemy_compat import db_result, db_select
from dagster._core.storage.tags import BACKFILL_ID_TAG
from dagster._time import get_current_datetime

__all__ = ["BACKFILL_TAG", "DATA_VERSION_TAG", "STALE_DEPENDENCY_LIMIT", "AssetEventFacts", "AssetKeyPartitionKey",
           "SnapshotPartitionsStore", "StaleStatus", "add_backfill", "asset_event_facts", "backfill_run_request",
           "latest_data_versions_by_partition", "latest_storage_ids_by_partition", "observe", "record_backfill",
           "stale_resolver"]

BACKFILL_TAG = BACKFILL_ID_TAG  # the run tag that puts a run in a backfill

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


def record_backfill(instance: dg.DagsterInstance, asset_graph, backfill_id: str, started: float,
                    succeeded: set[AssetKeyPartitionKey], failed: set[AssetKeyPartitionKey],
                    skipped: set[AssetKeyPartitionKey], tags: dict[str, str], title: str,
                    description: str | None = None) -> None:
    """Record runs already made in-process (each tagged `dagster/backfill: <backfill_id>`) as one finished
    backfill, so the UI groups them as it groups a daemon's backfill: its targets, what materialized, what failed
    or was skipped after a failure, and its runs. Recorded once they are done, so no backfill daemon picks it up."""
    targets = succeeded | failed | skipped
    backfill = PartitionBackfill.from_asset_graph_subset(
        backfill_id=backfill_id, backfill_timestamp=started, tags=tags, dynamic_partitions_store=instance,
        asset_graph_subset=AssetGraphSubset.from_asset_partition_set(targets, asset_graph), title=title,
        description=description, run_config=None)

    def subset(keys):
        return AssetGraphSubset.from_asset_partition_set(keys, asset_graph)

    data = backfill.asset_backfill_data._replace(
        requested_subset=subset(succeeded | failed), materialized_subset=subset(succeeded),
        failed_and_downstream_subset=subset(failed | skipped), requested_runs_for_target_roots=True)
    status = BulkActionStatus.COMPLETED_FAILED if failed else BulkActionStatus.COMPLETED_SUCCESS
    instance.add_backfill(backfill.with_asset_backfill_data(data, instance, asset_graph).with_status(status)
                          .with_end_timestamp(time.time()))


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
    """A dynamic-partitions store (for `dg.partition_loading_context`) that reads each partitions set once and
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


# The instance config of one SQLite event log for every run. Dagster's default opens a new SQLite database per run
# (its schema made, each event committed to its own file): about a quarter of a small step's time in-process. The
# class is configured by its private module path, which has no public alias.
CONSOLIDATED_EVENT_LOG = {"module": "dagster._core.storage.event_log", "class": "ConsolidatedSqliteEventLogStorage"}


PINNED_PREFIX = "cng/"  # JSON metadata entries under this prefix are read with the event's facts (defs/stored.py)


@dataclass(frozen=True)
class AssetEventFacts:
    """What staleness needs of one materialization or observation: not its metadata, but for the JSON entries
    labelled `PINNED_PREFIX...` (what it left in storage)."""

    storage_id: int
    timestamp: float
    tags: Mapping[str, str]
    description: str | None
    pins: Mapping[str, dict] = field(default_factory=dict)


def record_facts(record: dg.EventLogRecord) -> AssetEventFacts:
    """The facts of an event fetched through the public records API."""
    event = record.asset_materialization or record.asset_observation
    pins = {k: v.data for k, v in event.metadata.items()
            if k.startswith(PINNED_PREFIX) and isinstance(v, dg.JsonMetadataValue)}
    return AssetEventFacts(record.storage_id, record.timestamp, dict(event.tags or {}), event.description, pins)


# how each kind of asset event is stored (serdes' JSON of EventLogEntry > DagsterEvent > its event data)
_EVENT_DATA = {dg.DagsterEventType.ASSET_MATERIALIZATION: ("StepMaterializationData", "materialization", "AssetMaterialization"),
               dg.DagsterEventType.ASSET_OBSERVATION: ("AssetObservationData", "asset_observation", "AssetObservation")}
_BATCH = 500  # storage ids per query


def asset_event_facts(instance: dg.DagsterInstance, asset_key: dg.AssetKey, event_type: dg.DagsterEventType,
                      storage_ids: Sequence[int]) -> dict[int, AssetEventFacts]:
    """These materializations (or observations) of the asset, by storage id. On Dagster's SQL event logs (SQLite,
    PostgreSQL) they are read from each event's stored JSON without rebuilding the event and its metadata, which
    is most of what `fetch_materializations` costs (about 0.2 ms of CPU an event: 2 s for 12,000 chunks) and
    which staleness does not need. On any other event log, and for an event stored in a shape this does not know,
    through the public records API."""
    out: dict[int, AssetEventFacts] = {}
    storage = instance.event_log_storage
    if isinstance(storage, SqlEventLogStorage):
        table = SqlEventLogStorageTable
        for i in range(0, len(storage_ids), _BATCH):
            query = db_select([table.c.id, table.c.event]).where(table.c.id.in_(list(storage_ids[i:i + _BATCH])))
            with storage.index_connection() as conn, db_result(conn, query) as result:
                rows = result.fetchall()
            for storage_id, text in rows:
                if (facts := _facts_from_json(storage_id, text, event_type)) is not None:
                    out[storage_id] = facts
    missing = [sid for sid in storage_ids if sid not in out]
    fetch = instance.fetch_observations if event_type == dg.DagsterEventType.ASSET_OBSERVATION else instance.fetch_materializations
    for i in range(0, len(missing), _BATCH):
        batch = missing[i:i + _BATCH]
        for r in fetch(dg.AssetRecordsFilter(asset_key=asset_key, storage_ids=batch), limit=len(batch)).records:
            out[r.storage_id] = record_facts(r)
    return out


def _facts_from_json(storage_id: int, text: str, event_type: dg.DagsterEventType) -> AssetEventFacts | None:
    data_class, field_name, event_class = _EVENT_DATA[event_type]
    try:
        entry = json.loads(text)
        data = entry["dagster_event"]["event_specific_data"]
        event = data[field_name]
        tags, description, timestamp = event.get("tags") or {}, event.get("description"), entry["timestamp"]
        # metadata is stored as serdes' legacy entries: {"label", "entry_data": {"__class__", "data" | "value" ...}}
        pins = {m["label"]: m["entry_data"]["data"] for m in event.get("metadata_entries") or []
                if m["label"].startswith(PINNED_PREFIX) and m["entry_data"]["__class__"] == "JsonMetadataEntryData"}
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    if (entry.get("__class__") != "EventLogEntry" or data.get("__class__") != data_class
            or event.get("__class__") != event_class
            or not isinstance(tags, dict) or not all(isinstance(v, str) for v in tags.values())
            or not isinstance(timestamp, (int, float)) or not isinstance(description, (str, type(None)))):
        return None
    return AssetEventFacts(storage_id, float(timestamp), tags, description, pins)
