"""COG writing: valid COG (tiled, overviews, COG layout), nodata kept, compression by data type, native CRS kept
unless asked; the audit's COG check (the same validator) passes on the output and fails on the input."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from cng_assets.transforms.legacy import inspect_tiff
from cng_assets.transforms.raster.cog import write_cog
from tests.conftest import shared

pytestmark = pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")


def test_rgb_sample_becomes_a_valid_cog_in_its_native_crs(tmp_path):
    src = shared("RGB.byte.tif")
    assert inspect_tiff("in", str(src), {}).findings  # the sample is striped: not a COG
    stats = write_cog(str(src), tmp_path / "rgb.tif")
    assert inspect_tiff("out", str(tmp_path / "rgb.tif"), {}).findings == []
    assert stats.crs == "EPSG:32618" and stats.nodata == 0 and stats.bands == 3 and stats.overviews
    with rasterio.open(src) as a, rasterio.open(tmp_path / "rgb.tif") as b:
        assert np.array_equal(a.read(), b.read())  # lossless
        assert b.profile["compress"].lower() == "zstd" and b.block_shapes[0] == (512, 512)


def test_float_raster_uses_the_float_predictor_and_can_be_warped_to_wgs84(tmp_path):
    src = tmp_path / "f.tif"
    data = np.linspace(0, 1, 1200 * 900, dtype="float32").reshape(1, 900, 1200)
    data[0, :10, :10] = -9999
    with rasterio.open(src, "w", driver="GTiff", width=1200, height=900, count=1, dtype="float32", crs="EPSG:32618",
                       transform=from_origin(500000, 4500000, 30, 30), nodata=-9999) as dst:
        dst.write(data)
    stats = write_cog(str(src), tmp_path / "f_cog.tif")
    assert stats.predictor == 3 and stats.nodata == -9999 and stats.crs == "EPSG:32618"
    warped = write_cog(str(src), tmp_path / "f_4326.tif", to_wgs84=True)
    assert warped.crs == "EPSG:4326" and inspect_tiff("w", str(tmp_path / "f_4326.tif"), {}).findings == []
