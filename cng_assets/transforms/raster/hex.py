"""Raster -> H3 cell statistics, in two steps like the vector hex products:

What a cell holds: the pixels whose centres fall in it (count, mean, ... of their values: unweighted); a cell that
holds no valid pixel centre but whose own centre falls on a valid pixel takes that pixel (count 1). So every cell
whose centre is on a valid pixel has a value, whether cells are finer than pixels (they sample the pixel under
their centre) or coarser (they aggregate). `pixel_resolution` is the default resolution: the finest whose
average cell area is at least the pixel's area (about one pixel per cell, none finer than the data).

`raster_hex` runs one chunk (a band of raster rows): each valid pixel's centre goes to lon/lat (pyproj) and to
its cell at `resolution` (h3ronpy), and per band the pixel values are reduced to mergeable partials per cell:
count, sum, min, max and, for mode, (cell, value, count) triples. Then the cells near those pixels (children of
the ring around their coarse ancestors, coarse enough to reach past a pixel) whose centres fall on a valid pixel
of the window take that pixel, as partials of their own (a cell belongs to the window holding its centre). The
chunk writes them by group cell (a coarse ancestor, as in hex.chunk) as `g=<group>.arrow` (cell + partial
columns, every band) and `m=<group>.b<band>.arrow` (mode triples), the centre samples as `s=` and `n=` files
alike, Arrow IPC with LZ4 (short-lived, so fast to write beats small), then `_chunk.json` last. Consolidation
keeps a centre sample only for a cell no chunk aggregated pixels into.

`consolidate_raster_hex` merges the chunks group by group (a cell on a chunk boundary is in two chunks: its
partials add up exactly) and writes the product as the vector hex products are written:
`h0=<h0>/part-<first cell>.parquet` (h0 only in the folder name), uint64 `h<res>` then parent columns, rows
sorted by cell, ZSTD; then per band `b<band>_<stat>`: mean and sum float64, min, max and mode in the band's dtype,
count uint32. A band with no valid pixel in a cell has count 0 and nulls; a cell with no valid pixel in any band
is not written.

Memory: one window of `window_rows` rows of pixels (fewer when cells are much finer than pixels: about
WINDOW_CELLS candidate cells), plus the partials of the chunk's cells (window partials are
merged into the chunk's in amortised batches); consolidation holds one group (at most 7**7 cells) plus one
output file (TARGET_ROWS rows).
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import h3
import h3ronpy
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import rasterio
from pyproj import Geod, Transformer
from rasterio.windows import Window

from cng_assets.errors import CngInputError
from cng_assets.transforms import layout
from cng_assets.transforms.hex import cells as C
from cng_assets.transforms.hex import runs
from cng_assets.transforms.hex.chunk import GROUP_SPAN
from cng_assets.transforms.hex.consolidate import ROW_GROUP_ROWS, TARGET_ROWS
from cng_assets.transforms.raster.info import H3_RESOLUTION_SOURCE

VERSION = "3"  # chunk format and product: bump when either could differ (2: h0 only in the folder names; 3: cells
# whose centre falls on a valid pixel take it)
MARKER = "_chunk.json"
STATS = ("mean", "sum", "min", "max", "count", "mode")
CONTINUOUS_DEFAULT = ["mean", "min", "max", "count"]
CATEGORICAL_DEFAULT = ["mode", "count"]
U = np.uint64
REDUCE = {"count": np.add, "sum": np.add, "min": np.minimum, "max": np.maximum}  # partial -> how it merges
COMPACT_ROWS = 1 << 20  # window partials buffered before they are merged into the chunk's
WINDOW_CELLS = 1 << 22  # cells a window may hold at most (cells finer than pixels: many per pixel), for memory


@dataclass
class RasterHexStats:
    rows: tuple[int, int] = (0, 0)
    windows: int = 0
    pixels: int = 0  # pixels read (rows x width)
    valid_pixels: int = 0  # valid in at least one band
    outside: int = 0  # valid, but the centre has no lon/lat (outside the CRS's domain)
    cells: int = 0
    centre_samples: int = 0  # cells holding no valid pixel centre of the window that take the pixel under theirs
    groups: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    cpu_project: float = 0.0  # of which in pyproj (pixel centres to lon/lat)
    cpu_index: float = 0.0  # of which in h3ronpy (lon/lat to cells): with cpu_project, the per-pixel floor
    peak_rss_mib: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def resolve_stats(stats: dict[str, list[str]] | None, bands: list[int], dtypes: dict[int, str]) -> dict[int, list[str]]:
    """Statistics per band. Keys of `stats`: "b<band>" (or "<band>") for one band, "*" for every band; bands
    not named get the default for their dtype (float: mean, min, max, count; integer: mode, count)."""
    stats = stats or {}
    out = {}
    for key in stats:
        if key != "*" and int(key.removeprefix("b")) not in bands:
            raise ValueError(f"raster hex stats name band {key!r}, which is not among the bands {bands}")
    for b in bands:
        chosen = stats.get(f"b{b}", stats.get(str(b), stats.get("*")))
        if chosen is None:
            chosen = CONTINUOUS_DEFAULT if np.issubdtype(np.dtype(dtypes[b]), np.floating) else CATEGORICAL_DEFAULT
        unknown = [s for s in chosen if s not in STATS]
        if unknown or not chosen or len(set(chosen)) != len(chosen):
            raise ValueError(f"raster hex stats for band {b}: {chosen} (each once, among {list(STATS)})")
        out[b] = list(chosen)
    return out


def _partials(stats: list[str]) -> list[str]:
    """The partial columns a band's statistics are made from (count always: it says whether the band has data)."""
    need = {"count"} | ({"sum"} if {"mean", "sum"} & set(stats) else set()) | ({"min", "max"} & set(stats))
    return [p for p in REDUCE if p in need]


