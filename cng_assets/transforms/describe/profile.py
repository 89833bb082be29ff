"""Column profiles: example values (from the first rows) and null shares (from the Parquet footers). Reads a file's
footer and the first rows of its non-geometry columns (range requests, on S3); of a hex folder only one footer."""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cng_assets.transforms.describe.common import BBOX, EXAMPLES, GEOMETRY, SAMPLE_ROWS, Profile
from cng_assets.transforms.facts import DatasetFacts, hex_files
from cng_assets.transforms.product_files import ProductFiles, as_files


def column_profile(path: str | Path | BinaryIO | pq.ParquetFile, columns: list[str] | None = None) -> Profile:
    """For each column (all when `columns` is None): up to EXAMPLES example values and the share of nulls.

    `path` is a Parquet file (or an open one, or a ParquetFile) or a folder of them (a hex layer: its files in
    name order). Null shares count all rows, from the footers' statistics (from the sample for a column chunk
    without them). Example values come from the first SAMPLE_ROWS rows: the first value of every column is from
    one reference row (the first row
    with the most non-null values, preferring a feature narrower than 90° when there is a `bbox`), so
    first values can be combined in one query; the others are the most frequent in the sample. The geometry
    column's examples are its geometry types (from the GeoParquet metadata).
    """
    if isinstance(path, pq.ParquetFile):
        files = [path]
    else:
        files = [pq.ParquetFile(f) for f in ([path] if hasattr(path, "read") else _parquet_files(Path(path)))]
    if not files:
        return {}
    schema = files[0].schema_arrow
    names = list(schema.names) if columns is None else list(columns)
    unknown = [c for c in names if c not in schema.names]
    if unknown:
        raise ValueError(f"{path}: no columns {unknown} (it has {schema.names})")
    nulls, rows, missing = _footer_nulls(files, names)
    readable = [c for c in names if c != GEOMETRY and not pa.types.is_binary(schema.field(c).type)
                and not pa.types.is_large_binary(schema.field(c).type)]
    sample = _sample(files, readable)
    ref = _reference_row(sample) if sample is not None and sample.num_rows else None
    out: Profile = {}
    for c in names:
        if c == GEOMETRY:
            examples = _geometry_types(files[0])
        elif c in readable and ref is not None:
            examples = _examples(sample.column(c), ref)
        else:
            examples = []
        if c in missing and sample is not None and sample.num_rows and c in readable:
            share = sample.column(c).null_count / sample.num_rows
        elif c in missing or not rows:
            share = None
        else:
            share = nulls[c] / rows
        out[c] = (examples, share)
    return out


def profile_products(facts: DatasetFacts, root: str | Path | ProductFiles) -> dict[str, Profile]:
    """column_profile of every GeoParquet and table product of `facts`, and footer_profile of every hex folder's
    first file, keyed by the product's key."""
    files = as_files(root)
    out = {}
    for x in [*facts.layers, *facts.tables]:
        for kind, f in x.files.items():
            if kind in ("geoparquet", "table"):
                footer = pq.read_metadata(files.footer(f.key))  # read once, exactly; then the sample's column chunks
                with files.open(f.key) as opened:
                    out[f.key] = column_profile(pq.ParquetFile(opened, metadata=footer))
            elif kind == "hex":
                first = next(iter(hex_files(files, f.key)), None)
                out[f.key] = footer_profile(files.footer(first)) if first else {}
    return out


def footer_profile(footer) -> Profile:
    """A hex file's columns from its footer alone: as each one's example, the first row group's minimum where the
    footer has statistics (the cell and id columns: rows are sorted by cell, so the cell column's is the first
    row's cell); no null shares."""
    pf = pq.ParquetFile(footer)
    stats = {}
    if pf.metadata.num_row_groups:
        rg = pf.metadata.row_group(0)
        for j in range(rg.num_columns):
            s = rg.column(j).statistics
            if s is not None and s.has_min_max:
                stats.setdefault(rg.column(j).path_in_schema.split(".")[0], s.min)
    return {c: ([stats[c]] if c in stats else [], None) for c in pf.schema_arrow.names}


def _parquet_files(path: Path) -> list[Path]:
    return sorted(path.rglob("*.parquet")) if path.is_dir() else [path]


def _footer_nulls(files: list[pq.ParquetFile], names: list[str]) -> tuple[dict[str, int], int, set[str]]:
    nulls, rows, missing = dict.fromkeys(names, 0), 0, set()
    wanted = set(names)
    for f in files:
        md = f.metadata
        rows += md.num_rows
        for i in range(md.num_row_groups):
            rg = md.row_group(i)
            seen = set()
            for j in range(rg.num_columns):
                col = rg.column(j)
                top = col.path_in_schema.split(".")[0]
                if top not in wanted or top in seen:
                    continue  # a struct counts by its first leaf
                seen.add(top)
                stats = col.statistics
                if stats is None or not stats.has_null_count:
                    missing.add(top)
                else:
                    nulls[top] += stats.null_count
    return nulls, rows, missing


def _sample(files: list[pq.ParquetFile], columns: list[str]) -> pa.Table | None:
    if not columns:
        return None
    batches, n = [], 0
    for f in files:
        for batch in f.iter_batches(batch_size=min(SAMPLE_ROWS, 8192), columns=columns):
            if batches and batch.schema != batches[0].schema:
                break  # a file typed differently (e.g. an all-null column): the sample stops before it
            batches.append(batch.slice(0, SAMPLE_ROWS - n))
            n += batches[-1].num_rows
            if n >= SAMPLE_ROWS:
                break
        if n >= SAMPLE_ROWS:
            break
    return pa.Table.from_batches(batches) if batches else None


def _reference_row(sample: pa.Table) -> int:
    valid = np.zeros(sample.num_rows, np.int64)
    for col in sample.columns:
        valid += col.is_valid().to_numpy(zero_copy_only=False).astype(np.int64)
    best = valid == valid.max()
    if BBOX in sample.column_names:
        b = sample.column(BBOX).combine_chunks()
        width = (pc.struct_field(b, "xmax").to_numpy(zero_copy_only=False)
                 - pc.struct_field(b, "xmin").to_numpy(zero_copy_only=False))
        if (best & (width <= 90)).any():
            best &= width <= 90
    return int(np.flatnonzero(best)[0])


def _examples(col: pa.ChunkedArray, ref: int) -> list:
    out = [] if not col[ref].is_valid else [col[ref].as_py()]
    t = col.type
    try:
        if pa.types.is_nested(t) or pa.types.is_dictionary(t):
            raise pa.ArrowNotImplementedError("no value_counts")
        counts = pc.value_counts(col.drop_null())
        order = np.argsort(-counts.field("counts").to_numpy(), kind="stable")
        candidates = counts.field("values").take(pa.array(order[: EXAMPLES + 1])).to_pylist() if len(order) else []
    except (pa.ArrowNotImplementedError, pa.ArrowTypeError):
        candidates = col.drop_null().slice(0, 1000).to_pylist()
    for v in candidates:
        if len(out) >= EXAMPLES:
            break
        if v not in out:
            out.append(v)
    return out


def _geometry_types(pf: pq.ParquetFile) -> list:
    import json

    geo = pf.metadata.metadata or {}
    try:
        return list(json.loads(geo[b"geo"])["columns"][GEOMETRY]["geometry_types"])
    except (KeyError, ValueError, TypeError):
        return []


# ------------------------------------------------------------------------------------------------------ queries
