"""Output column names: which names the products reserve, and how a source column that collides is renamed.

Names are compared without regard to letter case, because DuckDB's identifiers are case-insensitive: a source
column `BBox` beside our `bbox` makes DuckDB rename one of them (`bbox_1`) when it reads the file. A colliding
source column becomes `src_<name>`; when that is taken too, `src_<name>_2`, `src_<name>_3`, ... Pure: no I/O.
"""

from __future__ import annotations

FID, GEOMETRY, BBOX = "_cng_fid", "geometry", "bbox"
CELLS = tuple(f"h{r}" for r in range(16))  # the hex product's cell columns, every resolution
RESERVED = (FID, BBOX, GEOMETRY, *CELLS)
PREFIX = "src_"
METADATA_KEY = "cng_renamed_columns"  # Parquet footer key: JSON {source name: output name}


def output_names(source: list[str], reserved: tuple[str, ...] = RESERVED) -> dict[str, str]:
    """Source column -> output column, in source order. A column keeps its name unless the name is reserved or
    an earlier source column has it (both case-insensitively). Kept names are taken first, so a renamed column
    never takes the name of a source column that is kept, whatever the order."""
    taken = {r.casefold() for r in reserved}
    kept: set[str] = set()
    for name in source:
        if name.casefold() not in taken and name.casefold() not in kept:
            kept.add(name.casefold())
    taken |= kept
    out: dict[str, str] = {}
    seen: set[str] = set()
    for name in source:
        if name.casefold() in kept and name.casefold() not in seen:
            out[name] = name
            seen.add(name.casefold())
        else:
            out[name] = unused(PREFIX + name, taken)
            taken.add(out[name].casefold())
    return out


def renamed(names: dict[str, str]) -> dict[str, str]:
    """Only the columns whose name changed."""
    return {k: v for k, v in names.items() if k != v}


def rename_note(source_name: str) -> str:
    """How the docs (STAC, README) explain a renamed column."""
    return (f"Source column `{source_name}`, renamed: its name is one of the products' own or another column's "
            "(compared without regard to letter case).")


def unused(name: str, taken: set[str]) -> str:
    """`name`, or `name_2`, `name_3`, ...: the first whose case-folded form is not in `taken` (case-folded)."""
    if name.casefold() not in taken:
        return name
    n = 2
    while f"{name}_{n}".casefold() in taken:
        n += 1
    return f"{name}_{n}"
