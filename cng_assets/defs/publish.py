"""Publishing assets of one dataset: pmtiles and thumbnail per spatial layer, then stac and docs (README.md and
map.html) from facts read back from the products; and the root STAC catalog over every dataset."""

import base64
import json

import dagster as dg
import pyarrow.parquet as pq

from cng_assets.catalog import Dataset, PodSize
from cng_assets.defs import products
from cng_assets.defs.automation import AFTER_PRODUCTS
from cng_assets.defs.partitions import feature_partitions
from cng_assets.defs.pods import op_tags, pod_config
from cng_assets.defs.sources import with_default_datetime
from cng_assets.defs.stored import stored
from cng_assets.storage import ProductStorage
from cng_assets.transforms import describe, facts, geoparquet, layout, pmtiles, stac
from cng_assets.transforms.product_files import ProductFiles
from cng_assets.transforms.verify import pmtiles as pmtiles_check

PMTILES_CHECKS = {
    "every_feature_at_max_zoom": "every _cng_fid of the GeoParquet is in a max-zoom tile (read back from the archive), "
                                 "or among the drops tippecanoe declared there, which are then listed by fid",
}


def _code_versions() -> dict[str, str]:
    return {"geoparquet": geoparquet.VERSION, "pmtiles": pmtiles.VERSION, "stac": stac.VERSION,
            "describe": describe.VERSION}


def _hex_rows(instance: dg.DagsterInstance, ds: Dataset, slugs: list[str]) -> dict[str, int]:
    """Each layer's hex rows as its latest materialization recorded them (the consolidation's count, checked against
    the written files' footers then): counting them again would read a footer per hex file."""
    rows = {}
    for slug in slugs:
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey([ds.name, "hex"]), asset_partitions=[slug]), limit=1).records
        count = records[0].asset_materialization.metadata.get("dagster/row_count") if records else None
        if count is not None:
            rows[slug] = int(count.value)
    return rows


def _facts(context: dg.AssetExecutionContext, storage: ProductStorage, ds: Dataset,
           files: ProductFiles | None = None) -> facts.DatasetFacts:
    """Hrefs under the public base URL, or ('') relative, so the dataset folder works wherever it is copied; the
    dataset's time from its source when the catalog gives none. Read in place (one listing, footers, headers):
    never a download of the dataset."""
    inv = products.load_inventory(storage, ds)
    ds = with_default_datetime(storage, ds)
    hex_rows = _hex_rows(context.instance, ds, [x.slug for x in inv.layers if x.kind == "polygon"])
    return facts.gather(ds, files or storage.product_files(ds.bucket, ds.prefix), inv, hex_rows=hex_rows,
                        href_base=storage.href_base(ds.bucket, ds.prefix), code_versions=_code_versions())


def _publish_text(storage: ProductStorage, ds: Dataset, name: str, text: str) -> str:
    key = products.key(ds, name)
    with storage.publish(ds.bucket, key) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return key


