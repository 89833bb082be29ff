"""Names shared by the describe modules."""

from cng_assets.transforms.columns import BBOX, FID, GEOMETRY

OWN_COLUMNS = {FID, GEOMETRY, BBOX}
SAMPLE_ROWS = 10_000  # rows read for example values
EXAMPLES = 3  # example values per column
PRODUCTS = (("geoparquet", "GeoParquet"), ("pmtiles", "PMTiles"), ("hex", "H3 cells"), ("thumbnail", "map"))
Profile = dict[str, tuple[list, float | None]]  # column -> (example values, null share)
