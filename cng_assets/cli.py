"""`cng-assets`: the command line for people and scripts, backed by the same Dagster definitions as the UI."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from cng_assets.catalog import FROM_CLI, MAX_CELLS, Dataset, H3Settings, RasterSettings, check_crs, load_catalog, validation_problems
from cng_assets.errors import CngInputError

console = Console(highlight=False, soft_wrap=True)  # messages stay whole lines, for grep and logs


def _fail(message: str, code: int = 2):
    console.print(f"[red]error:[/red] {escape(message)}")
    sys.exit(code)


def _csv_ints(value: str | None) -> list[int] | None:
    if value is None:
        return None
    try:
        return [int(x) for x in value.split(",") if x.strip()]
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of integers") from None


class _Commands(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except CngInputError as e:  # e.g. a bad catalog entry, met wherever the definitions load: its message only
            _fail(str(e))


@click.group(cls=_Commands)
def main():
    """Turn raw geospatial sources into cloud-native products with Dagster assets."""


MAX_CELLS_OPTION = click.option("--max-cells", type=click.IntRange(1), default=None,
                                help=f"Budget per layer: a hex plan estimating more cells is refused (default {MAX_CELLS:,}).")
CRS_OPTION = click.option("--crs", default=None, help="CRS of layers whose source declares none (e.g. EPSG:4269).")


def _checked_crs(crs: str | None) -> str | None:
    try:
        return crs and check_crs(crs)
    except ValueError as e:
        _fail(f"--crs: {e}")


@main.command()
@click.argument("source")
@CRS_OPTION
def layers(source: str, crs: str | None):
    """Print the layer table of SOURCE (any GDAL vector source: path, .zip, /vsizip/, https://, s3://)."""
    from cng_assets.transforms import layers as layer_discovery
    from cng_assets.transforms.sources import gdal_path

    crs = _checked_crs(crs)
    try:
        inv = layer_discovery.discover(gdal_path(source, base_dir=Path.cwd()))
    except CngInputError as e:
        _fail(str(e))
    table = Table("layer", "slug", "kind", "geometry", "features", "CRS")
    for x in inv.layers:
        declared = x.crs or (f"{crs} (--crs)" if crs and x.kind != "table" else "")
        table.add_row(x.name, x.slug, x.what, x.geometry_label, str(x.features), declared)
    Console(width=200).print(table)
    if inv.domains:
        console.print(f"{len(inv.domains)} coded-value domains (lookup tables): "
                      + ", ".join(d.name for d in inv.domains))
    if not crs and any(x.kind != "table" and not x.crs for x in inv.layers):
        console.print("Some layers declare no CRS: if you know it, pass it with --crs (e.g. --crs EPSG:4269).")


def _materialize(ds: Dataset, out: str, rebuild: bool) -> None:
    from cng_assets.defs.products import check_opens
    from cng_assets.defs.resources import storage_from_env
    from cng_assets.interrupts import Interrupted
    from cng_assets.runner import materialize_dataset, project_instance

    data_dir = str(Path(out).resolve())
    storage = storage_from_env(data_dir)
    try:
        if not ds.source_builder:  # a source that cannot be opened fails here, before any Dagster run is made
            try:
                check_opens(storage, ds)
            except CngInputError as e:
                _fail(str(e.where(dataset=ds.name)))
        instance = project_instance()
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console, disable=not console.is_terminal) as progress:
            task = progress.add_task(f"{ds.name}: discovering layers", total=None)

            def on_step(step, nth, of, ok):  # counted per asset: [2/3] geoparquet[countries]
                progress.update(task, completed=nth, total=of, description=escape(f"{ds.name}: {step}"))
                if not console.is_terminal:
                    console.print(escape(f"[{nth}/{of}] {step} {'ok' if ok else 'FAILED'}"))

            report = materialize_dataset(ds, instance, data_dir, on_step, rebuild=rebuild)
    except (Interrupted, KeyboardInterrupt) as e:  # KeyboardInterrupt: before the runner watched signals
        stop = e if isinstance(e, Interrupted) else Interrupted(signal.SIGINT, 0, None)
        console.print(escape(stop.message))
        sys.exit(stop.exit_code)
    published = _print_products(ds, storage)
    for step, note in report.notes.items():
        console.print(escape(f"note: {step}: {note}"))
    console.print(f"\nProducts are in {storage.uri(ds.bucket, ds.prefix)}" if published else "\nNo products were published.")
    console.print(f"Open the UI: DAGSTER_HOME={os.environ['DAGSTER_HOME']} CNG_DATA_DIR={data_dir} "
                  f".venv/bin/dg dev   (or `make ui`), then http://127.0.0.1:3000")
    if report.failed:
        console.print(f"\n[red]{len(report.failed)} of {len(report.failed) + len(report.succeeded)} steps failed:[/red]")
        for step, message in report.failed:
            console.print(escape(f"  {step}: {message}"))
        if report.skipped:
            console.print(f"{len(report.skipped)} later steps of those layers were skipped.")
        sys.exit(1)
    console.print(f"{len(report.succeeded)} steps succeeded" + (
        f"; {len(report.fresh)} already fresh, not run (--rebuild runs them too)." if report.fresh else ".")
        + (f" In the UI: Runs > backfill {report.backfill_id}." if report.backfill_id else ""))


