"""A grid index of a polygon's edges in lon/lat, compiled with numba: which axis-aligned boxes an edge touches.

The coarse-to-fine fill asks, for many boxes at once, whether any edge of the polygon (outer ring or hole)
touches a box. A box that no edge touches lies wholly inside or wholly outside, and its centre tells which.
"""

from __future__ import annotations

import numpy as np
import shapely
from numba import njit

MAX_BUCKETS = 1 << 22


class EdgeGrid:
    """The edges of a polygon, bucketed on a uniform grid over their bounds (about one edge per bucket), with a
    summed-area table of bucket counts so a box over empty buckets is answered without visiting them."""

    def __init__(self, polygon, clip: tuple[float, float, float, float] | None = None):
        """`polygon`: a Polygon or MultiPolygon. `clip` (xmin, ymin, xmax, ymax): the caller only asks about boxes
        inside it, so only the edges touching it are indexed (a piece of a huge polygon reads a small share)."""
        _, coords, offsets = shapely.to_ragged_array(np.array([polygon]))
        clip = np.array(clip if clip is not None else (-np.inf, -np.inf, np.inf, np.inf), np.float64)
        self.seg = _segments(np.ascontiguousarray(coords, np.float64), offsets[0].astype(np.int64), clip)
        if len(self.seg):
            xmin, ymin = self.seg[:, [0, 2]].min(), self.seg[:, [1, 3]].min()
            xmax, ymax = self.seg[:, [0, 2]].max(), self.seg[:, [1, 3]].max()
        else:
            xmin = ymin = xmax = ymax = 0.0
        w, h = max(xmax - xmin, 1e-9), max(ymax - ymin, 1e-9)
        n = min(max(len(self.seg), 1), MAX_BUCKETS)
        nx = max(1, min(int(np.sqrt(n * w / h)), n))
        ny = max(1, min(n // nx, n))
        self.frame = np.array([xmin, ymin, w / nx, h / ny])
        self.nx, self.ny = nx, ny
        self.start, self.items, self.sat = _build(self.seg, self.frame, nx, ny)

    def touched(self, x0: np.ndarray, y0: np.ndarray, x1: np.ndarray, y1: np.ndarray) -> np.ndarray:
        """True where some edge touches the closed box [x0, x1] x [y0, y1]."""
        return _touched(self.seg, self.frame, self.nx, self.ny, self.start, self.items, self.sat,
                        np.ascontiguousarray(x0, np.float64), np.ascontiguousarray(y0, np.float64),
                        np.ascontiguousarray(x1, np.float64), np.ascontiguousarray(y1, np.float64))


@njit(cache=True, nogil=True)
def _span(lo, hi, origin, size, n):
    """Bucket indices [a, b] covering [lo, hi] on one axis (a > b: none). The grid is closed: its last bucket
    holds its far edge."""
    if hi < origin or lo > origin + size * (n + 1e-9):
        return 1, 0
    a = int(np.floor((lo - origin) / size))
    b = int(np.floor((hi - origin) / size))
    return min(max(a, 0), n - 1), min(max(b, 0), n - 1)


@njit(cache=True, nogil=True)
def _segments(coords, ring_off, clip):
    """(x1, y1, x2, y2) of every ring edge whose bounding box meets `clip`."""
    keep = np.zeros(len(coords), np.bool_)
    for r in range(len(ring_off) - 1):
        for k in range(ring_off[r], ring_off[r + 1] - 1):
            ax, ay, bx, by = coords[k, 0], coords[k, 1], coords[k + 1, 0], coords[k + 1, 1]
            keep[k] = max(ax, bx) >= clip[0] and min(ax, bx) <= clip[2] and max(ay, by) >= clip[1] and min(ay, by) <= clip[3]
    seg = np.empty((keep.sum(), 4))
    n = 0
    for k in range(len(coords)):
        if keep[k]:
            seg[n, 0], seg[n, 1], seg[n, 2], seg[n, 3] = coords[k, 0], coords[k, 1], coords[k + 1, 0], coords[k + 1, 1]
            n += 1
    return seg


@njit(cache=True, nogil=True)
def _row_span(seg, s, j, frame, nx):
    """Columns [a, b] of row j's buckets that segment s passes through (padded by a hair against rounding): a
    long diagonal edge is listed along its path, not over its whole bounding box."""
    ax, ay, cx, cy = seg[s, 0], seg[s, 1], seg[s, 2], seg[s, 3]
    lo, hi = min(ax, cx), max(ax, cx)
    if ay != cy:
        t0 = (frame[1] + j * frame[3] - ay) / (cy - ay)
        t1 = (frame[1] + (j + 1) * frame[3] - ay) / (cy - ay)
        t0, t1 = max(min(t0, t1), 0.0), min(max(t0, t1), 1.0)
        xa, xb = ax + t0 * (cx - ax), ax + t1 * (cx - ax)
        lo, hi = max(lo, min(xa, xb)), min(hi, max(xa, xb))
    pad = frame[2] * 1e-6
    return _span(lo - pad, hi + pad, frame[0], frame[2], nx)


@njit(cache=True, nogil=True)
def _build(seg, frame, nx, ny):
    count = np.zeros(nx * ny + 1, np.int64)
    for s in range(len(seg)):
        ja, jb = _span(min(seg[s, 1], seg[s, 3]), max(seg[s, 1], seg[s, 3]), frame[1], frame[3], ny)
        for j in range(ja, jb + 1):
            ia, ib = _row_span(seg, s, j, frame, nx)
            for i in range(ia, ib + 1):
                count[j * nx + i + 1] += 1
    sat = np.zeros((ny + 1, nx + 1), np.int64)  # sat[j, i]: edges listed in buckets below row j, left of column i
    for j in range(ny):
        for i in range(nx):
            sat[j + 1, i + 1] = count[j * nx + i + 1] + sat[j, i + 1] + sat[j + 1, i] - sat[j, i]
    start = np.cumsum(count)
    fill = start[:-1].copy()
    items = np.empty(start[-1], np.int64)
    for s in range(len(seg)):
        ja, jb = _span(min(seg[s, 1], seg[s, 3]), max(seg[s, 1], seg[s, 3]), frame[1], frame[3], ny)
        for j in range(ja, jb + 1):
            ia, ib = _row_span(seg, s, j, frame, nx)
            for i in range(ia, ib + 1):
                items[fill[j * nx + i]] = s
                fill[j * nx + i] += 1
    return start, items, sat


@njit(cache=True, nogil=True)
def _hits(seg, s, bx0, by0, bx1, by1):
    """Does segment s touch the closed box? Separating axes: x, y, and the segment's normal."""
    ax, ay, cx, cy = seg[s, 0], seg[s, 1], seg[s, 2], seg[s, 3]
    if max(ax, cx) < bx0 or min(ax, cx) > bx1 or max(ay, cy) < by0 or min(ay, cy) > by1:
        return False
    dx, dy = cx - ax, cy - ay
    pos = neg = False
    for k in range(4):
        px = bx0 if k < 2 else bx1
        py = by0 if k % 2 == 0 else by1
        c = dx * (py - ay) - dy * (px - ax)
        if c >= 0:
            pos = True
        if c <= 0:
            neg = True
    return pos and neg


@njit(cache=True, nogil=True)
def _touched(seg, frame, nx, ny, start, items, sat, x0, y0, x1, y1):
    out = np.zeros(len(x0), np.bool_)
    for b in range(len(x0)):
        ia, ib = _span(x0[b], x1[b], frame[0], frame[2], nx)
        ja, jb = _span(y0[b], y1[b], frame[1], frame[3], ny)
        if ia > ib or ja > jb:
            continue
        if sat[jb + 1, ib + 1] - sat[ja, ib + 1] - sat[jb + 1, ia] + sat[ja, ia] == 0:
            continue
        out[b] = _any_hit(seg, nx, start, items, ia, ib, ja, jb, x0[b], y0[b], x1[b], y1[b])
    return out


@njit(cache=True, nogil=True)
def _any_hit(seg, nx, start, items, ia, ib, ja, jb, bx0, by0, bx1, by1):
    """Does an edge listed in buckets [ia, ib] x [ja, jb] touch the box? Stops at the first that does."""
    for j in range(ja, jb + 1):
        for i in range(ia, ib + 1):
            for k in range(start[j * nx + i], start[j * nx + i + 1]):
                if _hits(seg, items[k], bx0, by0, bx1, by1):
                    return True
    return False
