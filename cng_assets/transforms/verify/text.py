"""A product's text against its source's, decoded with the source's real encoding by GDAL itself.

The writer reads the source as an Arrow stream and names the encoding GDAL found to pyogrio (sources.arrow_encoding).
This check reads it the other way: `pyogrio.read_dataframe`, whose strings GDAL recodes to UTF-8 by its own rules
(a shapefile's .cpg, else the code page in its .dbf header, else dBase's ISO-8859-1; UTF-8 for the formats that
store it). Each text column of the product must equal the source's, row for row (by `_cng_fid`, the 1-based
position in the source, where the product has it: a GeoParquet is ordered by space and drops features); and pyarrow
and DuckDB must read every text value, which they refuse when it is not valid UTF-8. The first COMPARE_ROWS rows
are compared; DuckDB reads all of them.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pyogrio

from cng_assets.transforms import columns
from cng_assets.transforms.sources import open_options

COMPARE_ROWS = 100_000
LISTED = 5


@dataclass
class TextCheck:
    passed: bool = True
    problems: list[str] = field(default_factory=list)
    figures: dict = field(default_factory=dict)


def check_text(product: str | Path, source: str, layer: str) -> TextCheck:
    out = TextCheck()
    schema = pq.read_schema(product)
    renamed = json.loads((schema.metadata or {}).get(columns.METADATA_KEY.encode(), b"{}"))
    output_of = {src: renamed.get(src, src) for src in pyogrio.read_info(source, layer=layer, **open_options(source))["fields"]}
    text = [(s, o) for s, o in output_of.items() if o in schema.names and _is_text(schema.field(o).type)]
    out.figures = {"text_columns": len(text), "rows_compared": 0, "mismatched_values": 0}
    _readers(out, product, [o for _, o in text])
    if not text or not out.passed:
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        src = pyogrio.read_dataframe(source, layer=layer, read_geometry=False, columns=[s for s, _ in text],
                                     max_features=COMPARE_ROWS, **open_options(source))
    table = pq.read_table(product, columns=[*(o for _, o in text), *([columns.FID] if columns.FID in schema.names else [])])
    if columns.FID in schema.names:  # the product's rows of the source rows read (_cng_fid: 1-based position)
        table = table.filter(pc.less_equal(table.column(columns.FID), len(src)))
        rows = table.column(columns.FID).to_numpy() - 1
    else:
        table, rows = table.slice(0, len(src)), range(min(len(src), table.num_rows))
    out.figures["rows_compared"] = table.num_rows
    for s, o in text:
        theirs, ours = src[s].tolist(), table.column(o).to_pylist()
        bad = [(int(r), theirs[r], v) for r, v in zip(rows, ours) if v != _text(theirs[r])]
        if bad:
            out.passed = False
            out.figures["mismatched_values"] += len(bad)
            out.problems.append(f"column {o!r}: {len(bad)} values differ from the source's text, e.g. row {bad[0][0]}: "
                                f"{bad[0][2]!r} where the source has {bad[0][1]!r}")
    return out


def _is_text(kind: pa.DataType) -> bool:
    return pa.types.is_string(kind) or pa.types.is_large_string(kind)


def _text(value):
    return None if value is None or value != value else value  # pandas gives NaN for a null string


def _readers(out: TextCheck, product: str | Path, names: list[str]) -> None:
    try:
        pq.read_table(product, columns=names)
        quoted = ", ".join('max(length("{}"))'.format(n.replace('"', '""')) for n in names) or "count(*)"
        with duckdb.connect() as con:
            con.execute(f"SELECT {quoted} FROM read_parquet(?)", [str(product)]).fetchall()
    except Exception as e:  # noqa: BLE001 (what a reader says is the finding)
        out.passed = False
        out.problems.append(f"a reader refuses its text: {type(e).__name__}: {str(e)[:300]}")
