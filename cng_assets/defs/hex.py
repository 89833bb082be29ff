"""H3 hex assets of one dataset: hex_plan (per polygon layer) -> hex_chunk (per chunk x layer) -> hex (per layer).

Partition design (docs/hex-partitions.md): chunk keys 000..N-1 (N = `h3.max_chunks`) are one dynamic dimension
shared by the dataset's polygon and raster layers, registered once with the layers. The chunk sensor runs a
layer's first n chunks (its plan's) and records the rest as empty, so no key stays missing and no run is spent
on an empty chunk.
"""

from contextlib import ExitStack
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq

from cng_assets import faults
from cng_assets.catalog import Dataset
from cng_assets.defs import products
from cng_assets.defs.automation import AFTER_CHUNKS
from cng_assets.defs.partitions import by_layer, chunk_partitions, polygon_partitions
from cng_assets.defs.pods import MEMORY_TAG, op_tags
from cng_assets.defs.stored import stored
from cng_assets.storage import ProductStorage
from cng_assets.transforms import layout
from cng_assets.transforms.hex import chunk, consolidate, plan
from cng_assets.transforms.hex.fill import HexSettings
from cng_assets.transforms.hex.layer import chunk_units

HEX_CHECKS = {
    "every_feature_has_cells": "every _cng_fid of the GeoParquet has at least one cell",
    "no_duplicate_cells": "no (_cng_fid, cell) pair twice",
    "parents_consistent": "parent columns and h0 folder agree with h3ronpy's change_resolution (each file's first row group)",
    "rows_match_chunks": "rows over all h0 partitions = rows written by the chunks",
    "cell_ids_valid": "every id is a valid H3 cell at its column's resolution",
    "every_source_fid_in_files": "every _cng_fid with a geometry in the GeoParquet has a row in the written files",
    "cells_match_feature_areas": "features of 50 cells and more: their cells' areas match the feature's geodesic "
                                 "area within what the containment rule allows (perimeter x cell radius, +5%)",
}
# The catalog fields each hex asset reads (their code versions hash these and no others): the plan splits the work,
# a chunk computes cells from its plan's units, consolidation writes the product (its bytes never depend on chunking).
PLAN_FIELDS = ("h3.resolution", "h3.max_chunks", "h3.target_cells_per_chunk")  # h3.max_cells refuses, changes nothing
CHUNK_FIELDS = ("h3.resolution", "h3.parents", "h3.containment")
HEX_FIELDS = (*CHUNK_FIELDS, "h3.attributes")
CHUNK_POOL = "hex_chunks"  # a Dagster concurrency pool: the cluster runs at most ~50 chunk pods at once


def hex_settings(ds: Dataset) -> HexSettings:
    return HexSettings(ds.h3.resolution, tuple(ds.h3.parents), ds.h3.containment)


def _read_plan(storage: ProductStorage, ds: Dataset, slug: str):
    key = products.key(ds, layout.hex_plan(slug))
    if not storage.exists(ds.bucket, key):
        raise dg.Failure(f"{ds.name}/{slug}: no hex plan yet", metadata={"what to do": f"materialize hex_plan[{slug}]"})
    with storage.local_path(ds.bucket, key) as path:
        return pq.read_table(path)


