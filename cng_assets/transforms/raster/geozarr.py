"""A raster (best: its COG) -> GeoZarr: a Zarr v3 store with one group per resolution level ("0" full, "1" half,
...) down to one chunk, laid out per the Zarr conventions GeoZarr is made of (https://github.com/zarr-conventions):
the root's `multiscales` lists the levels (each derived from the previous one, with its scale and resampling), and
the root and each level carry `proj:` (the CRS) and `spatial:` (dimensions, affine transform, shape, bbox), each
declared in `zarr_conventions` (built with zarr-cm, which owns the UUIDs and schema URLs).

Each level is also a CF dataset that xarray, rioxarray and GDAL open as is: `band_data` (band, y, x) in 512 x 512
chunks per band, grouped into shards (one object per up to 4096 x 4096 pixels, not thousands of small ones),
pixel-centre `x`/`y` coordinates with CF units and standard names, and a `spatial_ref` grid mapping with pyproj's CF
attributes (`grid_mapping_name`, `crs_wkt`, ...) plus GDAL's `spatial_ref` and `GeoTransform`. Levels are written a
shard at a time, each read from the source already reduced (GDAL uses the COG's overviews), so memory stays bounded
by one shard.

A rotated raster (an affine with rotation/shear terms) is first resampled north-up (GDAL's warper, nearest
neighbour, onto the axis-aligned grid GDAL suggests): xarray, rioxarray and GDAL's Zarr driver all read a level as
a regular grid of 1-D `x`/`y` coordinates (`sel(x=..., y=...)`, rioxarray's transform); 2-D coordinates would break
those calls. Nearest keeps every value a source pixel's (the one under the new pixel's centre), so it can be
checked pixel by pixel; the corners outside the rotated footprint are nodata.
"""

from __future__ import annotations

import base64
import struct
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cng_assets.errors import CngInputError
from cng_assets.transforms.raster.info import crs_code_or_wkt2

VERSION = "4"  # 3: nodata also as CF _FillValue (xarray masks it); 4: a rotated raster resampled north-up
CHUNK = 512
SHARD = 4096  # pixels a side at most: few objects per level, yet ranged reads stay per chunk (the shard index)
SHARD_BYTES = 64 * 2**20  # a shard is held in memory while written (zarr encodes a whole shard at once)


@dataclass
class GeoZarrStats:
    levels: list[list[int]]  # [height, width] per level
    bands: int
    dtype: str
    crs: str | None
    reduction: str
    north_up: bool = False  # resampled north-up from a rotated raster


def is_rotated(transform) -> bool:
    """Rotation or shear terms: 1-D x/y coordinates cannot place the pixels."""
    return transform.b != 0 or transform.d != 0


@contextmanager
def north_up(src):
    """`src` itself, or for a rotated raster a nearest-neighbour north-up view of it (GDAL's suggested grid).
    Without a nodata value the corners outside the footprint need one: NaN for floats; for integers, the type's
    largest (or smallest) value when no pixel has it; else it is refused (any other value could be a real one)."""
    from rasterio.enums import Resampling
    from rasterio.vrt import WarpedVRT

    if not is_rotated(src.transform):
        yield src
        return
    nodata = src.nodata
    if nodata is None:
        nodata = np.nan if np.issubdtype(np.dtype(src.dtypes[0]), np.floating) else _unused_extreme(src)
        if nodata is None:
            raise CngInputError("the raster is rotated and declares no nodata value: resampled north-up, its corners "
                                "outside the rotated footprint would read as real values",
                                hint="declare its nodata value (e.g. `gdal_edit.py -a_nodata 255 file.tif`), or "
                                     "resample it north-up yourself (`gdalwarp in.tif out.tif`)")
    with WarpedVRT(src, resampling=Resampling.nearest, nodata=nodata) as vrt:
        yield vrt


