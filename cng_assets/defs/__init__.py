"""Dagster wiring, one module per concern. Transformations live in `cng_assets.transforms`."""