def hex_assets(ds: Dataset, geoparquet_key: dg.AssetKey) -> list:
    layers, chunks = polygon_partitions(ds), chunk_partitions(ds)
    settings = hex_settings(ds)
    layer_of = by_layer()

    @dg.asset(key=[ds.name, "hex_plan"], op_tags=op_tags(ds, "hex_plan"), partitions_def=layers, group_name=ds.name, kinds={"parquet"},
              deps=[dg.AssetDep(geoparquet_key, partition_mapping=dg.IdentityPartitionMapping())],
              code_version=ds.code_version(plan.VERSION, *PLAN_FIELDS),
              description="Chunks for the layer's hex work, balanced by estimated cells and vertices "
                          f"(at most {ds.h3.max_chunks}); huge features are split by coarse H3 cells.")
    def hex_plan(context: dg.AssetExecutionContext, storage: ProductStorage) -> dg.MaterializeResult:
        slug = context.partition_key
        if not storage.exists(ds.bucket, products.key(ds, layout.geoparquet(slug))):
            raise dg.Failure(f"{ds.name}/{slug}: no GeoParquet for this layer yet",
                             metadata={"what to do": f"materialize geoparquet[{slug}] first"})
        with storage.local_path(ds.bucket, products.key(ds, layout.geoparquet(slug))) as gp:
            table = plan.plan_layer(str(gp), settings.resolution, max_chunks=ds.h3.max_chunks,
                                    target_cells=ds.h3.target_cells_per_chunk)
        est = plan.estimate(table)
        context.log.info(f"{ds.name}/{slug}: hex plan: {est}")
        with products.input_errors(ds, slug):  # above the budget: no plan is published, so no chunk runs
            plan.check_budget(est, ds.h3.max_cells, settings.resolution)
        with storage.publish(ds.bucket, products.key(ds, layout.hex_plan(slug))) as tmp:
            pq.write_table(table, tmp)
        per_chunk = table.group_by("chunk").aggregate([("est_cells", "sum")]).column("est_cells_sum").to_pylist()
        return dg.MaterializeResult(metadata={**stored(storage, ds.bucket, products.key(ds, layout.hex_plan(slug))),
            "estimate": str(est), "estimated_bytes": est.bytes, "cell_budget": ds.h3.max_cells,
            "chunks": est.chunks, "units": table.num_rows, "estimated_cells": est.cells,
            "largest_chunk_estimate": round(max(per_chunk, default=0)),
            "smallest_chunk_estimate": round(min(per_chunk, default=0)),
            "features_split": len(set(table.filter(table.column("roots").is_valid()).column("_cng_fid").to_pylist())),
            "plan_digest": plan.plan_digest(table),
            "uri": dg.MetadataValue.path(storage.uri(ds.bucket, products.key(ds, layout.hex_plan(slug)))),
        })

    @dg.asset(key=[ds.name, "hex_chunk"], op_tags=op_tags(ds, "hex_chunk"),
              partitions_def=dg.MultiPartitionsDefinition({"chunk": chunks, "layer": layers}),
              group_name=ds.name, kinds={"parquet", "h3"}, pool=CHUNK_POOL, code_version=ds.code_version(chunk.VERSION, *CHUNK_FIELDS),
              deps=[dg.AssetDep(hex_plan, partition_mapping=layer_of)],
              description="The cells of one chunk of a layer's plan (with parents), by h0. A chunk number beyond "
                          "the layer's plan materializes as empty.")
    def hex_chunk(context: dg.AssetExecutionContext, storage: ProductStorage) -> dg.MaterializeResult:
        keys = context.partition_key.keys_by_dimension
        slug, k = keys["layer"], int(keys["chunk"])
        table = _read_plan(storage, ds, slug)
        units = chunk_units(table, k)
        memory = int(context.run.tags.get(MEMORY_TAG, ds.pod("hex_chunk").memory_gib))
        with storage.publish_dir(ds.bucket, products.key(ds, layout.hex_chunk(slug, k))) as out:
            # opened, not downloaded: on S3 the chunk range-reads only the row groups its units need
            with storage.open(ds.bucket, products.key(ds, layout.geoparquet(slug))) as gp:
                stats = chunk.run_chunk(gp, units, settings, out, plan.plan_digest(table))
            faults.out_of_memory(memory)  # tests only: die as an OOM-killed pod would, written but not published
        return dg.MaterializeResult(metadata={
            **stats.to_dict(), "empty": units.num_rows == 0, "units": units.num_rows,
            "memory_gib": memory,  # where the layer's next chunk runs start
            "estimated_cells": round(sum(units.column("est_cells").to_pylist())),
        })

    @dg.asset(key=[ds.name, "hex"], op_tags=op_tags(ds, "hex"), partitions_def=layers, group_name=ds.name, kinds={"parquet", "h3"},
              deps=[dg.AssetDep(hex_chunk, partition_mapping=layer_of)], automation_condition=AFTER_CHUNKS,
              code_version=ds.code_version(consolidate.VERSION, *HEX_FIELDS),
              description=f"H3 cells (h{settings.resolution}, parents {list(settings.parents)}, {settings.containment} "
                          "containment) of every feature, with the layer's attributes, as h0=<cell>/ partitions sorted "
                          "by cell (h0 only in the folder names). Written as a new version and switched in only when every check passes.",
              check_specs=products.blocking_check_specs([ds.name, "hex"], layers, HEX_CHECKS))
    def hex_layer(context: dg.AssetExecutionContext, storage: ProductStorage):
        slug = context.partition_key
        table = _read_plan(storage, ds, slug)
        digest, n = plan.plan_digest(table), plan.chunk_count(table)
        chunk_keys = [products.key(ds, layout.hex_chunk(slug, k)) for k in range(n)]
        with ExitStack() as stack:  # every chunk stays readable (downloaded, on S3) until consolidation is done
            gp = stack.enter_context(storage.local_path(ds.bucket, products.key(ds, layout.geoparquet(slug))))
            chunk_dirs, chunk_rows = [], 0
            for key in chunk_keys:
                d = Path(stack.enter_context(storage.local_path(ds.bucket, key)))
                marker = chunk.read_marker(d, digest)
                if marker is None:
                    raise dg.Failure(f"{ds.name}/{slug}: {key} is missing, or was made from another plan or by "
                                     "another version of the hex engine",
                                     metadata={"what to do": f"materialize hex_chunk for layer {slug}, then hex"})
                chunk_dirs.append(d)
                chunk_rows += marker["cells"]
            with storage.publish_dir(ds.bucket, products.key(ds, layout.hex(slug))) as staged:
                done = consolidate.consolidate(chunk_dirs, str(gp), staged, settings, attributes=ds.h3.attributes,
                                               chunk_rows=chunk_rows)
                rows = done.rows_per_h0
                checks = products.check_results(done.checks)
                yield from products.blocking_checks(checks, f"{ds.name}/{slug}: hex")
        for key in chunk_keys:  # intermediates go only once the new version is in place
            storage.delete(ds.bucket, key)
        if not rows:  # a layer with no features: no cells, so no folder for readers to fail on
            storage.delete(ds.bucket, products.key(ds, layout.hex(slug)))
        yield dg.MaterializeResult(
            metadata={**stored(storage, ds.bucket, products.key(ds, layout.hex(slug))),
                      "dagster/row_count": sum(rows.values()), "h0_partitions": len(rows), "chunks": n,
                      "resolution": settings.resolution, "parents": list(settings.parents),
                      "containment": settings.containment,
                      "columns": [*layout.hex_file_columns(settings.resolution, settings.parents), layout.HEX_PARTITION],
                      "uri": dg.MetadataValue.path(storage.uri(ds.bucket, products.key(ds, layout.hex(slug))))},
            check_results=checks,
        )

    return [hex_plan, hex_chunk, hex_layer]
