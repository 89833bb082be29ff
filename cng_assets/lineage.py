"""Which asset partitions are fresh, stale or missing, and why: what `cng-assets status` prints and what
`cng-assets reprocess --stale` rebuilds.

A partition's own status and causes are those of Dagster's stale resolver (`CachingStaleStatusResolver`, what
the UI's "stale" badge shows): a new code version, a new upstream data version, a changed dependency. The
resolver asks the instance about one partition at a time, several queries each (about 13 ms of CPU a partition:
minutes for a dataset of 60 layers x 200 chunks), so this module reads the same facts in bulk, a few queries per
asset: each partition's latest materialization (a source's latest observation), and, only where a parent was
rebuilt since a run, the parent's data version as that run saw it; and applies the resolver's rules to them
(`_Facts`, `_own_causes`; tests/test_lineage.py checks the two agree). bench/status_at_scale.py measures it.

Dagster marks only the direct child of a changed parent stale until that parent is rebuilt, and it does not look
through a partition with 100 or more upstream partitions (a layer's hex over its chunks); so this module walks the
whole downstream graph itself and marks every descendant of a stale or missing partition as one that will become
stale. Products recorded by the legacy audit carry a `cng/legacy` tag and say so.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field

import dagster as dg

from cng_assets.dagster_private import (
    DATA_VERSION_TAG,
    STALE_DEPENDENCY_LIMIT,
    AssetEventFacts,
    AssetKeyPartitionKey,
    SnapshotPartitionsStore,
    asset_event_facts,
    latest_data_versions_by_partition,
    latest_storage_ids_by_partition,
    record_facts,
)
from cng_assets.defs.stored import StorageCheck

FRESH, STALE, MISSING, WILL_BE_STALE = "fresh", "stale", "missing", "will be stale"
LEGACY_TAG = "cng/legacy"  # on materializations the audit records for products made outside the pipeline;
# their description says why they must be reprocessed
INITIAL, NULL = "INITIAL", "NULL"  # Dagster's data versions for "assumed to exist" and "never materialized"


@dataclass
class PartitionStatus:
    asset: str  # e.g. "padus_4_1/geoparquet"
    partition: str | None
    status: str
    causes: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)


def _name(key: AssetKeyPartitionKey) -> str:
    name = "/".join(key.asset_key.path)
    return f"{name}[{key.partition_key}]" if key.partition_key else name


def _cause(what: str, reason: str, dependency: AssetKeyPartitionKey | None = None) -> str:
    return f"{what}: {reason}" + (f" ({_name(dependency)})" if dependency else "")


CODE, DATA, DEPENDENCIES = "new code version", "new upstream data", "dependencies changed"


def asset_status(defs: dg.Definitions, instance: dg.DagsterInstance, dataset: str | None = None) -> list[PartitionStatus]:
    """Every materializable asset partition of the dataset (all datasets when None), in graph order. A partition
    whose products are missing or changed in the storage (defs' `storage` resource) is missing or stale, whatever
    the instance recorded."""
    graph = defs.resolve_asset_graph()
    in_storage = StorageCheck(defs.resources["storage"])
    store = SnapshotPartitionsStore(instance)
    rows: dict[AssetKeyPartitionKey, PartitionStatus] = {}
    with dg.partition_loading_context(dynamic_partitions_store=store):
        facts = _Facts(instance, graph)
        for key in graph.toposorted_asset_keys:
            node = graph.get(key)
            if not node.is_materializable or (dataset and key.path[0] not in (dataset, "stac_catalog")):
                continue
            if node.is_virtual or any(graph.get(p).is_virtual for p in node.parent_keys):
                raise NotImplementedError(f"{key.to_user_string()}: virtual assets' staleness is not computed here")
            latest = facts.current(key)
            deps = _Dependencies(graph, key)
            for pk in node.partitions_def.get_partition_keys() if node.partitions_def else [None]:
                record = latest.get(pk)
                row = PartitionStatus("/".join(key.path), pk, MISSING)
                if record is not None:
                    row.causes = sorted(set(_own_causes(facts, graph, node, pk, record, deps)))
                    row.status = STALE if row.causes else FRESH
                    if legacy := _legacy(record):
                        row.status, row.causes = STALE, [f"legacy product: {legacy}", *row.causes]
                    if disagreement := in_storage(record.pins):
                        missing, why = disagreement
                        row.status, row.causes = MISSING if missing else STALE, [why, *row.causes]
                rows[AssetKeyPartitionKey(key, pk)] = row
        _propagate(graph, rows)
    return list(rows.values())


def _legacy(event: AssetEventFacts) -> str | None:
    return (event.description or "made outside the pipeline") if LEGACY_TAG in event.tags else None


def _propagate(graph, rows: dict[AssetKeyPartitionKey, PartitionStatus]) -> None:
    """The whole downstream graph of anything stale or missing will be rebuilt after it (rows are in graph
    order, so a child's status is settled before its own children are visited)."""
    upstream: dict[AssetKeyPartitionKey, set[str]] = defaultdict(set)
    children = _Children(graph)
    for ak, row in rows.items():
        if row.status in (STALE, MISSING, WILL_BE_STALE):
            for child in children(ak):
                c = rows.get(child)
                if c is not None and c.status == FRESH:
                    c.status = WILL_BE_STALE
                if c is not None and c.status == WILL_BE_STALE:
                    upstream[child].add(f"upstream {_name(ak)} is {row.status}")
    for child, causes in upstream.items():
        rows[child].causes = sorted(causes)


class _Children:
    """`graph.get_children_partitions`, with each child asset's partitions mapped once per distinct answer: where
    a child depends on one dimension of the parent's key alone (a chunk x layer key -> the layer's hex), once per
    value of that dimension rather than once per chunk."""

    def __init__(self, graph):
        self.graph = graph
        self._edges: dict[dg.AssetKey, list[tuple[dg.AssetKey, bool, str | None]]] = {}
        self._memo: dict[tuple, list[AssetKeyPartitionKey]] = {}

    def _children_of(self, key: dg.AssetKey) -> list[tuple[dg.AssetKey, bool, str | None]]:
        if key not in self._edges:
            parent_def, edges = self.graph.get(key).partitions_def, []
            for child in sorted(self.graph.get(key).child_keys):
                child_def, mapping = self.graph.get(child).partitions_def, self.graph.get_partition_mapping(child, key)
                by = (mapping.partition_dimension_name
                      if isinstance(mapping, dg.MultiToSingleDimensionPartitionMapping) and mapping.partition_dimension_name
                      and isinstance(parent_def, dg.MultiPartitionsDefinition) and child_def is not None
                      and not isinstance(child_def, dg.MultiPartitionsDefinition) else None)
                edges.append((child, child_def is not None, by))
            self._edges[key] = edges
        return self._edges[key]

    def __call__(self, ak: AssetKeyPartitionKey) -> list[AssetKeyPartitionKey]:
        out = []
        for child, partitioned, by in self._children_of(ak.asset_key):
            if not partitioned:
                out.append(AssetKeyPartitionKey(child, None))
                continue
            memo = (ak.asset_key, child, ak.partition_key.keys_by_dimension[by] if by else ak.partition_key)
            if memo not in self._memo:
                self._memo[memo] = [AssetKeyPartitionKey(child, k) for k in self.graph.get_child_partition_keys_of_parent(
                    ak.partition_key, ak.asset_key, child)]
            out += self._memo[memo]
        return out


class _Dependencies:
    """The resolver's `_get_partition_dependencies` for one asset: each partition's parent partitions that it
    checks (an unpartitioned parent as one; none through an edge of `STALE_DEPENDENCY_LIMIT` or more). Mapping
    12,000 chunk x layer keys one by one costs seconds, so where a partition's parents depend on one dimension of
    its key alone (`MultiToSingleDimensionPartitionMapping`: chunk x layer -> layer) each value is mapped once."""

    def __init__(self, graph, key: dg.AssetKey):
        self.graph, self.key = graph, key
        self.parents = sorted(graph.get(key).parent_keys)
        self._memo: dict[tuple, list[AssetKeyPartitionKey]] = {}
        self._by: dict[dg.AssetKey, str | None] = {}
        child_def = graph.get(key).partitions_def
        for parent in self.parents:
            mapping, parent_def = graph.get_partition_mapping(key, parent), graph.get(parent).partitions_def
            if (isinstance(mapping, dg.MultiToSingleDimensionPartitionMapping) and mapping.partition_dimension_name
                    and isinstance(child_def, dg.MultiPartitionsDefinition)
                    and parent_def is not None and not isinstance(parent_def, dg.MultiPartitionsDefinition)):
                self._by[parent] = mapping.partition_dimension_name

    def __call__(self, pk: str | None) -> list[AssetKeyPartitionKey]:
        deps = []
        for parent in self.parents:
            dim = self._by.get(parent)
            memo = (parent, pk.keys_by_dimension[dim] if dim else pk)
            if memo not in self._memo:
                self._memo[memo] = self._parent_partitions(parent, pk)
            deps += self._memo[memo]
        return deps

    def _parent_partitions(self, parent: dg.AssetKey, pk: str | None) -> list[AssetKeyPartitionKey]:
        parent_def = self.graph.get(parent).partitions_def
        if parent_def is None:
            return [AssetKeyPartitionKey(parent, None)]
        if parent == self.key and parent_def.get_num_partitions() >= STALE_DEPENDENCY_LIMIT:
            return []
        if isinstance(parent_def, dg.TimeWindowPartitionsDefinition) and isinstance(
                self.graph.get_partition_mapping(self.key, parent), dg.AllPartitionMapping):
            return []
        upstream = list(self.graph.get_parent_partition_keys_for_child(
            pk, parent, self.key).partitions_subset.get_partition_keys())
        return [AssetKeyPartitionKey(parent, u) for u in upstream] if len(upstream) < STALE_DEPENDENCY_LIMIT else []


def _data_versions_differ(previous: str | None, current: str | None) -> bool:
    """Dagster's rule: a parent recorded as INITIAL (assumed to exist) and now NULL (never materialized here) is
    not a change."""
    return not (previous == INITIAL and current == NULL) and previous != current


def _version(event: AssetEventFacts | None) -> str | None:
    return event.tags.get(DATA_VERSION_TAG) if event is not None else None


class _Facts:
    """What the resolver reads, in bulk and cached: per asset, each partition's latest event."""

    def __init__(self, instance: dg.DagsterInstance, graph):
        self.instance, self.graph = instance, graph
        self._latest: dict[tuple[dg.AssetKey, dg.DagsterEventType], dict] = {}
        self._current: dict[dg.AssetKey, dict] = {}
        self._before: dict[tuple, dict[str, str]] = {}
        self._provenance: dict[int, dg.DataProvenance | None] = {}

    def latest(self, key: dg.AssetKey, event_type: dg.DagsterEventType) -> dict[str | None, AssetEventFacts]:
        """Each partition's latest event of this type (under None for an unpartitioned asset)."""
        if (key, event_type) not in self._latest:
            out: dict[str | None, AssetEventFacts] = {}
            if self.graph.get(key).partitions_def is None:
                fetch = (self.instance.fetch_observations if event_type == dg.DagsterEventType.ASSET_OBSERVATION
                         else self.instance.fetch_materializations)
                for r in fetch(key, limit=1).records:
                    out[None] = record_facts(r)
            else:
                ids = latest_storage_ids_by_partition(self.instance, key, event_type)
                events = asset_event_facts(self.instance, key, event_type, sorted(ids.values()))
                out = {pk: events[sid] for pk, sid in ids.items() if sid in events}
            self._latest[(key, event_type)] = out
        return self._latest[(key, event_type)]

    def current(self, key: dg.AssetKey) -> dict[str | None, AssetEventFacts]:
        """The event each partition's current data version comes from: its latest materialization, or for an
        observable source asset the later of that and its latest observation."""
        if key not in self._current:
            out = self.latest(key, dg.DagsterEventType.ASSET_MATERIALIZATION)
            if self.graph.get(key).is_observable:
                out = dict(out)
                for pk, obs in self.latest(key, dg.DagsterEventType.ASSET_OBSERVATION).items():
                    if pk not in out or obs.timestamp > out[pk].timestamp:
                        out[pk] = obs
            self._current[key] = out
        return self._current[key]

    def current_version(self, dep: AssetKeyPartitionKey) -> str:
        record = self.current(dep.asset_key).get(dep.partition_key)
        if record is None:
            return INITIAL if self.graph.get(dep.asset_key).is_external else NULL
        return _version(record) or INITIAL

    def provenance(self, event: AssetEventFacts) -> dg.DataProvenance | None:
        if event.storage_id not in self._provenance:
            self._provenance[event.storage_id] = dg.DataProvenance.from_tags(event.tags)
        return self._provenance[event.storage_id]

    def user_provided(self, dep: AssetKeyPartitionKey) -> bool:
        if self.graph.get(dep.asset_key).is_external:
            return True
        record = self.current(dep.asset_key).get(dep.partition_key)
        provenance = self.provenance(record) if record is not None else None
        return provenance is not None and provenance.is_user_provided

    def updated_since(self, dep: AssetKeyPartitionKey, cursor: int | None) -> bool:
        """The resolver's `_is_dep_updated` for a partitioned parent: its latest event after the run's pointer
        has another data version than the one at the pointer."""
        if not cursor:  # the resolver compares the latest event with itself
            return False
        event_type = (dg.DagsterEventType.ASSET_OBSERVATION if self.graph.get(dep.asset_key).is_external
                      else dg.DagsterEventType.ASSET_MATERIALIZATION)
        latest = self.latest(dep.asset_key, event_type).get(dep.partition_key)
        if latest is None or latest.storage_id <= cursor:
            return False
        if (dep.asset_key, event_type, cursor) not in self._before:
            self._before[(dep.asset_key, event_type, cursor)] = latest_data_versions_by_partition(
                self.instance, dep.asset_key, event_type, before_storage_id=cursor + 1)
        previous = self._before[(dep.asset_key, event_type, cursor)].get(dep.partition_key)
        return _data_versions_differ(previous, _version(latest))


def _own_causes(facts: _Facts, graph, node, pk: str | None, record: AssetEventFacts, deps: _Dependencies):
    """The resolver's `_get_stale_causes_materialized` for a materialized partition, as text (its rules for
    virtual assets, which this project does not define, are left out: `asset_status` refuses them)."""
    provenance = facts.provenance(record)
    if provenance:
        if node.code_version and node.code_version != provenance.code_version:
            yield _cause(CODE, "has a new code version")
        for dep_key in set(provenance.input_data_versions) - set(node.parent_keys):
            yield _cause(DEPENDENCIES, f"removed dependency on {dep_key.to_user_string()}", AssetKeyPartitionKey(dep_key, None))
    for dep in deps(pk):
        dep_node = graph.get(dep.asset_key)
        if provenance:
            if not provenance.has_input_asset(dep.asset_key):
                yield _cause(DEPENDENCIES, f"has a new dependency on {dep.asset_key.to_user_string()}", dep)
            elif (_data_versions_differ(provenance.input_data_versions[dep.asset_key].value, facts.current_version(dep))
                  if dep.partition_key is None else
                  facts.updated_since(dep, provenance.input_storage_ids[dep.asset_key])):
                versioned = dep_node.code_version is not None or facts.user_provided(dep)
                yield _cause(DATA, "has a new dependency data version" if versioned
                             else "has a new dependency materialization", dep)
        elif not dep_node.is_external:
            dep_record = facts.current(dep.asset_key).get(dep.partition_key)
            if dep_record is None:
                yield _cause(DATA, "has a new input", dep)
            elif dep_record.timestamp > record.timestamp:
                yield _cause(DATA, "has a new dependency materialization", dep)
