"""GeoTIFF (or any GDAL raster) -> Cloud-Optimized GeoTIFF, with GDAL's COG driver (through rasterio's GDAL).

Compression follows the data type, lossless: ZSTD with the horizontal predictor for integers and the
floating-point predictor for floats. Overviews are built down to one tile, resampled by `mode` for integer
(categorical) data and `average` for continuous data. Nodata is kept. The native CRS is kept unless the catalog
asks for EPSG:4326, in which case the COG driver warps while it writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cng_assets.errors import no_crs

VERSION = "1"


@dataclass
class CogStats:
    width: int
    height: int
    bands: int
    dtype: str
    crs: str | None
    nodata: float | None
    compression: str
    predictor: int
    overviews: list[int]
    bytes: int


def cog_options(dtype: str, categorical: bool | None = None) -> dict[str, str]:
    floating = np.issubdtype(np.dtype(dtype), np.floating)
    categorical = (not floating) if categorical is None else categorical
    return {"COMPRESS": "ZSTD", "LEVEL": "9", "PREDICTOR": "3" if floating else "2", "BLOCKSIZE": "512",
            "OVERVIEWS": "IGNORE_EXISTING", "OVERVIEW_RESAMPLING": "MODE" if categorical else "AVERAGE",
            "BIGTIFF": "IF_SAFER", "NUM_THREADS": "ALL_CPUS"}


def write_cog(src_path: str, out: Path, to_wgs84: bool = False, categorical: bool | None = None,
              gdal_options: dict | None = None, crs: str | None = None) -> CogStats:
    """`crs` is used only when the raster declares none (as for vector layers); without either, no COG."""
    import rasterio
    from rasterio.crs import CRS
    from rasterio.shutil import copy as gdal_copy

    with rasterio.Env(**(gdal_options or {})):
        with rasterio.open(src_path) as src:
            options = cog_options(src.dtypes[0], categorical)
            declared = src.crs
        if not declared:
            if crs is None:
                raise no_crs("raster", "EPSG:32618")
            placed = Path(out).with_name(Path(out).name + ".crs.tif")  # a copy that says it, beside the output
            gdal_copy(src_path, str(placed), driver="GTiff")
            with rasterio.open(placed, "r+") as copy:
                copy.crs = CRS.from_user_input(crs)
            src_path = str(placed)
        if to_wgs84:
            options |= {"TARGET_SRS": "EPSG:4326", "RESAMPLING": "NEAREST" if options["OVERVIEW_RESAMPLING"] == "MODE" else "BILINEAR"}
        try:
            gdal_copy(src_path, str(out), driver="COG", **options)
        finally:
            if not declared:
                Path(src_path).unlink(missing_ok=True)
        with rasterio.open(out) as cog:
            return CogStats(cog.width, cog.height, cog.count, cog.dtypes[0], str(cog.crs) if cog.crs else None,
                            cog.nodata, options["COMPRESS"], int(options["PREDICTOR"]), cog.overviews(1),
                            Path(out).stat().st_size)
