"""The vector asset graph of one dataset: source -> layers (discovery: the inventory and the partitions) and
source[layer] -> table | geoparquet, one partition per layer. Each product reads its own layer's facts from the
source, so its lineage runs to that layer alone and not through the whole inventory."""


import json

import dagster as dg
import pyarrow.parquet as pq

from cng_assets.catalog import Dataset
from cng_assets.defs import products
from cng_assets.defs.partitions import feature_partitions, new_partition_keys, partition_keys, table_partitions
from cng_assets.defs.pods import op_tags
from cng_assets.defs.sources import is_observed, source_asset, source_dep
from cng_assets.defs.stored import source_read, stored
from cng_assets.storage import ProductStorage
from cng_assets.transforms import geoparquet, layers, layout, tables
from cng_assets.transforms.layers import DOMAIN_KEY_PREFIX
from cng_assets.transforms.verify import geoparquet as geoparquet_check
from cng_assets.transforms.verify.text import check_text

TEXT_CHECK = ("every text value equals the source's, decoded with the source's own encoding by GDAL (not the "
              "writer's reader), and pyarrow and DuckDB read them all")


def _text_check(product, read_from: tuple[str, str] | None) -> dg.AssetCheckResult:
    """On a layer's product, read from (source, layer)."""
    if read_from is None:  # a coded-value domain: its codes come from the FileGDB's own XML, not from a layer
        return dg.AssetCheckResult(check_name="text_matches_source", passed=True, metadata={"note": "coded-value domain"})
    found = check_text(product, *read_from)
    return dg.AssetCheckResult(check_name="text_matches_source", passed=found.passed,
                               metadata={**found.figures, "problems": found.problems})


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
        with storage.publish(ds.bucket, products.key(ds, layout.INVENTORY)) as tmp:
            tmp.write_text(json.dumps(inv.to_json(), indent=1))
        added = new_partition_keys(ds, inv, is_observed(ds), context.instance.get_dynamic_partitions)
        for name, keys in added.items():
            context.instance.add_dynamic_partitions(name, keys)
        gone = {name: sorted(set(context.instance.get_dynamic_partitions(name)) - set(keys))
                for name, keys in partition_keys(ds, inv, is_observed(ds)).items()}
        rows = "\n".join(f"| {x.name} | `{x.slug}` | {x.what} | {x.geometry_label} | {x.features} | {x.crs or ''} |"
                         for x in inv.layers)
        return dg.MaterializeResult(metadata={
            **stored(storage, ds.bucket, products.key(ds, layout.INVENTORY)), **source_read(storage, ds),
            "layers": dg.MetadataValue.md("| layer | slug | kind | geometry | features | CRS |\n|---|---|---|---|---|---|\n" + rows),
            "layer_count": len(inv.layers),
            "coded_value_domains": len(inv.domains),
            "skipped_by_catalog": inv.skipped,
            "partitions_added": added,
            "partitions_no_longer_in_source": gone,  # reported, never deleted automatically
            "uri": dg.MetadataValue.path(storage.uri(ds.bucket, products.key(ds, layout.INVENTORY))),
        })

    @dg.asset(key=[ds.name, "table"], op_tags=op_tags(ds, "table"),
              deps=[source_dep(ds)], partitions_def=table_parts, group_name=ds.name,
              kinds={"parquet"}, code_version=ds.code_version(tables.VERSION, "source"),
              description="Non-spatial layers and coded-value domains as Parquet lookup tables.",
              check_specs=products.blocking_check_specs([ds.name, "table"], table_parts, {
                  "rows_match_source": "rows in the written file = rows in the source",
                  "text_matches_source": TEXT_CHECK}))
    def table(context: dg.AssetExecutionContext, storage: ProductStorage):
        slug = context.partition_key
        key = products.key(ds, layout.table(slug))
        with products.input_errors(ds, slug):
            inv = products.discover(storage, ds)
            with storage.publish(ds.bucket, key) as tmp:
                if slug.startswith(DOMAIN_KEY_PREFIX):
                    domain = inv.domain(slug)
                    expected, origin = len(domain.codes), {"domain": domain.name, "description": domain.description}
                    tables.write_domain(domain, tmp)
                    read_from = None
                else:
                    layer = inv.layer(slug)
                    expected, origin = layer.features, {"layer": layer.name}
                    read_from = (products.layer_source(storage, ds, layer), layer.name)
                    origin["renamed_columns"] = tables.write_table(*read_from, tmp).renamed_columns
                written = pq.read_metadata(tmp).num_rows
                checks = [dg.AssetCheckResult(check_name="rows_match_source", passed=written == expected,
                                              metadata={"source_rows": expected, "written_rows": written}),
                          _text_check(tmp, read_from)]
                yield from products.blocking_checks(checks, f"{ds.name}/{slug}: {written} rows written, {expected} in the source")
        domains = {} if slug.startswith(DOMAIN_KEY_PREFIX) else layer.domains
        yield dg.MaterializeResult(metadata={**products.parquet_metadata(storage, ds, key, domains), **origin,
                                             "source_rows": expected, **stored(storage, ds.bucket, key)},
                                   check_results=checks)

    @dg.asset(key=[ds.name, "geoparquet"], op_tags=op_tags(ds, "geoparquet"), deps=[source_dep(ds)], partitions_def=feature_parts,
              group_name=ds.name, kinds={"parquet", "geoparquet"}, code_version=ds.code_version(geoparquet.VERSION, "source", "crs"),
              description="Spatial layers as GeoParquet 1.1: EPSG:4326 lon/lat, valid, MultiPolygon for polygon "
                          "layers, `_cng_fid` row id, `bbox` covering, ZSTD, Hilbert-ordered row groups.",
              check_specs=products.blocking_check_specs([ds.name, "geoparquet"], feature_parts, {
                  "counts_reconcile": "source features = rows written + dropped and reported",
                  "matches_source": "read against the source again, apart from the writer: rows and dropped fids, "
                                    "each feature's area on the ellipsoid, extent, and readers' default calls",
                  "text_matches_source": TEXT_CHECK}))
    def geoparquet_layer(context: dg.AssetExecutionContext, storage: ProductStorage):
        slug = context.partition_key
        key = products.key(ds, layout.geoparquet(slug))
        with products.input_errors(ds, slug):
            layer = products.discover(storage, ds).layer(slug)
            with storage.publish(ds.bucket, key) as tmp:
                src_path = products.layer_source(storage, ds, layer)
                stats = geoparquet.write_geoparquet(src_path, layer.name, tmp, kind=layer.kind, crs=ds.crs,
                                                    scratch_dir=str(tmp.parent))
                written = pq.read_metadata(tmp).num_rows
                check = dg.AssetCheckResult(
                    check_name="counts_reconcile", passed=layer.features == stats.features_read == written + stats.dropped,
                    metadata={"source_features": layer.features, "features_read": stats.features_read,
                              "written_rows": written, "dropped": stats.dropped})
                found = geoparquet_check.verify_geoparquet(tmp, src_path, layer.name, source_crs=stats.source_crs,
                                                 polygons=layer.kind == "polygon", dropped=stats.dropped,
                                                 dropped_features=stats.dropped_features)
                matches = dg.AssetCheckResult(check_name="matches_source", passed=found.passed, metadata=found.figures)
                text = _text_check(tmp, (src_path, layer.name))
                yield from products.blocking_checks(
                    [check, matches, text], f"{ds.name}/{slug}: {layer.features} source features, {written} written + "
                                      f"{stats.dropped} dropped; {'; '.join(found.problems[:3]) or 'matches its source'}")
        c = stats.counts
        if stats.dropped:
            context.log.warning(f"{ds.name}/{slug}: dropped {stats.dropped} features "
                                f"(first _cng_fid: {stats.dropped_fids[:20]})")
        yield dg.MaterializeResult(
            metadata={
                **products.parquet_metadata(storage, ds, key, layer.domains), **stored(storage, ds.bucket, key),
                "layer": layer.name, "kind": layer.kind,
                "source_features": layer.features, "source_crs": stats.source_crs, "geometry_types": stats.geometry_types,
                "bbox": stats.bbox, "repaired": c.repaired, "curved_linearised": stats.curved_linearised,
                "split_at_antimeridian": c.split_antimeridian, "closed_at_pole": c.closed_at_pole,
                "dropped_null_or_empty": c.dropped_null_or_empty,
                "dropped_unrepairable": c.dropped_unrepairable,
                "dropped_other_geometry_types": c.dropped_other_geometry_types,
                "trimmed_other_geometry_types": c.trimmed_other_geometry_types, "dropped_fids": stats.dropped_fids,
                "dropped_why": [f"{fid}: {why}" for fid, why in stats.dropped_features[:100]],
                "source_geometry_families": layer.geometry_families or {},
                "renamed_columns": stats.renamed_columns,
            },
            check_results=[check, matches, text],
        )

    return [source, layer_inventory, table, geoparquet_layer]
