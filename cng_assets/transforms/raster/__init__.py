"""Raster products: per-band statistics of pixels aggregated to H3 cells (`hex`), joinable with the vector hex
products on the same uint64 cell ids."""
