"""GeoZarr: every level opens with xarray with the CRS (CF grid mapping) and CF coordinates, holds the source's pixels
(level 0 exactly, the next ones as GDAL reduces them), each next level halves down to one chunk, the root and levels
carry the multiscales/proj/spatial conventions as zarr-cm validates them, and sharding keeps each level few files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyproj
import pytest
import rasterio
import xarray as xr
import zarr
import zarr_cm
from rasterio.enums import Resampling
from rasterio.transform import from_origin

from cng_assets.errors import CngInputError
from cng_assets.transforms.raster import geozarr
from cng_assets.transforms.raster.cog import write_cog
from cng_assets.transforms.raster.geozarr import write_geozarr
from cng_assets.transforms.verify.raster import check_geozarr
from tests.conftest import shared


def _metadata(path: Path) -> dict:
    return json.loads((path / "zarr.json").read_text())  # plain JSON, as any reader sees it


def _check_store(store: Path, src_path: Path, resampling: Resampling) -> None:
    """Everything a GeoZarr reader relies on, level by level, against rasterio reading the source."""
    root = _metadata(store)
    zarr_cm.multiscales.validate_group_metadata(root)
    layout = root["attributes"]["multiscales"]["layout"]
    assert root["consolidated_metadata"]["metadata"].keys() >= {f"{e['asset']}/band_data" for e in layout}  # one read
    tree = xr.open_datatree(store, engine="zarr", mask_and_scale=False)
    assert sorted(tree.children) == [e["asset"] for e in layout]
    with rasterio.open(src_path) as src:
        crs = pyproj.CRS.from_wkt(src.crs.to_wkt()) if src.crs else None
        for name in ("proj", "spatial") if crs else ("spatial",):
            getattr(zarr_cm, name).validate_group_metadata(root)
        if crs:
            assert root["attributes"]["proj:code"] == f"EPSG:{src.crs.to_epsg()}"
        assert root["attributes"]["spatial:transform"] == list(src.transform)[:6]
        assert root["attributes"]["spatial:bbox"] == pytest.approx(list(src.bounds))
        for i, entry in enumerate(layout):
            assert entry["asset"] == str(i) and entry.get("derived_from") == (str(i - 1) if i else None)
            level = _metadata(store / entry["asset"])
            zarr_cm.spatial.validate_group_metadata(level)
            ds = xr.open_zarr(store, group=entry["asset"], mask_and_scale=False)  # raw values, nodata kept
            h, w = ds.sizes["y"], ds.sizes["x"]
            assert ds["band_data"].dims == ("band", "y", "x") and entry["spatial:shape"] == [h, w]
            assert level["attributes"]["spatial:transform"] == entry["spatial:transform"]
            a, _, c, _, e, f = entry["spatial:transform"]
            assert ds.x.values[0] == pytest.approx(c + a / 2) and ds.y.values[0] == pytest.approx(f + e / 2)
            expected = src.read(out_shape=(src.count, h, w), resampling=resampling)
            assert np.array_equal(ds["band_data"].values, expected, equal_nan=True)
            ref = ds[ds["band_data"].attrs["grid_mapping"]]
            assert "spatial_ref" in ds.coords and ref.attrs["GeoTransform"].split()[0] == str(c)  # rioxarray, GDAL
            if crs:
                zarr_cm.proj.validate_group_metadata(level)
                assert ref.attrs["grid_mapping_name"] == crs.to_cf()["grid_mapping_name"]
                assert pyproj.CRS.from_cf(ref.attrs) == crs and rasterio.CRS.from_wkt(ref.attrs["spatial_ref"]) == src.crs
                units = ("degrees_east", "degrees_north") if crs.is_geographic else ("metre", "metre")
                assert (ds.x.attrs["units"], ds.y.attrs["units"]) == units and ds.x.attrs["axis"] == "X"
            meta = _metadata(store / entry["asset"] / "band_data")
            assert meta["codecs"][0]["name"] == "sharding_indexed"
            shards = np.prod([-(-n // s) for n, s in zip(meta["shape"], meta["chunk_grid"]["configuration"]["chunk_shape"])])
            assert len(_files(store / entry["asset"])) == 9 + shards  # metadata, x/y/band one chunk each, the shards


def _files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()]


def test_rgb_sample_as_multiscale_geozarr(tmp_path):
    src = shared("RGB.byte.tif")
    write_cog(str(src), tmp_path / "rgb.tif")
    stats = write_geozarr(str(tmp_path / "rgb.tif"), tmp_path / "rgb.zarr")
    assert stats.levels == [[718, 791], [359, 396]] and stats.reduction == "mode"  # uint8: class-safe reduction
    _check_store(tmp_path / "rgb.zarr", tmp_path / "rgb.tif", Resampling.mode)
    layout = _metadata(tmp_path / "rgb.zarr")["attributes"]["multiscales"]["layout"]
    assert layout[1]["resampling_method"] == "mode" and layout[1]["transform"]["scale"] == [718 / 359, 791 / 396]
    assert len(_files(tmp_path / "rgb.zarr" / "0" / "band_data" / "c")) == 1  # 3 bands x 2 x 2 chunks: one shard
    with rasterio.open(src) as r:  # the README's own call: nodata (0 here) masked by xarray's defaults
        assert np.array_equal(xr.open_zarr(tmp_path / "rgb.zarr", group="0")["band_data"].values,
                              r.read(masked=True).astype("float32").filled(np.nan), equal_nan=True)


def test_float_raster_levels_average_keep_nodata_and_shard(tmp_path, monkeypatch):
    monkeypatch.setattr(geozarr, "SHARD", 1024)  # several shards, edge ones partial, without a big raster
    path = tmp_path / "f.tif"
    data = np.arange(1300 * 1100, dtype="float32").reshape(1, 1100, 1300)
    with rasterio.open(path, "w", driver="GTiff", width=1300, height=1100, count=1, dtype="float32", crs="EPSG:4326",
                       transform=from_origin(-10, 10, 0.01, 0.01), nodata=-9999) as dst:
        dst.write(data)
    stats = write_geozarr(str(path), tmp_path / "f.zarr")
    assert stats.levels == [[1100, 1300], [550, 650], [275, 325]] and stats.reduction == "average"
    _check_store(tmp_path / "f.zarr", path, Resampling.average)
    level1 = xr.open_zarr(tmp_path / "f.zarr", group="1")
    assert float(level1["band_data"][0, 0, 0]) == pytest.approx(data[0, :2, :2].mean())
    assert _metadata(tmp_path / "f.zarr" / "1" / "band_data")["fill_value"] == -9999
    level0 = xr.open_zarr(tmp_path / "f.zarr", group="0")
    assert level0.x.attrs["standard_name"] == "longitude" and level0.y.attrs["standard_name"] == "latitude"
    assert len(_files(tmp_path / "f.zarr" / "0" / "band_data" / "c")) == 4  # 2 x 2 shards of 1024 x 1024


def test_nodata_is_masked_by_xarrays_default_call(tmp_path):
    """`xarray.open_zarr(store, group="0")`, as the README says to read it: nodata pixels are NaN (xarray does not
    take a Zarr v3 fill_value as a mask; was: the raw -9999), the rest as in the source."""
    data = np.arange(12, dtype="float32").reshape(1, 3, 4)
    data[0, 1, 2] = -9999
    with rasterio.open(tmp_path / "n.tif", "w", driver="GTiff", width=4, height=3, count=1, dtype="float32",
                       crs="EPSG:4326", transform=from_origin(0, 3, 1, 1), nodata=-9999) as dst:
        dst.write(data)
    write_geozarr(str(tmp_path / "n.tif"), tmp_path / "n.zarr")
    read = xr.open_zarr(tmp_path / "n.zarr", group="0")["band_data"].values
    assert np.isnan(read[0, 1, 2]) and np.isnan(read).sum() == 1
    assert np.array_equal(read[~np.isnan(read)], data[data != -9999])


def test_shards_fit_the_memory_budget():
    assert geozarr._shard_shape(3, 1) == (3, 4096)  # RGB bytes: 48 MB
    assert geozarr._shard_shape(1, 4) == (1, 4096)  # float32: 64 MB
    assert geozarr._shard_shape(4, 8) == (4, 1024)  # 4 float64 bands: 32 MB, halved until it fits
    assert geozarr._shard_shape(300, 8) == (1, 2048)  # a hyperspectral cube: a shard per band


def test_raster_without_crs_has_grid_but_no_proj(tmp_path):
    path = tmp_path / "n.tif"
    with rasterio.open(path, "w", driver="GTiff", width=40, height=30, count=1, dtype="int16",
                       transform=from_origin(0, 30, 1, 1)) as dst:
        dst.write(np.ones((1, 30, 40), "int16"))
    write_geozarr(str(path), tmp_path / "n.zarr")
    _check_store(tmp_path / "n.zarr", path, Resampling.mode)
    assert not any(k.startswith("proj:") for k in _metadata(tmp_path / "n.zarr")["attributes"])


def test_gdal_reads_geozarr(tmp_path):
    """GDAL's Zarr driver (what rasterio opens): values, CRS and transform when this GDAL reads Zarr v3 sharding."""
    src = shared("RGB.byte.tif")
    write_geozarr(str(src), tmp_path / "rgb.zarr")
    try:
        r = rasterio.open(f'ZARR:"{tmp_path / "rgb.zarr"}":/0/band_data')
    except rasterio.errors.RasterioIOError as e:  # GDAL < 3.11 lacks the v3 `bytes`/`sharding_indexed` codecs
        pytest.skip(f"GDAL {rasterio.__gdal_version__} cannot read it: {e}")
    with r, rasterio.open(src) as s:
        assert np.array_equal(r.read(), s.read()) and r.crs == s.crs and r.transform.almost_equals(s.transform)


