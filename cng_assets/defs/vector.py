"""The vector asset graph of one dataset: source -> layers (discovery: the inventory and the partitions) and
source[layer] -> table | geoparquet, one partition per layer. Each product reads its own layer's facts from the
source, so its lineage runs to that layer alone and not through the whole inventory."""


import json

import dagster as dg

from cng_assets.catalog import Dataset
from cng_assets.defs import products
from cng_assets.defs.k8s import op_tags
from cng_assets.defs.partitions import chunk_key, chunk_partitions, feature_partitions, layer_partition_keys, table_partitions
from cng_assets.defs.raster import chunk_rows
from cng_assets.defs.sources import is_observed, source_asset, source_dep
from cng_assets.storage import ProductStorage
from cng_assets.transforms import geoparquet, layers, tables
from cng_assets.transforms.layers import DOMAIN_KEY_PREFIX, RASTER


def vector_assets(ds: Dataset) -> list:
    source = source_asset(ds)
    source_key = source.key
    table_parts, feature_parts = table_partitions(ds), feature_partitions(ds)

    @dg.asset(key=[ds.name, "layers"], op_tags=op_tags(ds, "layers"), deps=[source_key], group_name=ds.name, kinds={"gdal", "json"},
              code_version=ds.code_version(layers.VERSION, "source", "include", "exclude"),
              description="Every layer of the source with kind, feature count, CRS and fields; registers one "
                          "partition per layer (and per FileGDB coded-value domain).")
    def layer_inventory(context: dg.AssetExecutionContext, storage: ProductStorage) -> dg.MaterializeResult:
        with products.input_errors(ds):
            inv = products.discover(storage, ds)
        with storage.publish(ds.bucket, products.inventory_key(ds)) as tmp:
            tmp.write_text(json.dumps(inv.to_json(), indent=1))
        added, gone = {}, {}
        for parts, keys in layer_partition_keys(ds, inv, is_observed(ds)):
            existing = set(context.instance.get_dynamic_partitions(parts.name))
            new = [k for k in keys if k not in existing]
            if new:
                context.instance.add_dynamic_partitions(parts.name, new)
            added[parts.name], gone[parts.name] = new, sorted(existing - set(keys))
        needed = {chunk_key(k) for x in inv.layers if x.kind == RASTER
                  for k in range(len(chunk_rows(ds, x.raster["height"], x.raster["width"])))}
        new_chunks = sorted(needed - set(context.instance.get_dynamic_partitions(chunk_partitions(ds).name)))
        if new_chunks:  # raster chunks are known from the size alone (vector ones once a plan exists)
            context.instance.add_dynamic_partitions(chunk_partitions(ds).name, new_chunks)
        rows = "\n".join(f"| {x.name} | `{x.slug}` | {x.kind} | {x.geometry_type or ''} | {x.features} | {x.crs or ''} |"
                         for x in inv.layers)
        return dg.MaterializeResult(metadata={
            "layers": dg.MetadataValue.md("| layer | slug | kind | geometry | features | CRS |\n|---|---|---|---|---|---|\n" + rows),
            "layer_count": len(inv.layers),
            "coded_value_domains": len(inv.domains),
            "skipped_by_catalog": inv.skipped,
            "partitions_added": added,
            "partitions_no_longer_in_source": gone,  # reported, never deleted automatically
            "uri": dg.MetadataValue.path(storage.uri(ds.bucket, products.inventory_key(ds))),
        })

    @dg.asset(key=[ds.name, "table"], op_tags=op_tags(ds, "table"),
              deps=[source_dep(ds)], partitions_def=table_parts, group_name=ds.name,
              kinds={"parquet"}, code_version=ds.code_version(tables.VERSION, "source"),
              description="Non-spatial layers and coded-value domains as Parquet lookup tables.",
              check_specs=[dg.AssetCheckSpec("rows_match_source", asset=[ds.name, "table"], blocking=True,
                                             description="rows in the written file = rows in the source")])
    def table(context: dg.AssetExecutionContext, storage: ProductStorage) -> dg.MaterializeResult:
        slug = context.partition_key
        key = products.table_key(ds, slug)
        with products.input_errors(ds, slug):
            inv = products.discover(storage, ds)
            if slug.startswith(DOMAIN_KEY_PREFIX):
                domain = inv.domain(slug)
                expected, origin = len(domain.codes), {"domain": domain.name, "description": domain.description}
                with storage.publish(ds.bucket, key) as tmp:
                    tables.write_domain(domain, tmp)
            else:
                layer = inv.layer(slug)
                expected, origin = layer.features, {"layer": layer.name}
                with storage.publish(ds.bucket, key) as tmp:
                    tables.write_table(storage.source_path(ds.source), layer.name, tmp)
        meta = products.parquet_metadata(storage, ds.bucket, key)
        written = meta["dagster/row_count"]
        return dg.MaterializeResult(
            metadata={**meta, **origin, "source_rows": expected},
            check_results=[dg.AssetCheckResult(check_name="rows_match_source", passed=written == expected,
                                               metadata={"source_rows": expected, "written_rows": written})],
        )

    @dg.asset(key=[ds.name, "geoparquet"], op_tags=op_tags(ds, "geoparquet"), deps=[source_dep(ds)], partitions_def=feature_parts,
              group_name=ds.name, kinds={"parquet", "geoparquet"}, code_version=ds.code_version(geoparquet.VERSION, "source", "crs"),
              description="Spatial layers as GeoParquet 1.1: EPSG:4326 lon/lat, valid, MultiPolygon for polygon "
                          "layers, `_cng_fid` row id, `bbox` covering, ZSTD, Hilbert-ordered row groups.",
              check_specs=[dg.AssetCheckSpec("counts_reconcile", asset=[ds.name, "geoparquet"], blocking=True,
                                             description="source features = rows written + dropped and reported")])
    def geoparquet_layer(context: dg.AssetExecutionContext, storage: ProductStorage) -> dg.MaterializeResult:
        slug = context.partition_key
        key = products.geoparquet_key(ds, slug)
        with products.input_errors(ds, slug):
            layer = products.discover(storage, ds).layer(slug)
            with storage.publish(ds.bucket, key) as tmp:
                stats = geoparquet.write_geoparquet(storage.source_path(ds.source), layer.name, tmp,
                                                    kind=layer.kind, crs=ds.crs)
        meta = products.parquet_metadata(storage, ds.bucket, key)
        written = meta["dagster/row_count"]
        c = stats.counts
        if stats.dropped:
            context.log.warning(f"{ds.name}/{slug}: dropped {stats.dropped} features "
                                f"(first _cng_fid: {stats.dropped_fids[:20]})")
        return dg.MaterializeResult(
            metadata={
                **meta, "layer": layer.name, "kind": layer.kind, "source_features": layer.features,
                "source_crs": stats.source_crs, "geometry_types": stats.geometry_types,
                "bbox": stats.bbox, "repaired": c.repaired, "curved_linearised": stats.curved_linearised,
                "split_at_antimeridian": c.split_antimeridian, "dropped_null_or_empty": c.dropped_null_or_empty,
                "dropped_unrepairable": c.dropped_unrepairable, "dropped_fids": stats.dropped_fids,
                "renamed_columns": stats.renamed_columns,
            },
            check_results=[dg.AssetCheckResult(
                check_name="counts_reconcile",
                passed=layer.features == stats.features_read == written + stats.dropped,
                metadata={"source_features": layer.features, "features_read": stats.features_read,
                          "written_rows": written, "dropped": stats.dropped},
            )],
        )

    return [source, layer_inventory, table, geoparquet_layer]
