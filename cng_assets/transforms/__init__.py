"""Pure transformations (read, convert, describe). Nothing here knows about Dagster or where products are stored."""