def _rotated(path: Path, dtype="float32", nodata=-9999) -> Path:
    """A 20 x 20 raster of distinct values whose affine turns it 30 degrees (rotation terms b, d non-zero), 100 m
    pixels in UTM: its top-left corner is the origin, the rest is not on the axis-aligned grid."""
    angle = np.radians(30)
    transform = rasterio.Affine(100 * np.cos(angle), 100 * np.sin(angle), 500_000,
                                100 * np.sin(angle), -100 * np.cos(angle), 4_500_000)
    data = np.arange(1, 401, dtype=dtype).reshape(1, 20, 20)
    data[0, 5, 7] = nodata if nodata is not None else data[0, 5, 7]
    with rasterio.open(path, "w", driver="GTiff", width=20, height=20, count=1, dtype=dtype, crs="EPSG:32618",
                       transform=transform, nodata=nodata) as dst:
        dst.write(data)
    return path


def test_rotated_raster_is_resampled_north_up(tmp_path):
    """A rotated GeoTIFF: its GeoZarr's x/y are those of a north-up grid covering it, and each value read with the
    README's call is the source pixel under that pixel's centre (was: x/y from a and e only, the rotation dropped,
    so pixels sat up to ~1 km off here and ~3 km on a real raster)."""
    src = _rotated(tmp_path / "rot.tif")
    stats = write_geozarr(str(src), tmp_path / "rot.zarr")
    assert stats.north_up
    level = xr.open_zarr(tmp_path / "rot.zarr", group="0")
    xs, ys = np.meshgrid(level.x.values, level.y.values)
    with rasterio.open(src) as r:
        cols, rows = ~r.transform * (xs.ravel(), ys.ravel())
        cols, rows = np.floor(cols).astype(int), np.floor(rows).astype(int)
        inside = (rows >= 0) & (rows < 20) & (cols >= 0) & (cols < 20)
        source = r.read(1, masked=True).astype("float64").filled(np.nan)
    got = level["band_data"].values[0].ravel().astype("float64")
    assert np.isnan(got[~inside]).all() and inside.sum() > 300  # outside the rotated footprint: nodata
    assert np.array_equal(got[inside], source[rows[inside], cols[inside]], equal_nan=True)
    assert all(c.passed for c in check_geozarr(tmp_path / "rot.zarr", str(src))), check_geozarr(tmp_path / "rot.zarr", str(src))


