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


def hex(slug: str) -> str:
    """A folder of `h0=<cell>/part-<first cell>.parquet` files."""
    return f"hex/{slug}"


def hex_plan(slug: str) -> str:
    return f"hex/_plan/{slug}.parquet"


def hex_chunk(slug: str, chunk: int) -> str:
    return f"hex/_chunks/{slug}/chunk={chunk:03d}"