def _identity(partial: str, dtype: np.dtype):
    """What a band without valid pixels contributes to a partial, so that merging needs no masks."""
    if partial in ("count", "sum"):
        return 0
    if np.issubdtype(dtype, np.floating):
        return np.inf if partial == "min" else -np.inf
    info = np.iinfo(dtype)
    return info.max if partial == "min" else info.min


def _runs(*keys: np.ndarray) -> np.ndarray:
    """Start of each run of equal keys (sorted input)."""
    change = np.zeros(len(keys[0]), dtype=bool)
    change[:1] = True
    for k in keys:
        change[1:] |= k[1:] != k[:-1]
    return np.flatnonzero(change)


@dataclass
class _Part:
    """Partials of some cells: `cols` (per-band partials, one row per cell, sorted by cell) and per mode band
    (cell, value, count) triples sorted by (cell, value)."""
    cells: np.ndarray
    cols: dict[str, np.ndarray]
    modes: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.cells) + sum(len(t[0]) for t in self.modes.values())


def _merge(parts: list[_Part]) -> _Part:
    """Partials of the same cells combined: sums and counts add, min of mins, max of maxes, value counts add."""
    cells = np.concatenate([p.cells for p in parts])
    order = np.argsort(cells, kind="stable")
    cells = cells[order]
    starts = _runs(cells)
    cols = {k: REDUCE[k.rsplit("_", 1)[1]].reduceat(np.concatenate([p.cols[k] for p in parts])[order], starts)
            for k in parts[0].cols} if len(cells) else {k: v for k, v in parts[0].cols.items()}
    return _Part(cells[starts], cols, {b: _merge_modes([p.modes[b] for p in parts]) for b in parts[0].modes})


def _merge_modes(triples: list[tuple[np.ndarray, ...]]) -> tuple[np.ndarray, ...]:
    """(cell, value, count) triples with the counts of equal (cell, value) added, sorted by (cell, value). A count
    array of None means ones (raw pixels)."""
    cells, values = (np.concatenate([t[i] for t in triples]) for i in range(2))
    ones = all(t[2] is None for t in triples)
    counts = None if ones else np.concatenate([np.ones(len(t[0]), np.uint64) if t[2] is None else t[2]
                                               for t in triples])
    if not len(cells):
        return cells, values, np.empty(0, np.uint64)
    packed = _pack(cells, values)
    if packed is None:  # wide values or very fine cells: two-key sort
        order = np.lexsort((values, cells))
        cells, values = cells[order], values[order]
        starts = _runs(cells, values)
        return cells[starts], values[starts], np.add.reduceat(counts[order] if counts is not None else
                                                              np.ones(len(cells), np.uint64), starts)
    key, unpack = packed
    if ones:
        key, n = np.unique(key, return_counts=True)
        return (*unpack(key), n.astype(np.uint64))
    order = np.argsort(key, kind="stable")  # the parts are sorted runs: timsort merges them in near-linear time
    key = key[order]
    starts = _runs(key)
    return (*unpack(key[starts]), np.add.reduceat(counts[order], starts))