def _print_products(ds: Dataset, storage) -> bool:
    """One row per product; a folder product (h0=<cell>/ partitions, a .zarr store) is one row. False if none."""
    sizes: dict[str, list[int]] = {}
    for o in storage.list_objects(ds.bucket, ds.prefix + "/"):
        rel = o.key[len(ds.prefix) + 1:]
        name = rel.split("/h0=")[0] + "/" if "/h0=" in rel else rel.split(".zarr/")[0] + ".zarr/" if ".zarr/" in rel else rel
        sizes.setdefault(name, []).append(o.size)
    table = Table("product", "files", "bytes")
    for name, files in sizes.items():
        table.add_row(name, str(len(files)), f"{sum(files):,}")
    if sizes:
        console.print(table)
    return bool(sizes)


@main.command()
@click.option("--source", required=True, help="GDAL vector source (path, .zip, /vsizip/, https://, s3://).")
@click.option("--dataset", "name", required=True, help="Dataset name: lowercase letters, digits, underscores.")
@click.option("--out", default="data", show_default=True, help="Product folder.")
@click.option("--layers", "only", default=None, help="Comma-separated layer names or slugs (default: all).")
@click.option("--resolution", type=int, default=None,
              help="H3 resolution (default 10; for rasters, the one that follows the pixel size).")
@click.option("--parents", default=None, help="H3 parent resolutions, e.g. 9,8,0 (default: the two above --resolution, and 0).")
@click.option("--datetime", "when", default=None,
              help="When the data describe, for STAC (ISO date). Default: the source's last-modified time.")
@CRS_OPTION
@MAX_CELLS_OPTION
@click.option("--rebuild", is_flag=True, help="Run every step, also those already fresh.")
def run(source: str, name: str, out: str, only: str | None, resolution: int | None, parents: str | None,
        when: str | None, crs: str | None, max_cells: int | None, rebuild: bool):
    """Materialize the whole asset graph for an ad-hoc SOURCE on the embedded default."""
    from pydantic import ValidationError

    from cng_assets.transforms.sources import gdal_path

    crs = _checked_crs(crs)
    try:
        if not source.startswith(("s3://", "http://", "https://", "/vsi")):
            gdal_path(source)  # fail early, before any run is made, if a local source is missing or corrupt
            source = str(Path(source).resolve())
        ds = adhoc_dataset(source, name, only=only, resolution=resolution, parents=_csv_ints(parents), when=when,
                           crs=crs, max_cells=max_cells)
    except CngInputError as e:
        _fail(str(e))
    except ValidationError as e:
        _fail(validation_problems(e))
    _materialize(ds, out, rebuild)


def adhoc_dataset(source: str, name: str, *, only: str | None = None, resolution: int | None = None,
                  parents: list[int] | None = None, when: str | None = None, crs: str | None = None,
                  max_cells: int | None = None) -> Dataset:
    """The dataset `cng-assets run` makes of its options (what its definitions, and so its code versions, are)."""
    h3 = {k: v for k, v in (("resolution", resolution), ("parents", parents), ("max_cells", max_cells)) if v is not None}
    ds = Dataset(name=name, title=name, source=source, prefix=name, h3=H3Settings(**h3), crs=crs, datetime=when,
                 raster=RasterSettings(resolution=resolution),
                 include=[x.strip() for x in only.split(",")] if only else ["*"])
    return ds.dated(when, FROM_CLI) if when else ds  # else the source's last-modified time, read when STAC is written


