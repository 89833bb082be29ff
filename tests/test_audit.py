"""The legacy audit: fixtures that reproduce each convention of the lab's hand-made products, each detected,
recorded in Dagster with a legacy code version (so `status` shows it stale), and listed in the report."""

from __future__ import annotations

import json

import dagster as dg
import geopandas as gpd
import h3
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import rasterio
import shapely
from rasterio.transform import from_origin

from cng_assets.audit import audit, write_report
from cng_assets.catalog import Dataset
from cng_assets.definitions import definitions_with
from cng_assets.lineage import STALE, asset_status
from cng_assets.storage import LocalStorage
from cng_assets.transforms import geoparquet as gp_writer

CELLS10 = [h3.latlng_to_cell(37.0 + i * 0.01, -120.0, 10) for i in range(50)]


def _hex_table(res_cols: dict[int, str], cells=CELLS10, null_from: int | None = None) -> pa.Table:
    """Hex rows with the given columns (resolution -> 'str' | 'u64' | 'i64'); rows from `null_from` on lack h10/h9."""
    cols = {"_cng_fid": pa.array(np.arange(len(cells)) // 10 + 1)}
    for r, kind in res_cols.items():
        ids = [h3.cell_to_parent(c, r) for c in cells]
        if null_from is not None and r in (10, 9):
            ids = ids[:null_from] + [None] * (len(ids) - null_from)
        if kind == "str":
            cols[f"h{r}"] = pa.array(ids, pa.string())
        else:
            ints = [None if c is None else h3.str_to_int(c) for c in ids]
            cols[f"h{r}"] = pa.array(ints, pa.uint64() if kind == "u64" else pa.int64())
    return pa.table(cols)


@pytest.fixture
def legacy_bucket(tmp_path, fgdb_free_polygons):
    root = tmp_path / "store"
    base = root / "lab" / "old"
    (base / "hex" / "strings").mkdir(parents=True)
    for i in range(2):  # flat files of string ids: the most common hand-made convention
        pq.write_table(_hex_table({10: "str", 9: "str", 8: "str", 0: "str"}, CELLS10[i * 25:(i + 1) * 25]),
                       base / "hex" / "strings" / f"chunk_{i}.parquet")
    h0 = h3.cell_to_parent(CELLS10[0], 0)
    for name, table in {"noparents": _hex_table({10: "u64"}),
                        "pathh0": _hex_table({10: "u64", 9: "u64", 8: "u64"}),  # the pipeline's layout: h0 in the path
                        "rerun8": _hex_table({10: "u64", 9: "u64", 8: "u64", 0: "u64"}, null_from=30),
                        "signed": _hex_table({10: "i64", 9: "i64", 8: "i64", 0: "i64"})}.items():
        d = base / "hex" / name / f"h0={h3.str_to_int(h0)}"
        d.mkdir(parents=True)
        pq.write_table(table, d / "part-0.parquet")
    mixed = _hex_table({10: "u64", 9: "u64", 8: "u64", 0: "u64"})
    mixed = mixed.set_column(1, "h10", pa.array([h3.str_to_int(h3.cell_to_parent(c, 8)) if i % 2 else h3.str_to_int(c)
                                                 for i, c in enumerate(CELLS10)], pa.uint64()))
    d = base / "hex" / "mixed" / f"h0={h3.str_to_int(h0)}"
    d.mkdir(parents=True)
    pq.write_table(mixed, d / "part-0.parquet")
    # plain Parquet with WKB geometry (no geo metadata), geo metadata without bbox, and lat/lon swapped
    frame = fgdb_free_polygons
    plain = pa.table({"name": frame["name"].tolist(), "geometry": shapely.to_wkb(frame.geometry.values)})
    pq.write_table(plain, base / "nogeo.parquet")
    frame.to_parquet(base / "nobbox.parquet")
    swapped = frame.copy()
    swapped.geometry = shapely.transform(frame.geometry.values, lambda c: c[:, ::-1])
    swapped.to_parquet(base / "swapped.parquet", write_covering_bbox=True)
    # our own writer's output: conforming, so nothing but "made outside the pipeline"
    gpkg = tmp_path / "good.gpkg"
    frame.to_file(gpkg, layer="good")
    gp_writer.write_geoparquet(str(gpkg), "good", base / "good.parquet", kind="polygon")
    # rasters: a striped GeoTIFF without overviews, and a real COG
    data = (np.arange(600 * 600) % 251).astype("uint8").reshape(1, 600, 600)
    profile = dict(driver="GTiff", width=600, height=600, count=1, dtype="uint8", crs="EPSG:4326",
                   transform=from_origin(-120, 38, 0.001, 0.001))
    with rasterio.open(base / "striped.tif", "w", **profile) as dst:
        dst.write(data)
    with rasterio.open(base / "cog.tif", "w", **{**profile, "driver": "COG"}) as dst:
        dst.write(data)
    return LocalStorage(root=str(root))


@pytest.fixture
def fgdb_free_polygons():
    boxes = [shapely.box(-120 + i, 37, -119.5 + i, 37.5) for i in range(5)]
    return gpd.GeoDataFrame({"name": [f"p{i}" for i in range(5)]}, geometry=boxes, crs="EPSG:4326")


def test_each_legacy_convention_is_detected(legacy_bucket, tmp_path):
    ds = Dataset(name="old", title="old", source="raw/x.gpkg", bucket="lab", prefix="old", datetime="2020-01-01")
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        report = audit(legacy_bucket, instance, [ds], "lab", "old/")
    found = {f.product.key: f for f in report.findings}
    def why(key):
        return "; ".join(found[key].product.findings)
    assert "strings" in why("old/hex/strings") and "flat hex" in why("old/hex/strings")
    assert len(found["old/hex/strings"].product.files) == 2  # two flat files, one product
    assert "missing columns h9, h8 " in why("old/hex/noparents") and "flat" not in why("old/hex/noparents")
    assert found["old/hex/pathh0"].product.findings == []  # h0 in the folder names only, as the pipeline writes
    assert "missing" not in why("old/hex/rerun8")  # h0 in the files and the folder names: older products
    assert "rows lacking h10, h9" in why("old/hex/rerun8")
    assert "signed integers" in why("old/hex/signed")
    assert "mixed resolutions in h10" in why("old/hex/mixed")
    assert "without geo metadata" in why("old/nogeo.parquet")
    assert "no bbox covering column" in why("old/nobbox.parquet") and "swapped" not in why("old/nobbox.parquet")
    assert "swapped lat/lon" in why("old/swapped.parquet")
    assert found["old/good.parquet"].product.findings == []
    assert "not a Cloud-Optimized GeoTIFF" in why("old/striped.tif") and "striped" in why("old/striped.tif")
    assert found["old/cog.tif"].product.findings == []
    md, js = write_report(report, tmp_path / "report")
    data = json.loads(js.read_text())
    assert {p["key"] for p in data["products"]} == set(found)
    assert "old/hex/strings" in md.read_text() and "swapped lat/lon" in md.read_text()


def test_legacy_products_are_recorded_and_show_as_stale(legacy_bucket, tmp_path):
    ds = Dataset(name="old", title="old", source="raw/x.gpkg", bucket="lab", prefix="old", datetime="2020-01-01")
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        report = audit(legacy_bucket, instance, [ds], "lab", "old/")
        recorded = {(f.asset, f.partition) for f in report.findings if f.recorded}
        assert {("hex", "strings"), ("hex", "rerun8"), ("geoparquet", "swapped"), ("geoparquet", "good")} <= recorded
        assert ("cog", "striped") in recorded and ("cog", "cog") in recorded  # rasters stand for the cog asset
        rows = {(r.asset, r.partition): r for r in asset_status(definitions_with(ds, str(tmp_path)), instance, "old")}
        row = rows[("old/hex", "strings")]
        assert row.status == STALE and any("legacy product: H3 ids stored as strings" in c for c in row.causes)
        assert any("new code version" in c for c in row.causes)  # "legacy" is not the hex code version
        assert rows[("old/geoparquet", "good")].status == STALE
        # a second audit does not record twice and still lists them
        again = audit(legacy_bucket, instance, [ds], "lab", "old/")
        assert {(f.asset, f.partition) for f in again.findings if f.recorded} == recorded
