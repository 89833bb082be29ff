"""Where each product sits inside its dataset's folder (keys relative to the dataset prefix): the one home of
the product layout. Dagster assets prefix these keys; facts, STAC and the docs find products by them."""

INVENTORY = "inventory.json"
README = "README.md"
MAP = "map.html"  # every vector layer's PMTiles in the browser (MapLibre)
STAC_DIR = "stac"
STAC_COLLECTION = f"{STAC_DIR}/collection.json"


def table(slug: str) -> str:
    return f"lookup/{slug}.parquet"


def geoparquet(slug: str) -> str:
    return f"{slug}.parquet"


def pmtiles(slug: str) -> str:
    return f"{slug}.pmtiles"


def cog(slug: str) -> str:
    return f"{slug}.tif"


def geozarr(slug: str) -> str:
    """A Zarr v3 store (a folder): one group per resolution level."""
    return f"{slug}.zarr"


def thumbnail(slug: str) -> str:
    return f"{slug}.png"


# The hive folder key of hex products (`h0=<cell>/`): only in the path, as in DuckDB's, pyarrow's and Spark's
# partitioned writes. A column of that name inside the files would clash with it in pandas, pyarrow and DuckDB.
HEX_PARTITION = "h0"


def hex(slug: str) -> str:
    """A folder of `h0=<cell>/part-<first cell>.parquet` files."""
    return f"hex/{slug}"


def hex_file_columns(res: int, parents: tuple[int, ...]) -> list[str]:
    """The cell columns inside a hex file: the cell, then its parents, but not h0 (readers get it from the path)."""
    return [f"h{r}" for r in (res, *parents) if r != 0]


def hex_folder_cell(path) -> int:
    """The h0 of a hex file, from its folder `h0=<cell>`."""
    return int(path.parent.name.split("=", 1)[1])


def hex_plan(slug: str) -> str:
    return f"hex/_plan/{slug}.parquet"


def hex_chunk(slug: str, chunk: int) -> str:
    return f"hex/_chunks/{slug}/chunk={chunk:03d}"
