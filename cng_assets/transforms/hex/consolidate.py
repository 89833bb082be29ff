"""Chunk outputs -> `h0=<cell>/part-0.parquet`: rows sorted by cell, the layer's attributes joined on `_cng_fid`,
then checked. DuckDB does the sorting with a memory limit, spilling to disk rather than running out of memory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

from cng_assets.transforms.hex.fill import HexSettings

VERSION = "1"  # bump when the consolidated layout changes
FID = "_cng_fid"
NOT_ATTRIBUTES = {FID, "geometry", "bbox"}


@dataclass
class HexCheck:
    name: str
    passed: bool
    detail: dict


def _connect(tmp: Path, memory_limit: str) -> duckdb.DuckDBPyConnection:
    return duckdb.connect(config={"memory_limit": memory_limit, "temp_directory": str(tmp / "spill"), "threads": 2})


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def attribute_columns(geoparquet: str, attributes: str | list[str]) -> list[str]:
    names = [n for n in pq.read_schema(geoparquet).names if n not in NOT_ATTRIBUTES]
    if attributes == "all":
        return names
    if attributes == "none":
        return []
    missing = [a for a in attributes if a not in names]
    if missing:
        raise ValueError(f"hex attributes {missing} are not columns of the layer (it has {names})")
    return list(attributes)


def chunk_h0s(chunk_dirs: list[Path]) -> list[int]:
    return sorted({int(p.name.split("=", 1)[1]) for d in chunk_dirs for p in Path(d).glob("h0=*")})


def consolidate(chunk_dirs: list[Path], geoparquet: str, out_dir: Path, settings: HexSettings, *,
                attributes: str | list[str] = "all", scratch: Path, memory_limit: str = "1GB") -> dict[int, int]:
    """Write one sorted file per h0 into `out_dir`; returns rows per h0."""
    h = f"h{settings.resolution}"
    cols = attribute_columns(geoparquet, attributes)
    hex_cols = ", ".join(_quote(c) for c in [FID, h, *(f"h{p}" for p in settings.parents)])
    attr_select = "".join(f", a.{_quote(c)}" for c in cols)
    distinct = "DISTINCT" if settings.containment == "overlap" else ""  # parts of one feature may share a cell
    rows = {}
    con = _connect(scratch, memory_limit)
    try:
        for h0 in chunk_h0s(chunk_dirs):
            files = [str(f) for d in chunk_dirs for f in sorted((Path(d) / f"h0={h0}").glob("*.parquet"))]
            target = out_dir / f"h0={h0}" / "part-0.parquet"
            target.parent.mkdir(parents=True, exist_ok=True)
            join = f"LEFT JOIN read_parquet('{geoparquet}') a USING ({FID})" if cols else ""
            con.execute(
                f"COPY (SELECT {', '.join('x.' + c for c in hex_cols.split(', '))}{attr_select} "
                f"FROM (SELECT {distinct} {hex_cols} FROM read_parquet({files!r})) x {join} ORDER BY x.{h}, x.{FID}) "
                f"TO '{target}' (FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE 122880)")
            rows[h0] = pq.ParquetFile(target).metadata.num_rows
    finally:
        con.close()
    return rows


def _parent_sql(col: str, r: int) -> str:
    """H3's parent by the spec's bit layout, written independently of cells.py."""
    return f"(({col} & ~(15::UBIGINT << 52)) | ({r}::UBIGINT << 52) | ((1::UBIGINT << {3 * (15 - r)}) - 1))"


def _valid_sql(col: str, r: int) -> str:
    digits = "".join(f" AND (({col} >> {3 * (15 - d)}) & 7) <> 7" for d in range(1, r + 1))
    unused = f"((1::UBIGINT << {3 * (15 - r)}) - 1)"
    return (f"((({col} >> 59) & 15) = 1 AND (({col} >> 52) & 15) = {r} AND (({col} >> 45) & 127) < 122 "
            f"AND ({col} & {unused}) = {unused}{digits})")


def check_hex(out_dir: Path, geoparquet: str, settings: HexSettings, chunk_rows: int, *, scratch: Path,
              memory_limit: str = "1GB") -> list[HexCheck]:
    """The consolidated product's checks, in SQL over the written files (not the engine's own arrays)."""
    h, res = f"h{settings.resolution}", settings.resolution
    files = sorted(str(f) for f in out_dir.glob("h0=*/*.parquet"))
    con = _connect(scratch, memory_limit)
    try:
        if files:
            x = f"read_parquet({files!r}, filename = true)"
            in_dir = "regexp_extract(filename, 'h0=([0-9]+)', 1)::UBIGINT"
            total, dups, bad_parents, invalid = con.execute(
                f"SELECT (SELECT count(*) FROM {x}), "
                f"(SELECT count(*) FROM (SELECT {FID}, {h} FROM {x} GROUP BY ALL HAVING count(*) > 1)), "
                f"(SELECT count(*) FROM {x} WHERE {in_dir} <> {_parent_sql(h, 0)}"
                + "".join(f" OR h{p} <> {_parent_sql(h, p)}" for p in settings.parents) + "), "
                f"(SELECT count(*) FROM {x} WHERE NOT {_valid_sql(h, res)}"
                + "".join(f" OR NOT {_valid_sql(f'h{p}', p)}" for p in settings.parents) + ")").fetchone()
            covered = f"SELECT DISTINCT {FID} FROM {x}"
        else:
            total = dups = bad_parents = invalid = 0
            covered = f"SELECT NULL::BIGINT AS {FID} WHERE false"
        missing = con.execute(f"SELECT count(*) FROM read_parquet('{geoparquet}') "
                              f"WHERE {FID} NOT IN ({covered})").fetchone()[0]
    finally:
        con.close()
    # overlap mode removes cells two parts of one feature share, so it may end with fewer rows than the chunks
    rows_ok = total == chunk_rows if settings.containment == "center" else total <= chunk_rows
    return [
        HexCheck("every_feature_has_cells", missing == 0, {"features_without_cells": missing}),
        HexCheck("no_duplicate_cells", dups == 0, {"duplicate_fid_cell_pairs": dups}),
        HexCheck("parents_consistent", bad_parents == 0, {"rows_with_wrong_parent_or_h0_partition": bad_parents}),
        HexCheck("rows_match_chunks", rows_ok, {"consolidated_rows": total, "chunk_rows": chunk_rows}),
        HexCheck("cell_ids_valid", invalid == 0, {"invalid_rows": invalid}),
    ]