def test_rotated_integer_raster_without_nodata(tmp_path):
    """The corners a north-up grid adds are the type's largest value when no pixel has it (checked against the
    source, masked by xarray); refused when both extremes are real values."""
    src = _rotated(tmp_path / "rot.tif", dtype="uint16", nodata=None)
    write_geozarr(str(src), tmp_path / "rot.zarr")
    assert all(c.passed for c in check_geozarr(tmp_path / "rot.zarr", str(src)))
    level = xr.open_zarr(tmp_path / "rot.zarr", group="0")
    values = level[list(level.data_vars)[0]].values
    assert np.isnan(values).sum() > 0 and np.nanmax(values) == 400  # corners masked; no 65535 read as data
    with rasterio.open(src, "r+") as dst:
        dst.write(np.array([[0, 65535]], dtype="uint16").reshape(1, 1, 2), window=((0, 1), (0, 2)))
    with pytest.raises(CngInputError, match="rotated and declares no nodata"):
        write_geozarr(str(src), tmp_path / "both.zarr")


def test_check_fails_on_coordinates_shifted_by_half_a_pixel(tmp_path):
    """The blocking check passes on what write_geozarr wrote and fails once x is shifted by half a pixel (what a
    corner-instead-of-centre coordinate bug would publish)."""
    path = tmp_path / "f.tif"
    data = np.arange(20 * 20, dtype="float32").reshape(1, 20, 20)
    data[0, 3, 4] = -9999
    with rasterio.open(path, "w", driver="GTiff", width=20, height=20, count=1, dtype="float32", crs="EPSG:32618",
                       transform=from_origin(500_000, 4_500_000, 30, 30), nodata=-9999) as dst:
        dst.write(data)
    write_geozarr(str(path), tmp_path / "f.zarr")
    checks = {c.name: c for c in check_geozarr(tmp_path / "f.zarr", str(path))}
    assert all(c.passed for c in checks.values()) and checks["values_match_source"].detail["masked_in_source"] <= 1
    x = zarr.open_array(str(tmp_path / "f.zarr" / "0" / "x"), mode="r+")
    x[:] = x[:] + 15  # half a 30 m pixel east
    shifted = {c.name: c for c in check_geozarr(tmp_path / "f.zarr", str(path))}
    assert not shifted["corners_match_source"].passed
    assert shifted["corners_match_source"].detail["max_offset"] == pytest.approx(15)


@pytest.mark.filterwarnings("ignore:Consolidated metadata")
def test_check_fails_on_unmasked_nodata(tmp_path):
    """Values: a GeoZarr whose nodata reads as a number (no _FillValue) fails the value check."""
    path = tmp_path / "f.tif"
    data = np.full((1, 20, 20), -9999, dtype="float32")
    with rasterio.open(path, "w", driver="GTiff", width=20, height=20, count=1, dtype="float32", crs="EPSG:32618",
                       transform=from_origin(500_000, 4_500_000, 30, 30), nodata=-9999) as dst:
        dst.write(data)
    write_geozarr(str(path), tmp_path / "f.zarr")
    assert all(c.passed for c in check_geozarr(tmp_path / "f.zarr", str(path)))
    band = zarr.open_array(str(tmp_path / "f.zarr" / "0" / "band_data"), mode="r+")
    band.attrs.pop("_FillValue")
    zarr.consolidate_metadata(str(tmp_path / "f.zarr"))
    checks = {c.name: c for c in check_geozarr(tmp_path / "f.zarr", str(path))}
    assert not checks["values_match_source"].passed and checks["corners_match_source"].passed