@main.command()
@click.argument("input_path", metavar="INPUT.parquet")
@click.argument("out_dir", metavar="OUTDIR")
@click.option("--resolution", type=click.IntRange(1, 15), default=10, show_default=True)
@click.option("--parents", default=None, help="Parent resolutions, comma-separated (default: the two above --resolution, and 0).")
@click.option("--containment", type=click.Choice(["center", "overlap"]), default="center", show_default=True)
@click.option("--attributes", default="all", show_default=True, help="Layer columns to carry: all, none, or a,b,c.")
@MAX_CELLS_OPTION
def hex(input_path: str, out_dir: str, resolution: int, parents: str | None, containment: str, attributes: str,
        max_cells: int | None):
    """H3 cells of every feature of a GeoParquet file, into OUTDIR/h0=<cell>/*.parquet."""
    from pydantic import ValidationError

    from cng_assets.storage import LocalStorage
    from cng_assets.transforms.hex.fill import HexSettings
    from cng_assets.transforms.hex.layer import hex_layer

    try:
        h3 = H3Settings(resolution=resolution, parents=_csv_ints(parents), containment=containment,
                        attributes=attributes if attributes in ("all", "none") else attributes.split(","),
                        **({"max_cells": max_cells} if max_cells else {}))
    except ValidationError as e:
        _fail(validation_problems(e))
    source = Path(input_path)
    if not source.is_file():
        _fail(f"{input_path} does not exist (make GeoParquet with `cng-assets run`)")
    out = Path(out_dir).resolve()
    storage = LocalStorage(root=str(out.parent))
    settings = HexSettings(h3.resolution, tuple(h3.parents), h3.containment)
    with storage.publish_dir(None, out.name) as staged:
        try:
            result = hex_layer(str(source.resolve()), staged, settings, attributes=h3.attributes, max_cells=h3.max_cells,
                               on_plan=lambda est: console.print(f"plan: {est}"),
                               on_chunk=lambda k, n, st: console.print(f"chunk {k + 1}/{n}: {st.cells:,} cells"))
        except (ValueError, CngInputError) as e:
            _fail(str(e))
        failed = [c for c in result.checks if not c.passed]
        if failed:
            _fail("checks failed, OUTDIR left as it was: " + "; ".join(f"{c.name} {c.detail}" for c in failed), 1)
    rows = sum(result.rows_per_h0.values())
    console.print(f"{rows:,} cells in {len(result.rows_per_h0)} h0 partitions under {out}; "
                  f"checks passed: {', '.join(c.name for c in result.checks)}")


def _catalog_and_defs(dataset: str | None):
    from cng_assets.definitions import build_definitions
    from cng_assets.defs.environment import loaded_datasets
    from cng_assets.runner import project_instance

    try:
        every = load_catalog()
        catalog = {ds.name: ds for ds in loaded_datasets(every)}
    except CngInputError as e:
        _fail(str(e))
    if dataset and dataset in every and dataset not in catalog:
        _fail(f"dataset {dataset!r} is not loaded here: its source {every[dataset].source} is out of this environment's "
              "reach. What to do: run where its storage is (CNG_STORAGE=s3), or set CNG_DATASETS")
    if dataset and dataset not in catalog:
        _fail(f"no dataset {dataset!r} in the catalog (known: {', '.join(sorted(catalog))})")
    return catalog, build_definitions(list(catalog.values())), project_instance()


@main.command()
@click.option("--dataset", default=None, help="One catalog dataset (default: all).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--all", "show_all", is_flag=True, help="List fresh partitions too.")
def status(dataset: str | None, as_json: bool, show_all: bool):
    """Every asset partition as fresh / stale / missing / will be stale, with the causes."""
    import json

    from cng_assets.lineage import FRESH, asset_status

    _, defs, instance = _catalog_and_defs(dataset)
    rows = asset_status(defs, instance, dataset)
    if as_json:
        click.echo(json.dumps([r.to_json() for r in rows], indent=1))
        return
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.status] = counts.get(r.status, 0) + 1
    table = Table("asset", "partition", "status", "causes")
    for r in rows:
        if show_all or r.status != FRESH:
            table.add_row(r.asset, r.partition or "", r.status, escape("; ".join(r.causes)))
    Console(width=220).print(table)
    console.print(", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no asset partitions yet")


