"""A raster (best: its COG) -> GeoZarr: a Zarr v3 store with one group per resolution level ("0" full, "1" half,
...) down to one chunk, listed in the root's `multiscales` attribute. Each level is a CF-style dataset that xarray
opens as is: `band_data` (band, y, x) chunked 512 x 512 per band, pixel-centre `x`/`y` coordinates, and a
`spatial_ref` grid mapping carrying the CRS (WKT) and the GeoTransform. Levels are written a band of rows at a
time, each read from the source already reduced (GDAL uses the COG's overviews), so memory stays bounded.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

VERSION = "1"
CHUNK = 512


@dataclass
class GeoZarrStats:
    levels: list[list[int]]  # [height, width] per level
    bands: int
    dtype: str
    crs: str | None
    reduction: str


def write_geozarr(src_path: str, out: Path, categorical: bool | None = None, gdal_options: dict | None = None) -> GeoZarrStats:
    import rasterio
    import zarr
    from rasterio.enums import Resampling
    from rasterio.windows import Window

    root = zarr.open_group(str(out), mode="w", zarr_format=3)
    with rasterio.Env(**(gdal_options or {})), rasterio.open(src_path) as src:
        dtype = np.dtype(src.dtypes[0])
        categorical = np.issubdtype(dtype, np.integer) if categorical is None else categorical
        resampling = Resampling.mode if categorical else Resampling.average
        nodata = src.nodata if src.nodata is not None else (np.nan if np.issubdtype(dtype, np.floating) else None)
        levels, h, w, factor = [], src.height, src.width, 1
        while True:
            levels.append((h, w, factor))
            if max(h, w) <= CHUNK:
                break
            h, w, factor = -(-h // 2), -(-w // 2), factor * 2
        for i, (h, w, factor) in enumerate(levels):
            group = root.create_group(str(i))
            data = group.create_array("band_data", shape=(src.count, h, w), chunks=(1, min(CHUNK, h), min(CHUNK, w)),
                                      dtype=dtype, fill_value=nodata, dimension_names=("band", "y", "x"),
                                      attributes={"grid_mapping": "spatial_ref"})  # nodata: the array's fill_value
            transform = src.transform * src.transform.scale(src.width / w, src.height / h)
            for r0 in range(0, h, CHUNK):  # a band of rows at a time, read already reduced
                r1 = min(h, r0 + CHUNK)
                top, bottom = round(r0 * src.height / h), round(r1 * src.height / h)
                data[:, r0:r1, :] = src.read(window=Window(0, top, src.width, bottom - top), out_shape=(src.count, r1 - r0, w),
                                             resampling=resampling)
            _coords(group, transform, h, w, src.count)
            ref = group.create_array("spatial_ref", shape=(), dtype="int32", dimension_names=())
            ref.attrs.update({"crs_wkt": src.crs.to_wkt() if src.crs else "", "spatial_ref": src.crs.to_wkt() if src.crs else "",
                              "GeoTransform": " ".join(str(v) for v in transform.to_gdal())})
        root.attrs["multiscales"] = [{
            "name": Path(out).stem, "type": "reduce", "metadata": {"method": resampling.name, "factor": 2},
            "datasets": [{"path": str(i), "shape": [h, w]} for i, (h, w, _) in enumerate(levels)]}]
        with warnings.catch_warnings():  # consolidated metadata is not in the v3 spec yet; xarray and zarr-python read it
            warnings.simplefilter("ignore")
            zarr.consolidate_metadata(str(out))  # one read to open it (over HTTP too)
        return GeoZarrStats([[h, w] for h, w, _ in levels], src.count, str(dtype),
                            str(src.crs) if src.crs else None, resampling.name)


def _coords(group, transform, h: int, w: int, bands: int) -> None:
    """Pixel-centre coordinates of a level, in the raster's CRS, and band numbers."""
    x = transform.c + transform.a * (np.arange(w) + 0.5)
    y = transform.f + transform.e * (np.arange(h) + 0.5)
    for name, values in (("x", x), ("y", y), ("band", np.arange(1, bands + 1, dtype="int32"))):
        arr = group.create_array(name, shape=values.shape, chunks=values.shape, dtype=values.dtype, dimension_names=(name,))
        arr[:] = values

