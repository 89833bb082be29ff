"""Which asset partitions are fresh, stale or missing, and why: what `cng-assets status` prints and what
`cng-assets reprocess --stale` rebuilds.

Dagster's own resolver gives each partition's direct causes (a new code version, a new upstream data version).
It marks only the direct child of a changed parent stale until that parent is rebuilt, and it does not look
through a partition with more than 100 upstream partitions (a layer's hex over its chunks); so this module
walks the whole downstream graph itself and marks every descendant of a stale or missing partition as one that
will become stale. Products recorded by the legacy audit carry a `cng/legacy` tag and say so.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import dagster as dg

from cng_assets.dagster_private import AssetKeyPartitionKey, StaleStatus, partition_loading_context, stale_resolver

FRESH, STALE, MISSING, WILL_BE_STALE = "fresh", "stale", "missing", "will be stale"
LEGACY_TAG = "cng/legacy"  # on materializations the audit records for products made outside the pipeline;
# their description says why they must be reprocessed


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


def _cause(cause) -> str:
    what = {"CODE": "new code version", "DATA": "new upstream data", "DEPENDENCIES": "dependencies changed"}.get(
        cause.category.value, cause.category.value.lower())
    return f"{what}: {cause.reason}" + (f" ({_name(cause.dependency)})" if cause.dependency else "")


def asset_status(defs: dg.Definitions, instance: dg.DagsterInstance, dataset: str | None = None) -> list[PartitionStatus]:
    """Every materializable asset partition of the dataset (all datasets when None), in graph order."""
    graph = defs.resolve_asset_graph()
    resolver = stale_resolver(instance, graph)
    rows: dict[AssetKeyPartitionKey, PartitionStatus] = {}
    with partition_loading_context(dynamic_partitions_store=instance):
        for key in graph.toposorted_asset_keys:
            node = graph.get(key)
            if not node.is_materializable or (dataset and key.path[0] not in (dataset, "stac_catalog")):
                continue
            partitions = node.partitions_def.get_partition_keys() if node.partitions_def else [None]
            for pk in partitions:
                ak = AssetKeyPartitionKey(key, pk)
                status = resolver.get_status(key, pk)
                row = PartitionStatus("/".join(key.path), pk, status.value.lower())
                if status == StaleStatus.STALE:
                    row.causes = sorted({_cause(c) for c in resolver.get_stale_causes(key, pk)})
                if status != StaleStatus.MISSING and (legacy := _legacy(instance, key, pk)):
                    row.status, row.causes = STALE, [f"legacy product: {legacy}", *row.causes]
                rows[ak] = row
        # The whole downstream graph of anything stale or missing will be rebuilt after it.
        for ak, row in list(rows.items()):
            if row.status in (STALE, MISSING, WILL_BE_STALE):
                for child in graph.get_children_partitions(ak.asset_key, ak.partition_key):
                    c = rows.get(child)
                    if c is not None and c.status == FRESH:
                        c.status = WILL_BE_STALE
                    if c is not None and c.status == WILL_BE_STALE:
                        c.causes = sorted({*c.causes, f"upstream {_name(ak)} is {row.status}"})
    return list(rows.values())


def _legacy(instance: dg.DagsterInstance, key: dg.AssetKey, partition: str | None) -> str | None:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition] if partition else None), limit=1).records
    if not records:
        return None
    m = records[0].asset_materialization
    return (m.description or "made outside the pipeline") if m and m.tags and LEGACY_TAG in m.tags else None
