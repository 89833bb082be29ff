"""GeoZarr: every level opens with xarray with the CRS and coordinates, level 0 holds the source's pixels, each
next level halves down to one chunk and is listed in `multiscales`."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import xarray as xr
import zarr
from rasterio.transform import from_origin

from cng_assets.transforms.raster.cog import write_cog
from cng_assets.transforms.raster.geozarr import write_geozarr
from tests.conftest import shared


def test_rgb_sample_as_multiscale_geozarr(tmp_path):
    src = shared("RGB.byte.tif")
    write_cog(str(src), tmp_path / "rgb.tif")
    stats = write_geozarr(str(tmp_path / "rgb.tif"), tmp_path / "rgb.zarr")
    assert stats.levels == [[718, 791], [359, 396]] and stats.reduction == "mode"  # uint8: class-safe reduction
    root = zarr.open_group(str(tmp_path / "rgb.zarr"), mode="r")
    assert [d["path"] for d in root.attrs["multiscales"][0]["datasets"]] == ["0", "1"]
    level0 = xr.open_zarr(tmp_path / "rgb.zarr", group="0", mask_and_scale=False)  # raw values, nodata 0 kept
    with rasterio.open(src) as r:
        assert np.array_equal(level0["band_data"].values, r.read())
        assert level0["band_data"].dims == ("band", "y", "x")
        assert level0.x.values[0] == pytest.approx(r.transform.c + r.transform.a / 2)
        assert rasterio.crs.CRS.from_wkt(level0["spatial_ref"].attrs["crs_wkt"]) == r.crs
    level1 = xr.open_zarr(tmp_path / "rgb.zarr", group="1")
    assert level1["band_data"].shape == (3, 359, 396)


def test_float_raster_levels_average_and_keep_nodata(tmp_path):
    path = tmp_path / "f.tif"
    data = np.arange(1300 * 1100, dtype="float32").reshape(1, 1100, 1300)
    with rasterio.open(path, "w", driver="GTiff", width=1300, height=1100, count=1, dtype="float32", crs="EPSG:4326",
                       transform=from_origin(-10, 10, 0.01, 0.01), nodata=-9999) as dst:
        dst.write(data)
    stats = write_geozarr(str(path), tmp_path / "f.zarr")
    assert stats.levels == [[1100, 1300], [550, 650], [275, 325]] and stats.reduction == "average"
    level1 = xr.open_zarr(tmp_path / "f.zarr", group="1")
    assert float(level1["band_data"][0, 0, 0]) == pytest.approx(data[0, :2, :2].mean())
    assert zarr.open_array(str(tmp_path / "f.zarr" / "1" / "band_data"), mode="r").fill_value == -9999
