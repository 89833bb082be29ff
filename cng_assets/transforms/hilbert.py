"""Hilbert-curve keys on a fixed lon/lat grid, so spatially close rows land in the same row groups."""

from __future__ import annotations

import numpy as np

ORDER = 16  # a 65536 x 65536 grid over the globe: ~600 m cells, finer than any row group needs


def hilbert_keys(lon: np.ndarray, lat: np.ndarray, order: int = ORDER) -> np.ndarray:
    """Position of each (lon, lat) along the Hilbert curve of the given order (uint64)."""
    n = 1 << order
    x = np.clip(((np.asarray(lon, dtype=np.float64) + 180.0) / 360.0 * n).astype(np.int64), 0, n - 1)
    y = np.clip(((np.asarray(lat, dtype=np.float64) + 90.0) / 180.0 * n).astype(np.int64), 0, n - 1)
    d = np.zeros(x.shape, dtype=np.uint64)
    s = n >> 1
    while s > 0:
        rx = (x & s) > 0
        ry = (y & s) > 0
        d += np.uint64(s) * np.uint64(s) * ((3 * rx.astype(np.uint64)) ^ ry.astype(np.uint64))
        # rotate the quadrant so the curve stays continuous
        flip = ~ry & rx
        x = np.where(flip, n - 1 - x, x)
        y = np.where(flip, n - 1 - y, y)
        x, y = np.where(~ry, y, x), np.where(~ry, x, y)
        s >>= 1
    return d
