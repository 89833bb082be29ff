"""Raster products checked against their source by another path than the one that wrote them: the GeoZarr opened
as its README says (`xarray.open_zarr(store, group="0")`, default decoding) against rasterio reading the source
(corner pixel centres, footprint, pixel values under sampled centres); the raster hex against rasterio and h3-py
(coverage by area, sampled cells' statistics recomputed pixel by pixel)."""

from __future__ import annotations

from pathlib import Path

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


def _json(values: np.ndarray) -> list:
    """Values as check metadata: NaN (masked) as None, since JSON has no NaN."""
    return [None if np.isnan(v) else float(v) for v in values]


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
                                  "geozarr": _json(values[:, bad[0]]), "source": _json(expected[:, bad[0]])}
               if len(bad) else "none"}),
    ]


def _valid_area(src) -> tuple[float, float, int]:
    """(area of the valid pixels, area of all pixels, valid pixels), in m², a band of rows at a time: a pixel is
    valid when some band is (not masked, not NaN); each row's pixels are as big as its middle one."""
    from rasterio.windows import Window

    from cng_assets.transforms.raster.hex import pixel_areas_m2

    valid_area = total_area = 0.0
    valid_pixels = 0
    step = max(1, 2**22 // max(1, src.width * src.count))
    for top in range(0, src.height, step):
        rows = min(step, src.height - top)
        data = src.read(window=Window(0, top, src.width, rows), masked=True)
        ok = ~np.ma.getmaskarray(data)
        if np.issubdtype(data.dtype, np.floating):
            ok &= ~np.isnan(data.data)
        per_row = ok.any(axis=0).sum(axis=1)
        areas = pixel_areas_m2(src.transform, src.crs, np.arange(top, top + rows), src.width // 2)
        valid_area += float((per_row * areas).sum())
        total_area += float(areas.sum() * src.width)
        valid_pixels += int(per_row.sum())
    return valid_area, total_area, valid_pixels


def _cell_expected(src, cell: str, bands: list[int], to_crs, to_4326) -> dict[int, list] | None:
    """{band: values} of one cell from the source, one pixel at a time with h3-py: the valid pixels whose centres
    fall in the cell, else the pixel under its centre; None when the cell's window is too big to read."""
    import h3
    import rasterio
    from rasterio.windows import Window

    lat, lng = np.array(h3.cell_to_boundary(cell)).T
    cols, rows = ~src.transform * to_crs(lng, lat)
    c0, r0 = max(0, int(np.floor(cols.min())) - 1), max(0, int(np.floor(rows.min())) - 1)
    c1, r1 = min(src.width, int(np.ceil(cols.max())) + 1), min(src.height, int(np.ceil(rows.max())) + 1)
    if (c1 - c0) * (r1 - r0) > 2**20:
        return None
    data = src.read(bands, window=Window(c0, r0, max(0, c1 - c0), max(0, r1 - r0)), masked=True)
    ok = ~np.ma.getmaskarray(data) & (~np.isnan(data.data) if np.issubdtype(data.dtype, np.floating) else True)
    rr, cc = np.nonzero(ok.any(axis=0))
    xs, ys = rasterio.transform.xy(src.transform, rr + r0, cc + c0, offset="center")
    plng, plat = to_4326(np.asarray(xs), np.asarray(ys))
    inside = [h3.latlng_to_cell(la, lo, h3.get_resolution(cell)) == cell for lo, la in zip(plng, plat)]
    picked = [(r, c) for (r, c), i in zip(zip(rr, cc), inside) if i]
    if not picked:  # no valid pixel centre: the pixel under the cell's centre
        clat, clng = h3.cell_to_latlng(cell)
        col, row = ~src.transform * to_crs(np.array([clng]), np.array([clat]))
        r, c = int(np.floor(row[0])) - r0, int(np.floor(col[0])) - c0
        picked = [(r, c)] if 0 <= r < data.shape[1] and 0 <= c < data.shape[2] and ok[:, r, c].any() else []
    return {b: [data.data[i, r, c].item() for r, c in picked if ok[i, r, c]] for i, b in enumerate(bands)}


def _stat(values: list, stat: str):
    if not values:
        return 0 if stat == "count" else None
    if stat == "mode":
        uniq, n = np.unique(values, return_counts=True)
        return uniq[n == n.max()].min().item()
    return {"mean": np.mean, "sum": np.sum, "min": min, "max": max, "count": len}[stat](values)


def check_raster_hex(out_dir, src_path: str, resolution: int, sample: int = 64,
                     gdal_options: dict | None = None) -> list[Check]:
    """The raster hex product in `out_dir` against the raster it was made from. Coverage: the cells with a value
    are about as many as the valid pixels' area holds cells (at least that, less a tolerance for the edges; at most
    what the whole raster's area holds); cell areas are those of the product's own cells (a sample), pixel areas
    per row. Values: on a sample of cells, every statistic equals what h3-py and rasterio make of the source
    pixels (those whose centres fall in the cell, else the one under its centre)."""
    import h3
    import pyarrow.parquet as pq
    import rasterio
    from pyproj import Transformer

    files = sorted(Path(out_dir).glob("h0=*/*.parquet"))
    sizes = np.array([pq.read_metadata(f).num_rows for f in files], dtype=np.int64)
    picks = np.sort(np.random.default_rng(0).choice(sizes.sum(), size=min(sample, sizes.sum()), replace=False))
    starts = np.r_[0, np.cumsum(sizes)]
    cell_col, valued, picked = f"h{resolution}", 0, []
    for i, f in enumerate(files):  # the count columns of every file; whole rows only of the sampled ones
        counts = [c for c in pq.read_schema(f).names if c.endswith("_count")]
        t = pq.read_table(f, columns=counts)
        valued += int((np.column_stack([t.column(c).to_numpy() for c in counts]) > 0).any(axis=1).sum())
        mine = picks[(picks >= starts[i]) & (picks < starts[i + 1])] - starts[i]
        if len(mine):
            picked.extend(pq.read_table(f).take(mine).to_pylist())
    cells = [h3.int_to_str(r[cell_col]) for r in picked]
    cell_area = float(np.mean([h3.cell_area(c, "m^2") for c in cells])) if cells else h3.average_hexagon_area(resolution, "m^2")
    with rasterio.Env(**(gdal_options or {})), rasterio.open(src_path) as src:
        valid_area, total_area, valid_pixels = _valid_area(src)
        crs_4326 = src.crs.to_epsg() == 4326
        to_crs = (lambda x, y: (x, y)) if crs_4326 else Transformer.from_crs("EPSG:4326", src.crs, always_xy=True).transform
        to_4326 = (lambda x, y: (x, y)) if crs_4326 else Transformer.from_crs(src.crs, "EPSG:4326", always_xy=True).transform
        bands = sorted({int(c.split("_")[0][1:]) for c in (picked[0] if picked else {}) if c.startswith("b")})
        mismatches, skipped, compared = [], 0, 0
        for row, cell in zip(picked, cells):
            want = _cell_expected(src, cell, bands, to_crs, to_4326)
            if want is None:
                skipped += 1
                continue
            compared += 1
            for name, got in row.items():
                if not name.startswith("b"):
                    continue
                b, stat = name.split("_")
                expected = _stat(want[int(b[1:])], stat)
                same = got == expected or (got is not None and expected is not None and np.isclose(got, expected, rtol=1e-9))
                if not same:
                    mismatches.append({"cell": cell, "column": name, "product": got, "source": expected})
    low, high = valid_area / cell_area, total_area / cell_area
    slack = lambda n: 0.05 * n + 3 * np.sqrt(n) + 3  # noqa: E731  edges: cells half on the raster
    covered = low - slack(low) <= valued <= high + slack(high)
    return [
        Check("covers_raster", bool(covered),
              {"cells_with_values": valued, "expected_from_valid_area": round(low, 1),
               "at_most_from_raster_area": round(high, 1), "valid_pixels": valid_pixels,
               "valid_area_km2": round(valid_area / 1e6, 3), "mean_cell_area_km2": round(cell_area / 1e6, 6)}),
        Check("values_match_source", not mismatches and compared > 0 or not len(picks),
              {"cells_compared": compared, "cells_skipped_too_big": skipped, "mismatches": len(mismatches),
               "first_mismatches": mismatches[:3] or "none"}),
    ]
