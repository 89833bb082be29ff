"""Non-spatial layers (and FileGDB coded-value domains) -> plain Parquet, streamed in batches."""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from cng_assets.errors import CngInputError
from cng_assets.transforms import columns, sources
from cng_assets.transforms.domains import Domain, domain_table

VERSION = "3"  # bump when the product changes: products made before become stale (3: text recoded to UTF-8)


@dataclass
class TableStats:
    rows: int
    columns: list[str]
    renamed_columns: dict[str, str] = field(default_factory=dict)


def write_table(path: str, layer: str, out_path: str | Path, batch_size: int = 65_536) -> TableStats:
    """Copy a non-spatial layer of `path` (a GDAL path) to Parquet (ZSTD), keeping GDAL's column types. Column
    names follow the GeoParquet's rule (columns.output_names), so that DuckDB and the docs read them alike."""
    rows = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        with sources.open_records(path, layer, batch_size=batch_size) as (_meta, reader):
            if not reader.schema.names:  # Parquet with no columns is no product: say so before writing anything
                raise CngInputError("the table has no columns, so there is nothing to publish", layer=layer,
                                    hint="check the source layer, or leave it out with `exclude:` in the catalog "
                                         "entry (`--layers` on `cng-assets run`)")
            names = columns.output_names(reader.schema.names)
            renamed = columns.renamed(names)
            schema = pa.schema([f.with_name(names[f.name]) for f in reader.schema],
                               metadata={**(reader.schema.metadata or {}),
                                         columns.METADATA_KEY: json.dumps(renamed, ensure_ascii=False)})
            with pq.ParquetWriter(out_path, schema, compression="zstd") as writer:
                for batch in reader:
                    writer.write_batch(pa.RecordBatch.from_arrays(batch.columns, schema=schema))
                    rows += batch.num_rows
    return TableStats(rows=rows, columns=schema.names, renamed_columns=renamed)


def write_domain(domain: Domain, out_path: str | Path) -> TableStats:
    table: pa.Table = domain_table(domain)
    pq.write_table(table, out_path, compression="zstd")
    return TableStats(rows=table.num_rows, columns=table.column_names)
