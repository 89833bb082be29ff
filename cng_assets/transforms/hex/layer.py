"""A whole layer in one process: plan, every chunk, consolidation and checks (the `cng-assets hex` command and
the benchmark). The Dagster assets run the same steps as separate partitions."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from cng_assets.catalog import MAX_CELLS
from cng_assets.errors import CngInputError
from cng_assets.transforms.hex.chunk import ChunkStats, run_chunk
from cng_assets.transforms.hex.consolidate import HexCheck, consolidate
from cng_assets.transforms.hex.fill import HexSettings
from cng_assets.transforms.hex.plan import MAX_CHUNKS, PlanEstimate, check_budget, estimate, plan_digest, plan_layer


@dataclass
class HexLayerResult:
    plan: pa.Table
    chunks: list[ChunkStats]
    rows_per_h0: dict[int, int]
    checks: list[HexCheck]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)


def chunk_units(plan: pa.Table, chunk: int) -> pa.Table:
    return plan.filter(pc.equal(plan.column("chunk"), chunk))


def check_input(geoparquet: str) -> None:
    """What hexing needs of its input: a GeoParquet file with the `_cng_fid` row id, in lon/lat."""
    import json

    import pyarrow.parquet as pq
    from pyproj import CRS
    from pyproj.exceptions import CRSError

    make = "make GeoParquet with `cng-assets run`"
    try:
        meta = pq.read_schema(geoparquet)
    except (OSError, pa.ArrowInvalid) as e:
        raise CngInputError(f"{geoparquet} is not a Parquet file ({e})", hint=make) from None
    geo = json.loads((meta.metadata or {}).get(b"geo", b"null"))
    if not geo:
        raise CngInputError(f"{geoparquet} is Parquet without GeoParquet metadata", hint=make)
    if "_cng_fid" not in meta.names:
        raise CngInputError(f"{geoparquet} has no `_cng_fid` row id column (it was not made by this project)",
                            hint="make it with `cng-assets run`, which numbers the features, or add an int64 `_cng_fid`")
    try:
        column = geo["columns"][geo["primary_column"]]
        crs = CRS.from_user_input(column["crs"]) if column.get("crs") else None if "crs" in column else CRS("OGC:CRS84")
    except (KeyError, TypeError, CRSError) as e:
        raise CngInputError(f"{geoparquet} has GeoParquet metadata this project cannot read ({e!r})", hint=make) from None
    if crs is None or not crs.is_geographic or not crs.equals("OGC:CRS84", ignore_axis_order=True):
        raise CngInputError(f"{geoparquet} is not in lon/lat (its CRS: {crs.name if crs else 'unknown'})",
                            hint="hex needs EPSG:4326 lon/lat: make it with `cng-assets run`, which reprojects")


def hex_layer(geoparquet: str, out_dir: str | Path, settings: HexSettings, *, attributes: str | list[str] = "all",
              max_chunks: int = MAX_CHUNKS, target_cells: float = 20_000_000, scratch_dir: str | None = None,
              max_cells: int = MAX_CELLS, on_plan: Callable[[PlanEstimate], None] | None = None,
              on_chunk: Callable[[int, int, ChunkStats], None] | None = None) -> HexLayerResult:
    """Hex one GeoParquet layer into `out_dir/h0=<cell>/part-<first cell>.parquet` (out_dir should be new and empty)."""
    out_dir = Path(out_dir)
    check_input(geoparquet)
    plan = plan_layer(geoparquet, settings.resolution, max_chunks=max_chunks, target_cells=target_cells)
    est = estimate(plan)
    if on_plan:
        on_plan(est)
    check_budget(est, max_cells, settings.resolution)
    n = est.chunks
    with tempfile.TemporaryDirectory(prefix="cng-hex-", dir=scratch_dir) as tmp:
        tmp = Path(tmp)
        chunk_dirs, stats = [], []
        for k in range(n):
            chunk_dirs.append(tmp / f"chunk={k:03d}")
            stats.append(run_chunk(geoparquet, chunk_units(plan, k), settings, chunk_dirs[-1], plan_digest(plan)))
            if on_chunk:
                on_chunk(k, n, stats[-1])
        done = consolidate(chunk_dirs, geoparquet, out_dir, settings, attributes=attributes,
                           chunk_rows=sum(s.cells for s in stats))
    return HexLayerResult(plan=plan, chunks=stats, rows_per_h0=done.rows_per_h0, checks=done.checks)