def _pack(cells: np.ndarray, values: np.ndarray):
    """(cell, value) as one uint64 sort key, when it fits: cells at one resolution differ only in their base cell
    and digits (7 + 3 res bits), and integers of 8 or 16 bits offset to unsigned take 8 or 16 bits. One sort of
    one key is several times faster than a two-key lexsort. Returns (key, unpack) or None."""
    if not (np.issubdtype(values.dtype, np.integer) and values.dtype.itemsize <= 2):
        return None
    res = int(C.resolution(cells[:1])[0])
    shift, cbits, vbits = U(3 * (15 - res)), 7 + 3 * res, 8 * values.dtype.itemsize
    if cbits + vbits > 64:
        return None
    cmask, low = U((1 << cbits) - 1), int(np.iinfo(values.dtype).min)
    template = cells[0] & ~(cmask << shift)  # mode, resolution and the unused digits: the same for every cell
    codes = values.astype(np.uint64) if low == 0 else (values.astype(np.int64) - low).astype(np.uint64)
    key = ((cells >> shift) & cmask) << U(vbits) | codes

    def unpack(k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return template | ((k >> U(vbits)) << shift), ((k & U((1 << vbits) - 1)).astype(np.int64) + low).astype(
            values.dtype)
    return key, unpack


class _Accumulator:
    """Window partials merged into the chunk's in batches: each merge costs the chunk's size, so merging only when
    the buffer is as big as what is merged already keeps the total cost n log n (not windows x cells)."""

    def __init__(self):
        self.merged: _Part | None = None
        self.pending: list[_Part] = []
        self.pending_rows = 0

    def add(self, part: _Part) -> None:
        self.pending.append(part)
        self.pending_rows += len(part)
        if self.pending_rows >= max(COMPACT_ROWS, len(self.merged or ())):
            self.result()

    def result(self) -> _Part | None:
        if self.pending:
            self.merged = _merge(([self.merged] if self.merged else []) + self.pending)
            self.pending, self.pending_rows = [], 0
        return self.merged


def _window_part(cells: np.ndarray, values: np.ndarray, valid: np.ndarray, bands: list[int],
                 stats: dict[int, list[str]]) -> _Part:
    """Partials of one window's pixels. `cells` are the pixels valid in some band; `values` and `valid` are
    (band, pixel). Invalid values are replaced by each partial's identity, so every band shares one cell list."""
    order = np.argsort(cells, kind="stable")
    cells, values, valid = cells[order], values[:, order], valid[:, order]
    starts = _runs(cells)
    cols, modes = {}, {}
    for i, b in enumerate(bands):
        v, ok = values[i], valid[i]
        for p in _partials(stats[b]):
            x = ok.astype(np.uint64) if p == "count" else np.where(ok, v, _identity(p, v.dtype))
            cols[f"b{b}_{p}"] = REDUCE[p].reduceat(x.astype(np.float64) if p == "sum" else x, starts)
        if "mode" in stats[b]:
            modes[b] = _merge_modes([(cells[ok], v[ok], None)])
    return _Part(cells[starts], cols, modes)


GEOD = Geod(ellps="WGS84")


def pixel_areas_m2(transform, crs, rows: np.ndarray, col: int) -> np.ndarray:
    """Area on the ellipsoid of the pixel in column `col` of each of `rows`: its four corners to lon/lat."""
    rows = np.asarray(rows, dtype=float)[:, None]
    xs, ys = transform * (col + np.array([0, 1, 1, 0])[None, :] + 0 * rows, rows + np.array([0, 0, 1, 1])[None, :])
    if crs.to_epsg() != 4326:
        xs, ys = Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(xs, ys)
    return np.array([abs(GEOD.polygon_area_perimeter(x, y)[0]) for x, y in zip(xs, ys)])


def pixel_area_m2(transform, crs, row: int, col: int) -> float:
    return float(pixel_areas_m2(transform, crs, [row], col)[0])


def pixel_resolution(area_m2: float) -> int:
    """The finest H3 resolution whose average cell area is at least `area_m2` (0 if even res 0 is smaller)."""
    return max([r for r in range(16) if h3.average_hexagon_area(r, "m^2") >= area_m2], default=0)


def check_cell_budget(path: str, resolution: int, max_cells: int) -> None:
    """Refuse, before any chunk runs, a resolution so much finer than the pixels that the raster's area holds more
    than `max_cells` cells (every cell centred on a valid pixel gets one row)."""
    with rasterio.open(path) as src:
        area = src.width * src.height * pixel_area_m2(src.transform, src.crs, src.height // 2, src.width // 2)
    cells = int(area / h3.average_hexagon_area(resolution, "m^2"))
    if cells > max_cells:
        raise CngInputError(
            f"raster hex at resolution {resolution} would be about {cells:,} cells (the raster's area in cells), "
            f"above the budget of {max_cells:,}",
            hint=f"use a coarser `h3.resolution`, or leave it out so it follows the pixel size (resolution "
                 f"{raster_resolution(path)}); or raise `h3.max_cells` (`--max-cells`) to at least {cells:,}")


def raster_resolution(path: str) -> int:
    """The default resolution of a raster's hex: `pixel_resolution` of its centre pixel, at least 1 (h0 is the
    partition folder)."""
    with rasterio.open(path) as src:
        return max(1, pixel_resolution(pixel_area_m2(src.transform, src.crs, src.height // 2, src.width // 2)))


def _centre_samples(cells: np.ndarray, res: int, seed_res: int, to_crs, inverse, top: int, shape: tuple[int, int],
                    values: np.ndarray, valid: np.ndarray, bands: list[int], stats: dict[int, list[str]]) -> _Part:
    """Partials of the cells that hold none of the window's valid pixel centres (`cells`) but whose own centre falls
    on a valid pixel of the window: that pixel's values, count 1. Candidates are the children of the ring around
    the pixels' ancestors at `seed_res`, whose cells are at least 7 pixels big: a cell centred on a pixel lies
    within that ring."""
    seeds = np.unique(C.parent(cells, seed_res))
    ring = np.unique(C.to_u64(h3ronpy.grid_disk(pa.array(seeds, pa.uint64()), 1, flatten=True)))
    candidates = C.children(ring, seed_res, res)  # distinct: children of distinct cells
    candidates = candidates[~np.isin(candidates, cells)]
    lng, lat = C.centres(candidates)
    x, y = (lng, lat) if to_crs is None else to_crs.transform(lng, lat)
    col, row = inverse * (np.asarray(x), np.asarray(y))
    with np.errstate(invalid="ignore"):
        col, row = np.floor(col), np.floor(row) - top
    height, width = shape
    inside = (row >= 0) & (row < height) & (col >= 0) & (col < width)
    pixel = (row[inside] * width + col[inside]).astype(np.int64)
    ok = valid[:, pixel].any(axis=0)
    pixel = pixel[ok]
    return _window_part(candidates[inside][ok], values[:, pixel], valid[:, pixel], bands, stats)


def _peak_rss_mib() -> float:
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent through fork+exec.
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024


def _group_res(res: int) -> int:
    return max(0, res - GROUP_SPAN)


def _check_settings(resolution: int, parents: tuple[int, ...]) -> None:
    if not 0 <= resolution <= 15:
        raise ValueError(f"H3 resolution must be 0-15, got {resolution}")
    if len(set(parents)) != len(parents) or any(not 0 <= p < resolution for p in parents):
        raise ValueError(f"parents must be distinct resolutions coarser than {resolution}, got {parents}")


def raster_hex(path: str, out_dir: Path, resolution: int, parents: tuple[int, ...],
               stats: dict[str, list[str]] | None = None, bands: list[int] | None = None, window_rows: int = 512,
               rows: tuple[int, int] | None = None) -> RasterHexStats:
    """One chunk (raster rows `rows`, default all) of the raster's cell statistics, as partials in `out_dir` for
    `consolidate_raster_hex`. Pixels that are nodata, masked or NaN are skipped, per band."""
    start, cpu0 = time.time(), time.process_time()
    _check_settings(resolution, parents)
    if window_rows < 1:
        raise ValueError(f"window_rows must be at least 1, got {window_rows}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in [*out_dir.glob("[gmsn]=*.arrow"), out_dir / MARKER]:  # a rerun must not mix with an earlier one
        old.unlink(missing_ok=True)
    acc, sampled = _Accumulator(), _Accumulator()
    with rasterio.open(path) as src:
        bands = list(bands or src.indexes)
        if any(b not in src.indexes for b in bands):
            raise ValueError(f"bands {bands} are not all in {path} (it has {list(src.indexes)})")
        dtypes = {b: src.dtypes[b - 1] for b in bands}
        per_band = resolve_stats(stats, bands, dtypes)
        r0, r1 = rows or (0, src.height)
        if not 0 <= r0 <= r1 <= src.height:
            raise ValueError(f"rows {rows} are outside the raster's 0-{src.height}")
        if src.crs is None:
            raise ValueError(f"{path} has no CRS: pixel centres cannot be placed on the globe")
        to_4326 = None if src.crs.to_epsg() == 4326 else Transformer.from_crs(src.crs, "EPSG:4326", always_xy=True)
        from_4326 = None if to_4326 is None else Transformer.from_crs("EPSG:4326", src.crs, always_xy=True)
        pixel_area = pixel_area_m2(src.transform, src.crs, (r0 + r1) // 2, src.width // 2)
        seed_res = max(0, min(resolution, pixel_resolution(pixel_area) - 1))  # cells >= 7 pixels, none finer than res
        per_pixel = max(1.0, 3 * pixel_area / h3.average_hexagon_area(resolution, "m^2"))  # candidates, with the ring
        window_rows = max(1, min(window_rows, int(WINDOW_CELLS / per_pixel / src.width)))
        a, b_, c, d, e, f = src.transform[:6]
        width = src.width
        run = RasterHexStats(rows=(r0, r1))
        for top in range(r0, r1, window_rows):
            height = min(window_rows, r1 - top)
            data = src.read(bands, window=Window(0, top, width, height), masked=True)
            values = data.data.reshape(len(bands), -1)
            valid = ~np.ma.getmaskarray(data).reshape(len(bands), -1)
            if np.issubdtype(values.dtype, np.floating):
                valid &= ~np.isnan(values)
            run.windows += 1
            run.pixels += values.shape[1]
            idx = np.flatnonzero(valid.any(axis=0))
            run.valid_pixels += len(idx)
            # pixel centres, with the affine written out as Affine.__mul__ does it (so a per-pixel check agrees)
            col, row = idx % width + 0.5, idx // width + top + 0.5
            x, y = col * a + row * b_ + c, col * d + row * e + f
            t = time.process_time()
            lng, lat = (x, y) if to_4326 is None else to_4326.transform(x, y)
            run.cpu_project += time.process_time() - t
            placed = np.isfinite(lng) & np.isfinite(lat) & (np.abs(lat) <= 90)
            run.outside += int((~placed).sum())
            idx = idx[placed]
            if len(idx):
                t = time.process_time()
                cells = C.points_to_cells(lng[placed], lat[placed], resolution)
                run.cpu_index += time.process_time() - t
                acc.add(_window_part(cells, values[:, idx], valid[:, idx], bands, per_band))
                sampled.add(_centre_samples(cells, resolution, seed_res, from_4326, ~src.transform, top,
                                            (height, width), values, valid, bands, per_band))
    part, samples = acc.result(), sampled.result()
    if part is not None:
        run.cells = len(part.cells)
        run.groups = _write_chunk(part, out_dir, resolution)
    if samples is not None:
        run.centre_samples = len(samples.cells)
        _write_chunk(samples, out_dir, resolution, "sn")
    run.seconds, run.cpu_seconds = time.time() - start, time.process_time() - cpu0
    run.peak_rss_mib = _peak_rss_mib()
    marker = {"version": VERSION, "path": str(path), "resolution": resolution, "parents": list(parents),
              "bands": bands, "dtypes": {str(b): dtypes[b] for b in bands},
              "stats": {str(b): s for b, s in per_band.items()}, "run": run.to_dict()}
    (out_dir / MARKER).write_text(json.dumps(marker, indent=1))
    return run


def _group_slices(cells: np.ndarray, res: int) -> dict[int, slice]:
    """Sorted cells -> {group cell: slice}. Descendants of a cell form one run of ids, so groups are runs."""
    groups = C.parent(cells, _group_res(res))
    starts = _runs(groups)
    ends = np.r_[starts[1:], len(cells)]
    return {int(groups[s]): slice(s, e) for s, e in zip(starts, ends)}


def _write_chunk(part: _Part, out_dir: Path, res: int, prefixes: str = "gm") -> int:
    """Partials as `<prefixes[0]>=<group>.arrow`, mode triples as `<prefixes[1]>=<group>.b<band>.arrow`."""
    slices = _group_slices(part.cells, res)
    for g, s in slices.items():
        runs.write(pa.table({"cell": part.cells[s], **{k: v[s] for k, v in part.cols.items()}}),
                   out_dir / f"{prefixes[0]}={g}.arrow")
    for b, (cells, values, counts) in part.modes.items():
        for g, s in _group_slices(cells, res).items():
            runs.write(pa.table({"cell": cells[s], "value": values[s], "count": counts[s]}),
                       out_dir / f"{prefixes[1]}={g}.b{b}.arrow")
    return len(slices)


def _read_files(files: dict[str, list[Path]], kind: str, modes: list[int]) -> _Part | None:
    """The merged partials of one group of one kind ("g": aggregated pixels, "s": centre samples)."""
    tables = [runs.read(f) for f in files[kind]]
    if not tables:
        return None
    parts = [_Part(np.asarray(t.column("cell").to_numpy()),
                   {n: t.column(n).to_numpy() for n in t.column_names[1:]}) for t in tables]
    merged = _merge(parts)
    for b in modes:
        triples = [tuple(t.column(n).to_numpy() for n in ("cell", "value", "count"))
                   for t in (runs.read(f) for f in files[f"{kind}b{b}"])]
        merged.modes[b] = _merge_modes(triples) if triples else (np.empty(0, np.uint64),) * 3
    return merged


def _read_part(files: dict[str, list[Path]], modes: list[int]) -> tuple[_Part, np.ndarray]:
    """The partials of one group, from every chunk's files for it: the aggregated pixels, plus the centre sample
    of each cell no chunk aggregated pixels into; and the kept samples' per-band counts."""
    merged, samples = _read_files(files, "g", modes), _read_files(files, "s", modes)
    if samples is None:
        return merged, np.zeros(0, np.uint64)
    if merged is not None:
        keep = ~np.isin(samples.cells, merged.cells)
        samples = _Part(samples.cells[keep], {k: v[keep] for k, v in samples.cols.items()},
                        {b: tuple(a[np.isin(t[0], samples.cells[keep])] for a in t) for b, t in samples.modes.items()})
    counts = np.array([v.sum() for k, v in samples.cols.items() if k.endswith("_count")], np.uint64)
    return (samples if merged is None else _merge([merged, samples])), counts


def _mode(cells: np.ndarray, triples: tuple[np.ndarray, ...], dtype: str) -> pa.Array:
    """Most frequent value per cell (ties: the smallest, since triples are sorted by value), aligned to `cells`."""
    tc, tv, tn = triples
    out = np.zeros(len(cells), dtype=dtype)
    have = np.zeros(len(cells), dtype=bool)
    if len(tc):
        starts = _runs(tc)
        run_id = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(tc)]))
        best = tn == np.maximum.reduceat(tn, starts)[run_id]
        best = np.flatnonzero(best)
        first = best[_runs(run_id[best])]  # the first best of each run
        at = np.searchsorted(cells, tc[first])
        out[at], have[at] = tv[first], True
    return pa.array(out, mask=~have)


def _finish(part: _Part, res: int, parents: tuple[int, ...], stats: dict[int, list[str]],
            dtypes: dict[int, str]) -> pa.Table:
    cells = part.cells
    columns = {f"h{res}": pa.array(cells, pa.uint64())}
    parent_names = layout.hex_file_columns(res, parents)[1:]
    columns |= {n: pa.array(C.parent(cells, int(n[1:])), pa.uint64()) for n in parent_names}
    for b, wanted in stats.items():
        count = part.cols[f"b{b}_count"]
        if len(count) and count.max() > np.iinfo(np.uint32).max:
            raise OverflowError(f"band {b}: a cell holds more than 2**32 pixels; use a finer resolution")
        empty = count == 0
        for s in wanted:
            if s == "mean":
                col = pa.array(np.divide(part.cols[f"b{b}_sum"], np.maximum(count, 1)), mask=empty)
            elif s == "count":
                col = pa.array(count.astype(np.uint32))
            elif s == "mode":
                col = _mode(cells, part.modes[b], dtypes[b])
            else:
                col = pa.array(part.cols[f"b{b}_{s}"], mask=empty)
            columns[f"b{b}_{s}"] = col
    return pa.table(columns)


class RowsPerH0(dict):
    """Rows per h0 cell, and per band how many of the counted values are centre samples (not pixel centres)."""

    sampled: list[int]


def consolidate_raster_hex(chunk_dirs: list[Path], out_dir: Path, resolution: int, parents: tuple[int, ...],
                           stats: dict[str, list[str]] | None = None,
                           resolution_source: str = "catalog") -> RowsPerH0:
    """Merge the chunks' partials into the product in `out_dir` (which must hold no product yet); returns rows
    per h0 cell. `stats` defaults to the statistics the chunks were made for; any others need the same partials.
    `resolution_source` ("pixel size" or "catalog": where the resolution came from) goes in each file's metadata."""
    _check_settings(resolution, parents)
    markers = [json.loads((Path(d) / MARKER).read_text()) for d in chunk_dirs]
    if not markers:
        raise ValueError("no chunks to consolidate")
    first = markers[0]
    for m in markers:
        if m["version"] != VERSION or m["resolution"] != resolution or m["bands"] != first["bands"] \
                or m["stats"] != first["stats"] or m["dtypes"] != first["dtypes"]:
            raise ValueError(f"chunks differ in format, resolution, bands or stats: {m} vs {first}")
    spans = sorted((m["path"], *m["run"]["rows"]) for m in markers)
    for (p0, _, stop), (p1, start, _) in zip(spans, spans[1:]):
        if p0 != p1 or start < stop:  # overlapping chunks would count their common pixels twice
            raise ValueError(f"chunks must be disjoint row ranges of one raster: {spans}")
    bands, dtypes = first["bands"], {int(b): t for b, t in first["dtypes"].items()}
    made = {int(b): s for b, s in first["stats"].items()}
    per_band = resolve_stats(stats, bands, dtypes) if stats is not None else made
    for b, wanted in per_band.items():
        if not set(_partials(wanted)) <= set(_partials(made[b])) or ("mode" in wanted and "mode" not in made[b]):
            raise ValueError(f"band {b}: stats {wanted} need partials the chunks lack (made for {made[b]})")
    modes = [b for b, s in per_band.items() if "mode" in s]
    out_dir = Path(out_dir)
    if any(out_dir.glob("h0=*/*.parquet")):
        raise FileExistsError(f"{out_dir} already holds a product: consolidate into an empty folder")

    files: dict[int, dict[str, list[Path]]] = defaultdict(lambda: defaultdict(list))
    for d in chunk_dirs:
        for f in Path(d).glob("[gmsn]=*.arrow"):
            key, *rest = f.name[2:].split(".")
            kind = {"g": "g", "s": "s", "m": "g", "n": "s"}[f.name[0]]
            files[int(key)][kind + (rest[0] if f.name[0] in "mn" else "")].append(f)

    rows = RowsPerH0()
    rows.sampled = [0] * len(bands)
    batch: list[pa.Table] = []

    def flush():
        table = pa.concat_tables(batch)
        cells = np.asarray(table.column(f"h{resolution}").to_numpy())
        if not C.valid_at(cells, resolution).all():  # cannot happen unless partials were tampered with
            raise RuntimeError("consolidation produced invalid cell ids")
        h0 = int(C.parent(cells[:1], 0)[0])
        target = out_dir / f"h0={h0}" / f"part-{cells[0]}.parquet"
        target.parent.mkdir(parents=True, exist_ok=True)
        with pq.ParquetWriter(target, table.schema, compression="zstd", store_schema=False,
                              use_dictionary=[f"b{b}_mode" for b in modes],
                              column_encoding={n: "DELTA_BINARY_PACKED"
                                               for n in layout.hex_file_columns(resolution, parents)}) as writer:
            writer.write_table(table, row_group_size=ROW_GROUP_ROWS)
            writer.add_key_value_metadata({H3_RESOLUTION_SOURCE: resolution_source.encode()})  # store_schema drops a table's
        rows[h0] = rows.get(h0, 0) + len(cells)
        batch.clear()

    h0 = None
    for g in sorted(files):  # group cells in id order: their cells are consecutive runs of ids
        part, sampled = _read_part(files[g], modes)
        rows.sampled = [int(a + b) for a, b in zip(rows.sampled, sampled)] if len(sampled) else rows.sampled
        table = _finish(part, resolution, parents, per_band, dtypes)
        g_h0 = int(C.parent(np.array([g], np.uint64), 0)[0])
        if batch and (g_h0 != h0 or sum(len(t) for t in batch) + len(table) > TARGET_ROWS):
            flush()
        h0 = g_h0
        if len(table):
            batch.append(table)
    if batch:
        flush()
    return rows
