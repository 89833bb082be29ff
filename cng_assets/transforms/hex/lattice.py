"""Centre-containment fill of small polygon parts on H3's local IJ lattice, compiled with numba.

Within one icosahedron face, H3 cell centres at a resolution are a linear lattice in the face's gnomonic plane
(the lattice's coordinates are H3's local IJ), and two gnomonic planes differ by a homography. So per part:
  1. an anchor cell at a coarse resolution `r` (the part fits in its 2-ring), and the centre children of those
     19 cells: exact IDs, local IJ and centres from h3ronpy;
  2. a homography from the anchor's gnomonic plane to IJ, fitted on those 19 centres (a residual above RESIDUAL,
     i.e. a face edge or pentagon inside, sends the part to the kernel);
  3. the part's rings mapped to IJ (edges split where the lon/lat straight line bends away from the chord) and
     scanned row by row: a lattice point is inside, outside, or within MARGIN of an edge (then its exact centre
     is tested against the lon/lat polygon, the same rule as everywhere else);
  4. IDs from the 19 ancestors' descendant tables (IJ offset -> digits; measured from H3 itself once per pair of
     base cells and checked on other ancestors; pairs in the same orientation share one); every inside point must
     be claimed by exactly one ancestor, or the part goes to the kernel.
Parts near a pole, the antimeridian or a pentagon base cell go to the kernel too. Nothing here is approximate:
what the lattice cannot decide with certainty is decided by the exact centre.

Why a face edge cannot hide from the fit: the part lies within two anchor edges of the anchor's centre, inside
the convex hull of the 2-ring's centres (about three edges out). A face edge (a line in the gnomonic plane)
crossing the part therefore leaves a sample on its far side at least as far from it as any point of the part,
and the centres there follow another face's projection, which no single homography fits to RESIDUAL.
"""

from __future__ import annotations

import h3
import h3ronpy
import numpy as np
import pyarrow as pa
import shapely
from numba import njit

from cng_assets.transforms.hex import cells as C

U = np.uint64
MARGIN = 0.02  # lattice units: points this close to an edge get the exact test
BEND = MARGIN / 4  # an edge is split until its image in IJ is this close to the chord
RESIDUAL = 1e-6  # lattice units: homography fit tolerance
MAX_DEPTH = 6  # coarsest anchor: resolution - 6 (117,649 descendants per table)
MAX_BITMAP = 4_000_000  # lattice points in a part's box; a longer, thinner part goes to the kernel
EARTH_KM = 6371.0088


