"""The dataset's README.md: what it is (free text from the catalog entry), and facts read from the products
(layers, counts, sizes, columns, null shares, H3 settings and cell areas, provenance), map thumbnails, and
DuckDB example queries built from the real column names and real values; and map.html, every vector layer
on a MapLibre map.

Pure: takes facts and local paths, writes local files; knows nothing of Dagster or storage.

Memory: `thumbnail` streams the geometry column in batches of at most `max_vertices` (estimated from the
footers) and renders each batch into the Agg canvas before reading the next, so every feature is drawn and
no more than one batch is in memory. `column_profile` takes null shares from the Parquet footers (all rows)
and example values from the first `SAMPLE_ROWS` rows.
"""

from cng_assets.transforms.describe.map_page import map_page
from cng_assets.transforms.describe.maps import inline_pngs, small_png, thumbnail
from cng_assets.transforms.describe.profile import column_profile, profile_products
from cng_assets.transforms.describe.queries import example_queries
from cng_assets.transforms.describe.readme import VERSION, dataset_readme

__all__ = ["VERSION", "column_profile", "dataset_readme", "example_queries", "inline_pngs", "map_page",
           "profile_products", "small_png", "thumbnail"]
