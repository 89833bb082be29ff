"""How readers open a hex folder (`h0=<cell>/part-*.parquet`, h0 only in the folder names): the read recipes the
README and the STAC Items show. Every hive reader adds h0 from the path, but each types it its own way (DuckDB
1.5 BIGINT, pyarrow and pandas a string, polars Int64), so the recipes ask for unsigned 64-bit, the type of the
cell columns inside the files."""

from __future__ import annotations

from cng_assets.transforms.sql import literal

DUCKDB_HIVE_TYPES = "hive_types = {'h0': 'UBIGINT'}"

H0_TYPES = ("h0 is not a column inside the files: readers add it from the `h0=<cell>` folder names, typed by default "
            "as BIGINT (DuckDB), string (pyarrow; pandas: category) or Int64 (polars); the recipes type it as "
            "unsigned 64-bit like the cell columns, so it compares with them and with H3 functions.")

DUCKDB_MIN_H0_BUG = ("DuckDB 1.5.5 and older fail with an INTERNAL Error on `min(h0)` or `max(h0)` when the files "
                     "read are a single file (duckdb issue 25629, fixed in 1.5.6).")

# pyarrow's partitioning (pandas passes it on) and polars' hive schema that type h0 as the cell columns are typed
PYARROW_PARTITIONING = 'ds.partitioning(pa.schema([("h0", pa.uint64())]), flavor="hive")'
POLARS_HIVE_SCHEMA = '{"h0": pl.UInt64}'


def python_recipe(folder: str, h0: int) -> str:
    """Python that reads the hex folder `folder` (ending in '/') with each reader, keeping the rows of one h0."""
    return "\n".join([
        "import duckdb, pandas as pd, polars as pl, pyarrow as pa, pyarrow.dataset as ds, pyarrow.parquet as pq",
        "",
        f"h0 = {h0}  # a resolution-0 cell: one folder",
        f"rel = duckdb.sql(\"SELECT * FROM read_parquet({literal(folder + '*/*.parquet')}, {DUCKDB_HIVE_TYPES}) "
        "WHERE h0 = $h0\",",
        "                 params={\"h0\": h0})",
        f"hive = {PYARROW_PARTITIONING}",
        f"df = pd.read_parquet({folder!r}, partitioning=hive, filters=[(\"h0\", \"=\", h0)])",
        f"table = pq.read_table({folder!r}, partitioning=hive, filters=[(\"h0\", \"=\", h0)])",
        f"dataset = ds.dataset({folder!r}, partitioning=hive)  # then dataset.to_table(filter=ds.field(\"h0\") == h0)",
        f"lazy = pl.scan_parquet({folder + '**/*.parquet'!r}, hive_partitioning=True, hive_schema={POLARS_HIVE_SCHEMA})",
        "frame = lazy.filter(pl.col(\"h0\") == h0).collect()",
    ])