def publish_assets(ds: Dataset, geoparquet_key: dg.AssetKey, upstream: list[dg.AssetKey]) -> list:
    layers = feature_partitions(ds)
    same_layer = [dg.AssetDep(geoparquet_key, partition_mapping=dg.IdentityPartitionMapping())]

    @dg.asset(key=[ds.name, "pmtiles"], op_tags=op_tags(ds, "pmtiles"), partitions_def=layers, deps=same_layer, group_name=ds.name,
              kinds={"pmtiles"}, code_version=pmtiles.VERSION,
              description="Vector tiles of the layer (tippecanoe), layer name = slug, zoom range from the data.",
              check_specs=products.blocking_check_specs([ds.name, "pmtiles"], layers, PMTILES_CHECKS))
    def pmtiles_layer(context: dg.AssetExecutionContext, storage: ProductStorage):
        slug = context.partition_key
        key = products.key(ds, layout.pmtiles(slug))
        with storage.local_path(ds.bucket, products.key(ds, layout.geoparquet(slug))) as gp, products.input_errors(ds, slug):
            if pq.read_metadata(gp).num_rows == 0:  # no archive (a map of nothing), and none left from an earlier source
                storage.delete(ds.bucket, key)
                nothing = dg.AssetCheckResult(check_name="every_feature_at_max_zoom", passed=True,
                                              metadata={"source_features": 0})
                yield dg.MaterializeResult(metadata={"features": 0, "tiles": 0, **stored(storage, ds.bucket, key),
                                                     "note": "the layer has no features: no archive"},
                                           check_results=[nothing])
                return
            with storage.publish(ds.bucket, key) as tmp:
                # tippecanoe's temporary files beside the archive: removed with the staging, even after a kill -9
                stats = pmtiles.write_pmtiles(gp, tmp, layer=slug, scratch_dir=str(tmp.parent))
                found = pmtiles_check.check_archive(gp, tmp, slug, declared_drops=stats.dropped_at_max_zoom)
                if found.passed and found.missing:  # declared by tippecanoe: listed in the archive too
                    pmtiles_check.record_drops(tmp, found.missing)
                checks = [dg.AssetCheckResult(check_name="every_feature_at_max_zoom", passed=found.passed,
                                              metadata=found.metadata())]
                yield from products.blocking_checks(checks, f"{ds.name}/{slug}: pmtiles")
        yield dg.MaterializeResult(metadata={**stored(storage, ds.bucket, key),
            "uri": dg.MetadataValue.path(storage.uri(ds.bucket, key)), "bytes": storage.size(ds.bucket, key),
            "features": stats.features, "collections_split": stats.collections_split,
            "skipped_empty": stats.skipped_empty,
            "min_zoom": stats.min_zoom, "max_zoom": stats.max_zoom,
            "tiles": stats.tile_count, "bounds": stats.bounds, "zoom_reason": stats.zoom_reason,
            "dropped_at_max_zoom": stats.dropped_at_max_zoom, "dropped_fids_at_max_zoom": found.missing[:pmtiles_check.LISTED],
            "tippecanoe": " ".join(stats.tippecanoe_args)}, check_results=checks)

    @dg.asset(key=[ds.name, "thumbnail"], op_tags=op_tags(ds, "thumbnail"), partitions_def=layers, deps=same_layer, group_name=ds.name,
              kinds={"png"}, code_version=describe.VERSION, description="A PNG map of the layer.")
    def thumbnail(context: dg.AssetExecutionContext, storage: ProductStorage) -> dg.MaterializeResult:
        slug = context.partition_key
        key = products.key(ds, layout.thumbnail(slug))
        with storage.local_path(ds.bucket, products.key(ds, layout.geoparquet(slug))) as gp, \
                storage.publish(ds.bucket, key) as tmp:
            describe.thumbnail(gp, tmp, width_px=800)
            preview = base64.b64encode(describe.small_png(tmp)).decode()
        return dg.MaterializeResult(metadata={**stored(storage, ds.bucket, key),   # the UI shows a small copy inline
            "map": dg.MetadataValue.md(f"![{slug}](data:image/png;base64,{preview})"),
            "uri": dg.MetadataValue.path(storage.uri(ds.bucket, key)), "bytes": storage.size(ds.bucket, key)})

    deps = [*upstream, pmtiles_layer.key, thumbnail.key]

    @dg.asset(key=[ds.name, "stac"], op_tags=op_tags(ds, "stac"),
              deps=deps, group_name=ds.name, kinds={"stac"}, code_version=ds.code_version(stac.VERSION),
              automation_condition=AFTER_PRODUCTS,
              description="A STAC Collection for the dataset with an Item per spatial layer (STAC 1.1).")
    def stac_collection(context: dg.AssetExecutionContext, storage: ProductStorage) -> dg.MaterializeResult:
        f = _facts(context, storage, ds)
        with products.input_errors(ds), storage.publish_dir(ds.bucket, products.key(ds, layout.STAC_DIR)) as out:
            written = stac.write_dataset_stac(f, out)
        return dg.MaterializeResult(metadata={**stored(storage, ds.bucket, products.key(ds, layout.STAC_DIR)),
            "items": len(written) - 1, "uri": dg.MetadataValue.path(storage.uri(ds.bucket, products.key(ds, layout.STAC_COLLECTION)))})

    @dg.asset(key=[ds.name, "docs"], op_tags=op_tags(ds, "docs"),
              deps=deps, group_name=ds.name, kinds={"markdown"}, code_version=ds.code_version(describe.VERSION),
              automation_condition=AFTER_PRODUCTS,
              description="README.md beside the products (layers, data dictionary, H3 facts, maps, example queries) and "
                          "map.html, every vector layer's PMTiles on a MapLibre map.")
    def docs(context: dg.AssetExecutionContext, storage: ProductStorage) -> dg.MaterializeResult:
        files = storage.product_files(ds.bucket, ds.prefix)
        f = _facts(context, storage, ds, files)
        with products.input_errors(ds):
            text = describe.dataset_readme(f, describe.profile_products(f, files), context.run.run_id)
            preview = describe.inline_pngs(text, files)  # the maps' relative links do not resolve in the UI
        page = describe.map_page(f)
        meta = {}
        if page is not None:  # before the README that links it
            meta["map"] = dg.MetadataValue.path(storage.uri(ds.bucket, _publish_text(storage, ds, layout.MAP, page)))
        key = _publish_text(storage, ds, layout.README, text)
        pinned = stored(storage, ds.bucket, key, *([products.key(ds, layout.MAP)] if page is not None else []))
        return dg.MaterializeResult(metadata={**pinned, "preview": dg.MetadataValue.md(preview),
                                              "uri": dg.MetadataValue.path(storage.uri(ds.bucket, key)), **meta,
                                              "layers": len(f.layers), "tables": len(f.tables)})

    return [pmtiles_layer, thumbnail, stac_collection, docs]


def stac_catalog_asset(datasets: list[Dataset]) -> dg.AssetsDefinition:
    @dg.asset(key=["stac_catalog"], op_tags={"dagster-k8s/config": pod_config(PodSize())}, group_name="catalog",
              deps=[dg.AssetKey([ds.name, "stac"]) for ds in datasets], kinds={"stac"}, automation_condition=AFTER_PRODUCTS,
              code_version=stac.VERSION, description="The root STAC catalog: one child link per dataset's Collection.")
    def stac_catalog(storage: ProductStorage) -> dg.MaterializeResult:
        hrefs = {}  # public hrefs, else relative to the catalog at the root of the default place
        for ds in datasets:
            key = products.key(ds, layout.STAC_COLLECTION)
            if storage.exists(ds.bucket, key):
                base = storage.href_base(ds.bucket, ds.prefix)
                hrefs[ds.name] = base + layout.STAC_COLLECTION if base else f"{ds.bucket + '/' if ds.bucket else ''}{key}"
        with storage.publish(None, "catalog.json") as tmp:
            stac.root_catalog(hrefs, tmp)
        return dg.MaterializeResult(metadata={"datasets": sorted(hrefs), "links": json.dumps(hrefs),
                                              **stored(storage, None, "catalog.json")})

    return stac_catalog
