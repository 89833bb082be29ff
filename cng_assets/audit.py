"""`cng-assets audit`: find products made outside the pipeline, say what must be reprocessed and why, and record
them in Dagster as materializations with a legacy code version, so the UI and `cng-assets status` show them as
stale and `cng-assets reprocess --stale` rebuilds them."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

from cng_assets.catalog import Dataset
from cng_assets.defs.partitions import feature_partitions, polygon_partitions, raster_partitions, table_partitions
from cng_assets.lineage import LEGACY_TAG
from cng_assets.storage import ProductStorage
from cng_assets.transforms import layout, legacy

LEGACY_CODE_VERSION = "legacy"
OWN = (layout.INVENTORY, layout.STAC_DIR + "/", "hex/_plan/", "hex/_chunks/")  # the pipeline's bookkeeping


@dataclass
class Finding:
    product: legacy.Product
    dataset: str | None = None
    asset: str | None = None
    partition: str | None = None
    recorded: bool = False
    note: str = ""

    def to_json(self) -> dict:
        return {**self.product.to_json(), "dataset": self.dataset, "asset": self.asset, "partition": self.partition,
                "recorded": self.recorded, "note": self.note}


@dataclass
class AuditReport:
    bucket: str | None
    prefix: str
    findings: list[Finding] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"bucket": self.bucket, "prefix": self.prefix, "products": [f.to_json() for f in self.findings],
                "to_reprocess": sum(1 for f in self.findings if f.product.findings or f.recorded)}

    def markdown(self) -> str:
        lines = [f"# Legacy product inventory: `{self.bucket or ''}/{self.prefix}`", "",
                 f"{len(self.findings)} products made outside the pipeline; "
                 f"{self.to_json()['to_reprocess']} must be reprocessed.", "",
                 "| product | kind | asset | why it must be reprocessed |", "|---|---|---|---|"]
        for f in self.findings:
            asset = f"`{f.dataset}/{f.asset}[{f.partition}]`" if f.asset else f.note or "not in the catalog"
            why = "; ".join(f.product.findings) or "made outside the pipeline"
            lines.append(f"| `{f.product.key}` | {f.product.kind} | {asset} | {why} |")
        return "\n".join(lines) + "\n"


def _map(instance: dg.DagsterInstance, ds: Dataset, key: str, kind: str) -> tuple[str, str] | None:
    """(asset, partition) of the pipeline product a legacy key stands for, by the product layout. Hex of a layer
    the pipeline knows as a raster is raster hex."""
    rel = key[len(ds.prefix) + 1:]
    if kind == legacy.HEX and rel.startswith("hex/"):
        slug = rel.removeprefix("hex/").split("/")[0].removesuffix(".parquet")
        return ("raster_hex" if slug in instance.get_dynamic_partitions(raster_partitions(ds).name) else "hex"), slug
    if kind == legacy.GEO and "/" not in rel:
        return "geoparquet", rel.removesuffix(".parquet")
    if kind == legacy.RASTER and "/" not in rel:
        return "cog", rel.rsplit(".", 1)[0]
    if rel.startswith("lookup/") and rel.endswith(".parquet"):
        return "table", rel.removeprefix("lookup/").removesuffix(".parquet")
    return None


def audit(storage: ProductStorage, instance: dg.DagsterInstance, datasets: list[Dataset], bucket: str | None,
          prefix: str, record: bool = True) -> AuditReport:
    ours = [ds for ds in datasets
            if ds.bucket == bucket and (prefix.startswith(ds.prefix) or ds.prefix.startswith(prefix.rstrip("/")))]
    keys = [o.key for o in storage.list_objects(bucket, prefix)
            if not any(o.key.startswith(f"{ds.prefix}/{own}") or o.key == f"{ds.prefix}/{own}" for ds in ours for own in OWN)]
    expected = (10, 9, 8, 0)
    if len(ours) == 1:
        expected = (ours[0].h3.resolution, *ours[0].h3.parents)
    report = AuditReport(bucket, prefix)
    products = legacy.inspect(keys, lambda k: storage.open(bucket, k), lambda k: storage.gdal_path(bucket, k),
                              storage.gdal_options(), expected)
    for product in products:
        finding = Finding(product)
        ds = next((d for d in ours if product.key.startswith(d.prefix + "/")), None)
        target = _map(instance, ds, product.key, product.kind) if ds else None
        if target is None:
            finding.note = "no pipeline asset for it yet" if ds else "not under a catalog dataset's prefix"
            report.findings.append(finding)
            continue
        finding.dataset, (finding.asset, finding.partition) = ds.name, target
        key = dg.AssetKey([ds.name, finding.asset])
        latest = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key, asset_partitions=[finding.partition]),
                                                 limit=1).records
        if latest and LEGACY_TAG not in (latest[0].asset_materialization.tags or {}):
            continue  # the pipeline made it: not legacy
        if record:
            _record(instance, ds, key, finding, storage.uri(bucket, product.key))
        report.findings.append(finding)
    return report


def _record(instance: dg.DagsterInstance, ds: Dataset, key: dg.AssetKey, finding: Finding, uri: str) -> None:
    parts = {"hex": polygon_partitions(ds), "geoparquet": feature_partitions(ds), "table": table_partitions(ds),
             "raster_hex": raster_partitions(ds), "cog": raster_partitions(ds)}[finding.asset]
    if finding.partition not in instance.get_dynamic_partitions(parts.name):
        instance.add_dynamic_partitions(parts.name, [finding.partition])
    why = "; ".join(finding.product.findings) or "made outside the pipeline"
    instance.report_runless_asset_event(dg.AssetMaterialization(
        asset_key=key, partition=finding.partition, description=why,
        metadata={"uri": dg.MetadataValue.path(uri), "findings": finding.product.findings,
                  "details": dg.MetadataValue.json(finding.product.details)},
        tags={"dagster/code_version": LEGACY_CODE_VERSION, LEGACY_TAG: "true"}))
    finding.recorded = True


def write_report(report: AuditReport, out_dir: str | Path) -> tuple[Path, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md, js = out / "legacy-inventory.md", out / "legacy-inventory.json"
    md.write_text(report.markdown())
    js.write_text(json.dumps(report.to_json(), indent=1, default=str))
    return md, js