def _unused_extreme(src) -> int | None:
    """The integer type's largest value, else its smallest, when no pixel of any band has it (read block by block)."""
    low, high = np.iinfo(np.dtype(src.dtypes[0])).min, np.iinfo(np.dtype(src.dtypes[0])).max
    has_low = has_high = False
    for _, window in src.block_windows(1):
        block = src.read(window=window)
        has_low, has_high = has_low or bool((block == low).any()), has_high or bool((block == high).any())
        if has_low and has_high:
            return None
    return low if has_high else high


def write_geozarr(src_path: str, out: Path, categorical: bool | None = None, gdal_options: dict | None = None) -> GeoZarrStats:
    import rasterio
    import zarr
    import zarr_cm
    from rasterio.enums import Resampling
    from rasterio.windows import Window

    root = zarr.open_group(str(out), mode="w", zarr_format=3)
    with rasterio.Env(**(gdal_options or {})), rasterio.open(src_path) as source, north_up(source) as src:
        dtype = np.dtype(src.dtypes[0])
        categorical = np.issubdtype(dtype, np.integer) if categorical is None else categorical
        resampling = Resampling.mode if categorical else Resampling.average
        nodata = src.nodata if src.nodata is not None else (np.nan if np.issubdtype(dtype, np.floating) else None)
        levels, h, w = [], src.height, src.width
        while True:
            levels.append((h, w))
            if max(h, w) <= CHUNK:
                break
            h, w = -(-h // 2), -(-w // 2)
        bands, side = _shard_shape(src.count, dtype.itemsize)
        proj = _proj(src.crs)
        crs_cf, axes = _cf(src.crs)  # the same for every level: only the GeoTransform differs
        layout = []
        for i, (h, w) in enumerate(levels):
            transform = src.transform * src.transform.scale(src.width / w, src.height / h)
            spatial = _spatial(transform, h, w)
            group = root.create_group(str(i), attributes=zarr_cm.create_many({**proj, "spatial": spatial}))
            chunks = (1, min(CHUNK, h), min(CHUNK, w))
            shards = (bands, min(side, _ceil(h, chunks[1])), min(side, _ceil(w, chunks[2])))
            data = group.create_array("band_data", shape=(src.count, h, w), chunks=chunks, shards=shards, dtype=dtype,
                                      fill_value=nodata, dimension_names=("band", "y", "x"),  # nodata: the fill_value
                                      attributes={"grid_mapping": "spatial_ref", "coordinates": "spatial_ref",
                                                  **_cf_fill_value(nodata, dtype)})
            for b0 in range(0, src.count, bands):  # shard-aligned writes: no shard is read back and rewritten
                for r0 in range(0, h, shards[1]):
                    for c0 in range(0, w, shards[2]):
                        b1, r1, c1 = min(src.count, b0 + bands), min(h, r0 + shards[1]), min(w, c0 + shards[2])
                        top, bottom = round(r0 * src.height / h), round(r1 * src.height / h)
                        left, right = round(c0 * src.width / w), round(c1 * src.width / w)
                        data[b0:b1, r0:r1, c0:c1] = src.read(
                            list(range(b0 + 1, b1 + 1)), window=Window(left, top, right - left, bottom - top),
                            out_shape=(b1 - b0, r1 - r0, c1 - c0), resampling=resampling)
            _coords(group, transform, h, w, src.count, axes)
            group.create_array("spatial_ref", shape=(), dtype="int32", dimension_names=(),  # + GDAL's GeoTransform
                               attributes={**crs_cf, "GeoTransform": " ".join(str(v) for v in transform.to_gdal())})
            entry = {"asset": str(i), "transform": {"scale": [1.0, 1.0]}}
            if i:  # each level from the one before: the exact ratio, as odd sizes round up when halved
                entry = {"asset": str(i), "derived_from": str(i - 1), "resampling_method": resampling.name,
                         "transform": {"scale": [levels[i - 1][0] / h, levels[i - 1][1] / w]}}
            layout.append({**entry, "spatial:transform": spatial["spatial:transform"], "spatial:shape": [h, w]})
        full = _spatial(src.transform, src.height, src.width)
        root.attrs.update(zarr_cm.create_many({
            "multiscales": zarr_cm.multiscales.create(layout=layout, resampling_method=resampling.name),
            **proj, "spatial": full}))
        with warnings.catch_warnings():  # consolidated metadata is not in the v3 spec yet; xarray and zarr-python read it
            warnings.simplefilter("ignore")
            zarr.consolidate_metadata(str(out))  # one read to open it (over HTTP too)
        return GeoZarrStats([[h, w] for h, w in levels], src.count, str(dtype),
                            str(src.crs) if src.crs else None, resampling.name, src is not source)


def _cf_fill_value(nodata, dtype: np.dtype) -> dict:
    """Nodata as CF's `_FillValue`, encoded as xarray reads it from Zarr v3 (a float as the base64 of its
    little-endian double), so `xarray.open_zarr(store, group="0")` masks it by default: xarray does not take the
    Zarr v3 `fill_value` as a mask. NaN needs none: it reads as missing already."""
    if nodata is None or (np.issubdtype(dtype, np.floating) and np.isnan(nodata)):
        return {}
    if np.issubdtype(dtype, np.floating):
        return {"_FillValue": base64.standard_b64encode(struct.pack("<d", float(nodata))).decode()}
    return {"_FillValue": int(nodata)}


def _ceil(n: int, step: int) -> int:
    return -(-n // step) * step


def _shard_shape(count: int, itemsize: int) -> tuple[int, int]:
    """Bands per shard (all, unless even one chunk of each is over budget) and its side in pixels (a multiple of the
    chunk, halved from SHARD until the shard fits SHARD_BYTES)."""
    bands = count if count * CHUNK * CHUNK * itemsize <= SHARD_BYTES else 1
    side = SHARD
    while side > CHUNK and bands * side * side * itemsize > SHARD_BYTES:
        side //= 2
    return bands, side


def _proj(crs) -> dict:
    """The `proj:` convention: the EPSG code, else the CRS in full (WKT2); nothing without a CRS."""
    import zarr_cm

    if crs is None:
        return {}
    code, wkt2 = crs_code_or_wkt2(crs)
    return {"proj": zarr_cm.proj.create(code=code, wkt2=wkt2)}


def _spatial(transform, h: int, w: int) -> dict:
    """The `spatial:` convention of a (y, x) grid: its affine transform (rasterio's a..f), shape and bbox."""
    import zarr_cm
    from rasterio.transform import array_bounds

    west, south, east, north = array_bounds(h, w, transform)
    return zarr_cm.spatial.create(dimensions=["y", "x"], transform=list(transform)[:6], shape=[h, w],
                                  bbox=[west, south, east, north], registration="pixel")


def _cf(crs) -> tuple[dict, dict]:
    """The CRS's CF grid-mapping attributes (what xarray/cf readers take) plus the `spatial_ref` WKT GDAL and
    rioxarray read; and CF attributes per axis ("X", "Y"). Empty without a CRS."""
    import pyproj

    if crs is None:
        return {}, {}
    cf_crs = pyproj.CRS.from_wkt(crs.to_wkt())
    with warnings.catch_warnings():  # a CRS CF has no grid_mapping_name for still gets its crs_wkt
        warnings.simplefilter("ignore")
        grid_mapping = cf_crs.to_cf()
    return {**grid_mapping, "spatial_ref": crs.to_wkt()}, {a["axis"]: a for a in cf_crs.cs_to_cf()}


def _coords(group, transform, h: int, w: int, bands: int, axes: dict) -> None:
    """Pixel-centre coordinates of a level, in the raster's CRS, with CF axis attributes (`axes`, from _cf); and
    band numbers."""
    x = transform.c + transform.a * (np.arange(w) + 0.5)
    y = transform.f + transform.e * (np.arange(h) + 0.5)
    for name, values in (("x", x), ("y", y), ("band", np.arange(1, bands + 1, dtype="int32"))):
        attrs = {k: axes[name.upper()][k] for k in ("standard_name", "long_name", "units", "axis")
                 if k in axes.get(name.upper(), {})}
        arr = group.create_array(name, shape=values.shape, chunks=values.shape, dtype=values.dtype,
                                 dimension_names=(name,), attributes=attrs)
        arr[:] = values
