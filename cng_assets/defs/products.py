"""Where each product of a dataset goes (keys inside its bucket), and the facts every materialization records."""

from __future__ import annotations

import json
import warnings
from contextlib import contextmanager

import dagster as dg
import pyarrow.parquet as pq

from cng_assets.catalog import Dataset
from cng_assets.errors import CngInputError
from cng_assets.storage import ProductStorage
from cng_assets.transforms import facts, folders, layers, layout
from cng_assets.transforms.layers import Inventory, Layer


def key(ds: Dataset, relative: str) -> str:
    """A product's key inside the dataset's bucket: its place in the layout (transforms/layout.py), under the
    dataset's prefix."""
    return f"{ds.prefix}/{relative}"


def load_inventory(storage: ProductStorage, ds: Dataset) -> Inventory:
    if not storage.exists(ds.bucket, key(ds, layout.INVENTORY)):
        raise dg.Failure(f"dataset {ds.name!r} has no layer inventory yet",
                         metadata={"what to do": f"materialize {ds.name}/layers first"})
    with storage.open(ds.bucket, key(ds, layout.INVENTORY)) as f:
        return Inventory.from_json(json.load(f))


def _files(storage: ProductStorage, ds: Dataset, files: dict[str, str] | None) -> dict[str, str] | None:
    """A folder source's files (listed here unless the caller has them); None for a single-file source."""
    return storage.source_files(ds.source) if files is None and folders.may_be_folder(ds.source) else files


def discover(storage: ProductStorage, ds: Dataset, files: dict[str, str] | None = None) -> Inventory:
    """The source's layers as the catalog selects them, read now (not from the stored inventory)."""
    return layers.discover(storage.source_path(ds.source), ds.include, ds.exclude, storage.gdal_options(),
                           _files(storage, ds, files))


def check_opens(storage: ProductStorage, ds: Dataset) -> None:
    """The source opens and its include patterns name layers (CngInputError saying why not), without reading any
    layer: what `cng-assets run` checks before it makes a Dagster run."""
    layers.open_source(storage.source_path(ds.source), ds.include, storage.gdal_options(), _files(storage, ds, None))


def layer_source(storage: ProductStorage, ds: Dataset, layer: Layer) -> str:
    """What GDAL opens to read this layer."""
    return layers.layer_path(storage.source_path(ds.source), layer)


def parquet_metadata(storage: ProductStorage, ds: Dataset, key: str, domains: dict[str, str] | None = None) -> dict:
    """Facts read back from the written file's footer, not from the writer's own counts; the columns with the
    catalog's descriptions (the UI's Columns tab)."""
    with storage.open(ds.bucket, key) as f:
        meta = pq.ParquetFile(f).metadata
        schema = meta.schema.to_arrow_schema()
    return {
        "uri": dg.MetadataValue.path(storage.uri(ds.bucket, key)),
        "bytes": storage.size(ds.bucket, key),
        "dagster/row_count": meta.num_rows,
        "row_groups": meta.num_row_groups,
        "dagster/column_schema": dg.TableSchema(columns=[
            dg.TableColumn(name=c.name, type=c.type, description=" ".join(filter(None, [
                c.description, c.domain and f"(coded values: domain {c.domain})",
                c.source_name and f"(source column {c.source_name!r}, renamed)"])) or None)
            for c in facts.column_facts(schema, ds, domains or {})]),
    }


@contextmanager
def input_errors(ds: Dataset, layer: str | None = None):
    """Bad input fails the step with the specific message (dataset, layer, feature, what to do), no traceback."""
    try:
        yield
    except CngInputError as e:
        e.where(dataset=ds.name, layer=layer)
        raise dg.Failure(description=str(e), allow_retries=False) from None


def blocking_check_specs(asset: list[str], partitions: dg.PartitionsDefinition, checks: dict[str, str]) -> list:
    """Blocking checks of a partitioned product, recorded per partition (the UI's check history of a partition)."""
    with warnings.catch_warnings():  # a partitions_def on a check spec is a preview feature in dagster 1.13
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return [dg.AssetCheckSpec(name, asset=asset, description=d, blocking=True, partitions_def=partitions)
                for name, d in checks.items()]


def check_results(found) -> list[dg.AssetCheckResult]:
    """Check results from the transforms' checks (`HexCheck`: name, passed, detail)."""
    return [dg.AssetCheckResult(check_name=c.name, passed=c.passed, metadata=c.detail) for c in found]


def blocking_checks(checks: list[dg.AssetCheckResult], what: str):
    """Blocking checks on a staged product. If one failed, every result is recorded (the UI shows them on the
    partition) and the step fails inside the publishing block, so the staged product is discarded and the
    previous version stays. Use as `yield from blocking_checks(...)` inside `storage.publish...`."""
    failed = [c for c in checks if not c.passed]
    if failed:
        yield from checks
        raise dg.Failure(f"{what}: check {', '.join(c.check_name for c in failed)} failed; the previous version is kept",
                         metadata={c.check_name: dict(c.metadata) for c in failed})