@main.command()
@click.option("--bucket", default=None, help="Bucket to inspect (default: the storage's default place).")
@click.option("--prefix", default="", help="Key prefix, e.g. padus-4-1/.")
@click.option("--report", "report_dir", default="audit-report", show_default=True, help="Folder for the markdown and JSON report.")
@click.option("--dry-run", is_flag=True, help="Report only; record nothing in Dagster.")
def audit(bucket: str | None, prefix: str, report_dir: str, dry_run: bool):
    """Find products made outside the pipeline, record them as legacy (stale) materializations, and report."""
    from cng_assets.audit import audit as run_audit
    from cng_assets.audit import write_report
    from cng_assets.defs.resources import storage_from_env

    catalog, _, instance = _catalog_and_defs(None)
    report = run_audit(storage_from_env(), instance, list(catalog.values()), bucket, prefix, record=not dry_run)
    md, js = write_report(report, report_dir)
    for f in report.findings:
        console.print(escape(f"{f.product.key}: {'; '.join(f.product.findings) or 'made outside the pipeline'}"
                             + (f" -> {f.dataset}/{f.asset}[{f.partition}]" if f.asset else f" ({f.note})")))
    console.print(f"{len(report.findings)} legacy products; report: {md} and {js}")


@main.command()
@click.option("--stale", "stale_only", is_flag=True, help="Only partitions that are stale, missing, or below one.")
@click.option("--dataset", default=None, help="One catalog dataset (default: all).")
@click.option("--layers", default=None, help="Comma-separated layer slugs (default: all).")
@click.option("--run-now", is_flag=True, help="Run in-process here instead of submitting a backfill to the daemon.")
def reprocess(stale_only: bool, dataset: str | None, layers: str | None, run_now: bool):
    """Submit one backfill of the stale or missing partitions (or all partitions of the chosen layers)."""
    from cng_assets.reprocess import run_now as execute
    from cng_assets.reprocess import select_targets, submit_backfill
    from cng_assets.runner import QUIET

    catalog, defs, instance = _catalog_and_defs(dataset)
    chosen = [x.strip() for x in layers.split(",")] if layers else None
    targets = select_targets(defs, instance, dataset, chosen, stale_only)
    if not targets:
        console.print("nothing to reprocess")
        return
    console.print(f"{len(targets)} partitions: " + escape(", ".join(
        f"{'/'.join(t.asset_key.path)}[{t.partition_key}]" if t.partition_key else "/".join(t.asset_key.path) for t in targets[:20]))
        + (" ..." if len(targets) > 20 else ""))
    if run_now:
        results = execute(defs, catalog, instance, targets, QUIET)
        failed = [t for t, ok in results if not ok]
        console.print(f"{len(results) - len(failed)} succeeded, {len(failed)} failed")
        sys.exit(1 if failed else 0)
    backfill = submit_backfill(defs, catalog, instance, targets, "stale" if stale_only else "requested")
    console.print(f"backfill {backfill} submitted: the daemon runs it (UI: Overview > Backfills)")


@main.command()
@click.option("--out", default="data", show_default=True, help="Product folder.")
@click.option("--rebuild", is_flag=True, help="Run every step, also those already fresh.")
def demo(out: str, rebuild: bool):
    """Build the demo source and materialize the demo dataset's whole asset graph."""
    try:
        catalog = load_catalog()
        ds = catalog["demo"]
    except CngInputError as e:
        _fail(str(e))
    if "inbox" in catalog:  # the folder the inbox sensor watches: products follow each file dropped there
        inbox = Path(out) / catalog["inbox"].source
        inbox.mkdir(parents=True, exist_ok=True)
        console.print(f"Inbox: while `make ui` runs, copy a file GDAL reads (e.g. a shapefile with its sidecars, "
                      f"a GeoJSON, a GeoTIFF) into {inbox}/; its products appear under {Path(out) / 'inbox'}/.")
    _materialize(ds, out, rebuild)


if __name__ == "__main__":
    main()