def _localij(cells: np.ndarray, anchors: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(i, j, ok) of each cell in its anchor's local IJ frame."""
    batch = h3ronpy.cells_to_localij(pa.array(cells, pa.uint64()), pa.array(anchors, pa.uint64()),
                                     set_failing_to_invalid=True)
    i, j = pa.array(batch.column(0)), pa.array(batch.column(1))
    ok = np.asarray(i.is_valid().to_numpy(zero_copy_only=False), bool)
    return (np.asarray(i.fill_null(0).to_numpy(), np.int64), np.asarray(j.fill_null(0).to_numpy(), np.int64), ok)


@njit(cache=True, nogil=True)
def _gnomonic(lng, lat, lng0, slat0, clat0):
    """(x, y) of a point in the gnomonic plane centred at (lng0, lat0), in earth radii."""
    p, dl = np.radians(lat), np.radians(lng - lng0)
    sp, cp, cd = np.sin(p), np.cos(p), np.cos(dl)
    cosc = slat0 * sp + clat0 * cp * cd
    return cp * np.sin(dl) / cosc, (clat0 * sp - slat0 * cp * cd) / cosc


@njit(cache=True, nogil=True)
def _gnomonic_rows(lng, lat, lng0, lat0):
    """_gnomonic of (parts, points) arrays, each row about its own centre."""
    gx, gy = np.empty(lng.shape), np.empty(lng.shape)
    for p in range(lng.shape[0]):
        s0, c0 = np.sin(np.radians(lat0[p])), np.cos(np.radians(lat0[p]))
        for q in range(lng.shape[1]):
            gx[p, q], gy[p, q] = _gnomonic(lng[p, q], lat[p, q], lng0[p], s0, c0)
    return gx, gy


@njit(cache=True, nogil=True)
def _fit_homographies(gx, gy, i, j):
    """Per row, the homography (8 parameters, h33 = 1) mapping (gx, gy) to (i, j) by least squares (normal
    equations, Gaussian elimination with partial pivoting), and its largest residual. Inputs are (parts, points)."""
    n, m = gx.shape
    hs, worst = np.zeros((n, 8)), np.zeros(n)
    a = np.zeros((8, 9))
    row = np.zeros(8)
    for p in range(n):
        a[:] = 0.0
        for q in range(m):
            x, y, u, v = gx[p, q], gy[p, q], i[p, q], j[p, q]
            for eq in range(2):
                row[:] = 0.0
                t = u if eq == 0 else v
                o = 3 * eq
                row[o], row[o + 1], row[o + 2] = x, y, 1.0
                row[6], row[7] = -t * x, -t * y
                for r in range(8):
                    for c in range(8):
                        a[r, c] += row[r] * row[c]
                    a[r, 8] += row[r] * t
        for c in range(8):
            piv = c
            for r in range(c + 1, 8):
                if abs(a[r, c]) > abs(a[piv, c]):
                    piv = r
            if a[piv, c] == 0.0:
                worst[p] = np.inf
                break
            if piv != c:
                for k in range(9):
                    a[c, k], a[piv, k] = a[piv, k], a[c, k]
            for r in range(8):
                if r != c:
                    f = a[r, c] / a[c, c]
                    for k in range(c, 9):
                        a[r, k] -= f * a[c, k]
        if worst[p] == np.inf:
            continue
        h = hs[p]
        for c in range(8):
            h[c] = a[c, 8] / a[c, c]
        for q in range(m):
            x, y = gx[p, q], gy[p, q]
            w = h[6] * x + h[7] * y + 1.0
            du = (h[0] * x + h[1] * y + h[2]) / w - i[p, q]
            dv = (h[3] * x + h[4] * y + h[5]) / w - j[p, q]
            worst[p] = max(worst[p], np.sqrt(du * du + dv * dv))
    return hs, worst


@njit(cache=True, nogil=True)
def _compact(part, cell, drop):
    """Remove rows `drop` (sorted) in place; returns the rows left."""
    w = drop[0]
    k = 0
    for r in range(drop[0], len(cell)):
        if k < len(drop) and r == drop[k]:
            k += 1
            continue
        part[w], cell[w] = part[r], cell[r]
        w += 1
    return w


class _Tables:
    """Descendant tables per (anchor base cell, ancestor base cell): IJ offset from the centre child -> digits.
    Local IJ is linear within a frame, so offsets add up digit by digit; measured once per pair on a real
    ancestor and checked on others."""

    def __init__(self, r: int, res: int):
        self.r, self.res = r, res
        self.index: dict[int, int] = {}
        self.di, self.dj, self.code = [], [], []
        self.by_content: dict[bytes, int] = {}
        self._arrays = None

    @classmethod
    def get(cls, r: int, res: int) -> "_Tables":
        """One set per process and resolution pair: a table is measured once, then reused by every batch."""
        return _TABLES.setdefault((r, res), cls(r, res))

    def key_index(self, ancestors: np.ndarray, anchors: np.ndarray) -> np.ndarray:
        """Table index per ancestor (-1: no usable table)."""
        keys = C.base_cell(anchors).astype(np.int64) * 128 + C.base_cell(ancestors).astype(np.int64)
        out = np.full(len(keys), -1, np.int64)
        for k in np.unique(keys):
            rows = np.flatnonzero(keys == k)
            if int(k) not in self.index:
                self.index[int(k)] = self._measure(ancestors[rows[:8]], anchors[rows[:8]])
            out[rows] = self.index[int(k)]
        return out

    def _measure(self, ancestors: np.ndarray, anchors: np.ndarray) -> int:
        r, res = self.r, self.res
        levels = np.arange(r + 1, res + 1)
        centre = C.centre_child(ancestors, r, res)
        shifts = (3 * (15 - levels)).astype(np.uint64)
        steps = (np.arange(1, 7, dtype=np.uint64)[None, :] << shifts[:, None]).ravel()  # (level, digit 1..6)
        probe = centre[:1] | steps
        i, j, ok = _localij(np.concatenate([centre[:1], probe]), np.repeat(anchors[:1], len(probe) + 1))
        if not ok.all():
            return -1
        off_i = np.concatenate([[0], i[1:] - i[0]])
        off_j = np.concatenate([[0], j[1:] - j[0]])
        content = off_i.tobytes() + off_j.tobytes()  # pairs of base cells in the same orientation share a table
        # every digit combination: offsets and codes summed level by level
        di, dj, code = np.zeros(1, np.int64), np.zeros(1, np.int64), np.zeros(1, np.uint64)
        for n, s in enumerate(shifts):
            li = np.concatenate([[0], off_i[1 + 6 * n:7 + 6 * n]])
            lj = np.concatenate([[0], off_j[1 + 6 * n:7 + 6 * n]])
            di = (di[:, None] + li[None, :]).ravel()
            dj = (dj[:, None] + lj[None, :]).ravel()
            code = (code[:, None] + (np.arange(7, dtype=np.uint64) << s)[None, :]).ravel()
        # check on every sampled ancestor: a few descendants where the table says they are
        rng = np.random.default_rng(len(di))
        pick = rng.integers(0, len(di), (len(ancestors), 4))
        cells = (centre[:, None] | code[pick]).ravel()
        ci, cj, cok = _localij(np.concatenate([centre, cells]), np.concatenate([anchors, np.repeat(anchors, 4)]))
        if not cok.all():
            return -1
        base_i, base_j = np.repeat(ci[:len(centre)], 4), np.repeat(cj[:len(centre)], 4)
        if not ((ci[len(centre):] - base_i == di[pick].ravel()).all() and (cj[len(centre):] - base_j == dj[pick].ravel()).all()):
            return -1
        if content not in self.by_content:
            order = np.lexsort((di, dj))
            self.di.append(di[order].astype(np.int32))
            self.dj.append(dj[order].astype(np.int32))
            self.code.append(code[order])
            self._arrays = None
            self.by_content[content] = len(self.di) - 1
        return self.by_content[content]

    def arrays(self):
        """Tables concatenated, each sorted by (dj, di), with per-table row starts (so a part visits only the
        rows of an ancestor's descendants that cross its box) and extents (djmin, djmax, first row)."""
        if self._arrays is not None:
            return self._arrays
        size = 7 ** (self.res - self.r)
        di, dj, code, rows, ext = [np.zeros(0, np.int32)], [np.zeros(0, np.int32)], [np.zeros(0, np.uint64)], [], []
        row_base = 0
        for a, b, c in zip(self.di, self.dj, self.code):  # each sorted by (dj, di) when measured
            di.append(a), dj.append(b), code.append(c)
            lo, hi = int(b[0]), int(b[-1])
            starts = np.searchsorted(b, np.arange(lo, hi + 2)) + len(ext) * size
            ext.append((lo, hi, row_base))
            rows.append(starts)
            row_base += len(starts)
        rows = np.concatenate(rows).astype(np.int64) if rows else np.zeros(0, np.int64)
        self._arrays = (np.concatenate(di), np.concatenate(dj), np.concatenate(code), rows,
                        np.array(ext, np.int64).reshape(-1, 3))
        return self._arrays


_TABLES: dict[tuple[int, int], _Tables] = {}


@njit(cache=True, nogil=True)
def _to_ij(lng, lat, lng0, slat0, clat0, scale, h):
    x, y = _gnomonic(lng, lat, lng0, slat0, clat0)
    gx, gy = x / scale, y / scale
    w = h[6] * gx + h[7] * gy + 1.0
    return (h[0] * gx + h[1] * gy + h[2]) / w, (h[3] * gx + h[4] * gy + h[5]) / w


@njit(cache=True, nogil=True)
def _edges(xs, ys, ring_off, lng0, slat0, clat0, scale, h, bend, out):
    """Rings (lon/lat) -> IJ segments (u1, v1, u2, v2) in `out`; each lon/lat edge split in halves until its
    image's midpoint is within `bend` of the chord. Returns the count, or -1 if `out` is too small."""
    n = 0
    stack = np.empty((64, 4))
    for r in range(len(ring_off) - 1):
        for k in range(ring_off[r], ring_off[r + 1] - 1):
            stack[0, 0], stack[0, 1], stack[0, 2], stack[0, 3] = xs[k], ys[k], xs[k + 1], ys[k + 1]
            top = 1
            while top > 0:
                top -= 1
                x1, y1, x2, y2 = stack[top, 0], stack[top, 1], stack[top, 2], stack[top, 3]
                u1, v1 = _to_ij(x1, y1, lng0, slat0, clat0, scale, h)
                u2, v2 = _to_ij(x2, y2, lng0, slat0, clat0, scale, h)
                xm, ym = (x1 + x2) / 2, (y1 + y2) / 2
                um, vm = _to_ij(xm, ym, lng0, slat0, clat0, scale, h)
                # distance of the midpoint's image from the chord, in the lattice's Euclidean metric
                ax, ay = (u2 - u1) - (v2 - v1) / 2, (v2 - v1) * 0.8660254037844386
                bx, by = (um - u1) - (vm - v1) / 2, (vm - v1) * 0.8660254037844386
                length = np.sqrt(ax * ax + ay * ay)
                dev = abs(ax * by - ay * bx) / length if length > 0 else 0.0
                if dev > bend and top < 62:
                    stack[top, 0], stack[top, 1], stack[top, 2], stack[top, 3] = xm, ym, x2, y2
                    stack[top + 1, 0], stack[top + 1, 1], stack[top + 1, 2], stack[top + 1, 3] = x1, y1, xm, ym
                    top += 2
                    continue
                if dev > bend:
                    return -2
                if n >= len(out):
                    return -1
                out[n, 0], out[n, 1], out[n, 2], out[n, 3] = u1, v1, u2, v2
                n += 1
    return n


@njit(cache=True, nogil=True)
def _scan(seg, n, margin, i0, j0, width, height, bitmap):
    """Classify lattice points in the box: 1 inside, 2 within `margin` of an edge (undecided), 0 outside.
    Parity by the half-open crossing rule on rows v = j."""
    cross = np.empty(n)
    for row in range(height):
        j = j0 + row
        m = 0
        for e in range(n):
            u1, v1, u2, v2 = seg[e, 0], seg[e, 1], seg[e, 2], seg[e, 3]
            if (v1 <= j < v2) or (v2 <= j < v1):
                cross[m] = u1 + (j - v1) * (u2 - u1) / (v2 - v1)
                m += 1
        c = cross[:m]
        c.sort()
        base = row * width
        for q in range(0, m - 1, 2):
            lo = int(np.ceil(c[q])) - i0
            hi = int(np.floor(c[q + 1])) - i0
            for p in range(max(lo, 0), min(hi, width - 1) + 1):
                bitmap[base + p] = 1
        # undecided band: points whose Euclidean distance to a segment may be below `margin`
        band = margin / 0.8660254037844386
        for e in range(n):
            u1, v1, u2, v2 = seg[e, 0], seg[e, 1], seg[e, 2], seg[e, 3]
            if min(v1, v2) - band > j or max(v1, v2) + band < j:
                continue
            if v1 == v2:
                t1, t2 = 0.0, 1.0
            else:
                t1, t2 = (j - band - v1) / (v2 - v1), (j + band - v1) / (v2 - v1)
                if t1 > t2:
                    t1, t2 = t2, t1
                t1, t2 = max(t1, 0.0), min(t2, 1.0)
            ua, ub = u1 + t1 * (u2 - u1), u1 + t2 * (u2 - u1)
            lo = int(np.floor(min(ua, ub) - 2 * margin)) - i0
            hi = int(np.ceil(max(ua, ub) + 2 * margin)) - i0
            for p in range(max(lo, 0), min(hi, width - 1) + 1):
                pu = i0 + p
                # exact point-segment distance in the Euclidean metric of the lattice
                ax, ay = (u2 - u1) - (v2 - v1) / 2, (v2 - v1) * 0.8660254037844386
                bx, by = (pu - u1) - (j - v1) / 2, (j - v1) * 0.8660254037844386
                ll = ax * ax + ay * ay
                t = 0.0 if ll == 0 else min(max((ax * bx + ay * by) / ll, 0.0), 1.0)
                dx, dy = bx - t * ax, by - t * ay
                if dx * dx + dy * dy <= margin * margin:
                    bitmap[base + p] = 2


@njit(cache=True, nogil=True)
def _fill(xs, ys, ring_off, part_ring, todo, lng0, lat0, scale, hs, anc_cc, anc_i, anc_j, anc_t,
          t_di, t_dj, t_code, t_rows, t_ext, margin, bend, owner, out_part, out_cell, out_flag, rows, start,
          failed):
    """Fill parts `todo[start:]` into the out_* buffers from row `rows` on; returns (next part, rows filled, rows
    the next part needs beyond the buffer: 0 when all are done). One the lattice cannot decide is marked `failed`."""
    seg = np.empty((4096, 4))
    for t in range(start, len(todo)):
        p = todo[t]
        r0, r1 = part_ring[p], part_ring[p + 1]
        offs = ring_off[r0:r1 + 1]
        slat0, clat0 = np.sin(np.radians(lat0[p])), np.cos(np.radians(lat0[p]))
        n = -1
        while n == -1:
            n = _edges(xs, ys, offs, lng0[p], slat0, clat0, scale, hs[p], bend, seg)
            if n == -1:
                seg = np.empty((len(seg) * 2, 4))
        if n < 0:
            failed[p] = True
            continue
        umin, umax = seg[:n, 0].min(), seg[:n, 0].max()
        vmin, vmax = seg[:n, 1].min(), seg[:n, 1].max()
        i0, j0 = int(np.floor(umin - 1)), int(np.floor(vmin - 1))
        width, height = int(np.ceil(umax + 1)) - i0 + 1, int(np.ceil(vmax + 1)) - j0 + 1
        if width * height > MAX_BITMAP:
            failed[p] = True
            continue
        bitmap = np.zeros(width * height, np.uint8)
        _scan(seg, n, margin, i0, j0, width, height, bitmap)
        todo_points = 0
        for q in range(width * height):
            if bitmap[q]:
                todo_points += 1
        if rows + todo_points > len(out_cell):
            return t, rows, todo_points
        written = rows
        ok = True
        for a in range(19):
            k = anc_t[p, a]
            if k < 0:
                continue
            ci, cj = anc_i[p, a], anc_j[p, a]
            lo, hi = max(t_ext[k, 0], j0 - cj), min(t_ext[k, 1], j0 + height - 1 - cj)
            for dj in range(lo, hi + 1):
                row = t_ext[k, 2] + dj - t_ext[k, 0]
                lo_d, hi_d = t_rows[row], t_rows[row + 1]
                while lo_d < hi_d:  # first entry of the row at or right of the box (rows are sorted by di)
                    mid = (lo_d + hi_d) // 2
                    if ci + t_di[mid] < i0:
                        lo_d = mid + 1
                    else:
                        hi_d = mid
                for d in range(lo_d, t_rows[row + 1]):
                    pi = ci + t_di[d] - i0
                    if pi >= width:
                        break
                    q = (cj + dj - j0) * width + pi
                    s = bitmap[q]
                    if s == 0:
                        continue
                    if s == 3:
                        ok = False
                        break
                    out_part[written] = owner[p]
                    out_cell[written] = anc_cc[p, a] | t_code[d]
                    out_flag[written] = s == 2
                    written += 1
                    bitmap[q] = 3
                if not ok:
                    break
            if not ok:
                break
        if ok:
            for q in range(width * height):
                if bitmap[q] == 1 or bitmap[q] == 2:
                    ok = False
                    break
        if not ok:
            failed[p] = True
            continue
        rows = written
    return len(todo), rows, 0


def anchor_resolution(parts: np.ndarray, res: int) -> np.ndarray:
    """Per part, the finest resolution below `res` whose cell edge exceeds the part's half-diagonal (-1: none
    within MAX_DEPTH, or below 2)."""
    b = shapely.bounds(parts)
    kx = C.KM_PER_DEG_LON * np.cos(np.radians((b[:, 1] + b[:, 3]) / 2))
    half = 0.5 * np.hypot((b[:, 2] - b[:, 0]) * kx, (b[:, 3] - b[:, 1]) * C.KM_PER_DEG_LAT)
    out = np.full(len(parts), -1, np.int64)
    for r in range(max(2, res - MAX_DEPTH), res):  # coarse to fine: the finest that fits wins
        out[h3.average_hexagon_edge_length(r, "km") >= half] = r
    return out


def lattice_fill(parts: np.ndarray, res: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(part index, cell) of the parts this fill handles, and a mask of the parts it leaves to the kernel."""
    n = len(parts)
    left = np.ones(n, bool)
    if n == 0 or res < 3:
        return np.empty(0, np.int64), np.empty(0, np.uint64), left
    b = shapely.bounds(parts)
    ok = (np.abs(b[:, [1, 3]]).max(1) < 80) & (b[:, 0] > -179) & (b[:, 2] < 179)
    # The scan's parity over all rings is GEOS's point-in-polygon for one ring, valid or not (a crossing count);
    # with holes they agree only when the polygon is valid.
    holes = np.flatnonzero(ok & (shapely.get_num_interior_rings(parts) > 0))
    ok[holes] = shapely.is_valid(parts[holes])
    rres = np.where(ok, anchor_resolution(parts, res), -1)
    buf = _Buffer(1024 + int(1.3 * C.estimate_cells(parts[rres >= 0], res).sum()))
    for r in np.unique(rres[rres >= 0]):
        idx = np.flatnonzero(rres == r)
        left[idx[_fill_at(parts[idx], b[idx], int(r), res, idx, buf)]] = False
    part, cell, flag = buf.part[:buf.rows], buf.cell[:buf.rows], buf.flag[:buf.rows]
    f = np.flatnonzero(flag)
    if len(f):  # the undecided: the exact centre against the lon/lat polygon
        x, y = C.centres(cell[f])
        drop = f[~shapely.contains_xy(parts[part[f]], x, y)]
        if len(drop):
            kept = _compact(part, cell, drop)
            part, cell = part[:kept], cell[:kept]
    return part, cell, left


class _Buffer:
    """Output rows of all the parts of one call, written in place by the compiled fill; grown if an estimate
    was short."""

    def __init__(self, cap: int):
        self.part, self.cell, self.flag = np.empty(cap, np.int64), np.empty(cap, np.uint64), np.empty(cap, np.bool_)
        self.rows = 0

    def grow(self, need: int) -> None:
        cap = max(2 * len(self.cell), self.rows + need + 1024)
        for name in ("part", "cell", "flag"):
            old = getattr(self, name)
            new = np.empty(cap, old.dtype)
            new[:self.rows] = old[:self.rows]
            setattr(self, name, new)


def _fill_at(parts, b, r: int, res: int, owner: np.ndarray, buf: _Buffer) -> np.ndarray:
    """Fill the parts anchored at resolution `r` into `buf`; returns the indices of those it filled."""
    n = len(parts)
    cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    anchors = C.points_to_cells(cx, cy, r)
    disk = pa.array(h3ronpy.grid_disk(pa.array(anchors, pa.uint64()), 2, flatten=False))
    sizes = np.asarray(disk.value_lengths().to_numpy(zero_copy_only=False))
    ring = np.repeat(anchors[:, None], 19, 1)  # placeholder rows (valid cells) where the disk is short
    full = sizes == 19
    ring[full] = C.to_u64(disk.filter(pa.array(full)).flatten()).reshape(-1, 19)
    usable = full & ~np.isin(C.base_cell(ring), C.PENTAGON_BASE_CELLS).any(1)
    anchor_cc = C.centre_child(anchors, r, res)
    cc = C.centre_child(ring, r, res)
    ai, aj, aok = _localij(anchor_cc, anchor_cc)
    i, j, ijok = _localij(cc.ravel(), np.repeat(anchor_cc, 19))
    usable &= ijok.reshape(n, 19).all(1) & aok
    i, j = i.reshape(n, 19) - ai[:, None], j.reshape(n, 19) - aj[:, None]
    lng, lat = C.centres(np.concatenate([anchor_cc, cc.ravel()]))
    lng0, lat0 = lng[:n], lat[:n]
    scale = h3.average_hexagon_edge_length(res, "km") * np.sqrt(3) / EARTH_KM
    gx, gy = _gnomonic_rows(lng[n:].reshape(n, 19), lat[n:].reshape(n, 19), lng0, lat0)
    hs, residual = _fit_homographies(gx / scale, gy / scale, i.astype(np.float64), j.astype(np.float64))
    usable &= residual < RESIDUAL
    tables = _Tables.get(r, res)
    anc_t = np.full((n, 19), -1, np.int64)
    u = np.flatnonzero(usable)
    if len(u):
        anc_t[u] = tables.key_index(ring[u].ravel(), np.repeat(anchor_cc[u], 19)).reshape(-1, 19)
    usable &= (anc_t >= 0).all(1)
    t_di, t_dj, t_code, t_rows, t_ext = tables.arrays()
    todo = np.flatnonzero(usable)

    rings, ring_owner = shapely.get_rings(parts, return_index=True)
    coords, ring_index = shapely.get_coordinates(rings, return_index=True)
    ring_off = np.searchsorted(ring_index, np.arange(len(rings) + 1)).astype(np.int64)
    part_ring = np.searchsorted(ring_owner, np.arange(n + 1)).astype(np.int64)
    xs, ys = np.ascontiguousarray(coords[:, 0]), np.ascontiguousarray(coords[:, 1])

    failed = np.zeros(n, bool)
    start = 0
    while start < len(todo):
        start, buf.rows, need = _fill(xs, ys, ring_off, part_ring, todo, lng0, lat0, scale, hs, cc, i, j, anc_t,
                                      t_di, t_dj, t_code, t_rows, t_ext, MARGIN, BEND, owner,
                                      buf.part, buf.cell, buf.flag, buf.rows, start, failed)
        if need:  # the part at `start` does not fit
            buf.grow(need)
    return todo[~failed[todo]]

