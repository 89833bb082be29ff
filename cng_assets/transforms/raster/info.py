"""The raster layers of a source, read with rasterio's GDAL: a GeoTIFF is one layer; a container with several
rasters (GeoPackage tiles, NetCDF, HDF) lists them as subdatasets, each a layer."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import PurePosixPath

# in each raster hex file's metadata: where its H3 resolution came from, "pixel size" or "catalog" (STAC says it)
H3_RESOLUTION_SOURCE = b"cng:h3_resolution_source"


@dataclass
class RasterInfo:
    name: str
    path: str  # what GDAL opens for this layer (a subdataset name for containers)
    width: int
    height: int
    bands: int
    dtype: str
    nodata: float | None
    crs: str | None

    def to_json(self) -> dict:
        return {"path": self.path, "width": self.width, "height": self.height, "bands": self.bands,
                "dtype": self.dtype, "nodata": self.nodata}


def _open_info(path: str, name: str | None = None) -> RasterInfo:
    import rasterio

    with rasterio.open(path) as r:
        identifier = r.tags().get("IDENTIFIER")  # GeoPackage raster table name
        opened = path
        if r.driver == "GPKG" and identifier and not path.startswith("GPKG:"):
            opened = f"GPKG:{path}:{identifier}"
        return RasterInfo(name or identifier or PurePosixPath(path).stem, opened, r.width, r.height, r.count,
                          r.dtypes[0], r.nodata, str(r.crs) if r.crs else None)


def list_rasters(path: str, gdal_options: dict | None = None) -> list[RasterInfo]:
    """Every raster layer of `path`; empty when GDAL sees no raster in it."""
    import rasterio
    from rasterio.errors import RasterioIOError

    with rasterio.Env(**(gdal_options or {})), warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        try:
            with rasterio.open(path) as r:
                subdatasets = list(r.subdatasets)
                is_raster = r.count > 0 and r.width > 0
        except RasterioIOError:
            return []
        if subdatasets:
            return [_open_info(s, s.rsplit(":", 1)[-1]) for s in subdatasets]
        return [_open_info(path)] if is_raster else []


def crs_code_or_wkt2(crs) -> tuple[str | None, str | None]:
    """A rasterio CRS as STAC and GeoZarr's `proj:` name it: ("EPSG:<code>", None), else (None, its WKT2) for a
    CRS without an EPSG code; (None, None) without a CRS."""
    if crs is None:
        return None, None
    import pyproj

    epsg = crs.to_epsg()
    return (f"EPSG:{epsg}", None) if epsg else (None, pyproj.CRS.from_wkt(crs.to_wkt()).to_wkt("WKT2_2019"))


def row_chunks(height: int, width: int, max_chunks: int, target_pixels: int) -> list[tuple[int, int]]:
    """Bands of rows, as equal as can be, each about `target_pixels`: a raster's hex chunks (at most `max_chunks`)."""
    n = max(1, min(max_chunks, height, -(-height * width // target_pixels)))
    edges = [round(i * height / n) for i in range(n + 1)]
    return list(zip(edges[:-1], edges[1:]))
