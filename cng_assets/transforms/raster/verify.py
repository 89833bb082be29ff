"""Raster products checked against their source by another path than the one that wrote them: the GeoZarr opened
as its README says (`xarray.open_zarr(store, group="0")`, default decoding) against rasterio reading the source
(corner pixel centres, footprint, pixel values under sampled centres)."""

from __future__ import annotations

import numpy as np

from cng_assets.transforms.hex.consolidate import HexCheck as Check
from cng_assets.transforms.raster.geozarr import north_up

SAMPLE = 256  # pixels (or cells) compared value by value


def _source_values(src, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """(band, point) values of the source pixels under the points (x, y in its CRS), NaN where masked or outside:
    each pixel found by inverting the source's affine, read alone."""
    from rasterio.windows import Window

    cols, rows = ~src.transform * (xs, ys)
    cols, rows = np.floor(cols).astype(int), np.floor(rows).astype(int)
    out = np.full((src.count, len(xs)), np.nan)
    for i, (r, c) in enumerate(zip(rows, cols)):
        if 0 <= r < src.height and 0 <= c < src.width:
            px = src.read(window=Window(c, r, 1, 1), masked=True)[:, 0, 0]
            out[:, i] = np.where(np.ma.getmaskarray(px), np.nan, px.data.astype(float))
    return out


def check_geozarr(store, src_path: str, sample: int = SAMPLE, gdal_options: dict | None = None) -> list[Check]:
    """Level 0 of the GeoZarr at `store` against the raster it was made from: the pixel centres of its four corners
    equal the source's transform (for a rotated source, the north-up grid GDAL warps it to, and the footprints
    agree within a pixel); on a sample of pixels, the values xarray decodes by default (nodata masked as NaN)
    equal the source pixel under each pixel's centre."""
    import rasterio
    import xarray as xr

    level = xr.open_zarr(store, group="0")
    x, y = level["x"].values, level["y"].values
    h, w = len(y), len(x)
    with rasterio.Env(**(gdal_options or {})), rasterio.open(src_path) as src:
        with north_up(src) as grid:
            t, shape = grid.transform, (grid.height, grid.width)
        corners = [(0, 0), (0, w - 1), (h - 1, 0), (h - 1, w - 1)]
        got = [(float(x[c]), float(y[r])) for r, c in corners]
        want = [t * (c + 0.5, r + 0.5) for r, c in corners]
        tol = 1e-6 * max(abs(t.a), abs(t.e))
        off = max(max(abs(g[0] - e[0]), abs(g[1] - e[1])) for g, e in zip(got, want))
        # the footprint: the source's four corners (rotated or not) vs the GeoZarr's outer edges
        sx, sy = np.array([src.transform * p for p in ((0, 0), (src.width, 0), (0, src.height),
                                                        (src.width, src.height))]).T
        dx, dy = abs(x[-1] - x[0]) / max(w - 1, 1), abs(y[-1] - y[0]) / max(h - 1, 1)
        edges = np.array([x.min() - dx / 2, y.min() - dy / 2, x.max() + dx / 2, y.max() + dy / 2])
        source_box = np.array([sx.min(), sy.min(), sx.max(), sy.max()])
        footprint_off = np.abs(edges - source_box) / np.array([dx, dy, dx, dy])

        rng = np.random.default_rng(0)
        n = min(sample, h * w)
        picks = rng.choice(h * w, size=n, replace=False)
        rows, cols = np.r_[[r for r, _ in corners], picks // w], np.r_[[c for _, c in corners], picks % w]
        expected = _source_values(src, x[cols], y[rows])
    band_data = level["band_data"]
    values = band_data.isel(y=xr.DataArray(rows, dims="p"), x=xr.DataArray(cols, dims="p")).values.astype(float)
    same = (values == expected) | (np.isnan(values) & np.isnan(expected))
    bad = np.flatnonzero(~same.all(axis=0))
    return [
        Check("corners_match_source", bool(shape == (h, w) and off <= tol and (footprint_off <= 1 + 1e-9).all()),
              {"shape": [h, w], "expected_shape": list(shape), "corner_centres": [list(p) for p in got],
               "expected_corner_centres": [list(p) for p in want], "max_offset": float(off),
               "footprint_offset_pixels": [float(v) for v in footprint_off]}),
        Check("values_match_source", not len(bad),
              {"pixels_compared": int(len(rows)), "masked_in_source": int(np.isnan(expected[0]).sum()),
               "mismatches": int(len(bad)),
               "first_mismatch": {"row": int(rows[bad[0]]), "col": int(cols[bad[0]]),
                                  "geozarr": values[:, bad[0]].tolist(), "source": expected[:, bad[0]].tolist()}
               if len(bad) else "none"}),
    ]
