"""A whole layer in one process: plan, every chunk, consolidation and checks (the `cng-assets hex` command and
the benchmark). The Dagster assets run the same steps as separate partitions."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from cng_assets.transforms.hex.chunk import ChunkStats, run_chunk
from cng_assets.transforms.hex.consolidate import HexCheck, consolidate
from cng_assets.transforms.hex.fill import HexSettings
from cng_assets.transforms.hex.plan import MAX_CHUNKS, plan_digest, plan_layer


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


def chunk_count(plan: pa.Table) -> int:
    return int(pc.max(plan.column("chunk")).as_py() or 0) + 1 if plan.num_rows else 1


def hex_layer(geoparquet: str, out_dir: str | Path, settings: HexSettings, *, attributes: str | list[str] = "all",
              max_chunks: int = MAX_CHUNKS, target_cells: float = 20_000_000, scratch_dir: str | None = None,
              on_chunk: Callable[[int, int, ChunkStats], None] | None = None) -> HexLayerResult:
    """Hex one GeoParquet layer into `out_dir/h0=<cell>/part-<first cell>.parquet` (out_dir should be new and empty)."""
    out_dir = Path(out_dir)
    plan = plan_layer(geoparquet, settings.resolution, max_chunks=max_chunks, target_cells=target_cells)
    n = chunk_count(plan)
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
