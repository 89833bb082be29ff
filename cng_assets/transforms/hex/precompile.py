"""Compile (and cache) the hex engine's numba functions once, so chunk pods do not compile them at start: the image
build runs `python -m cng_assets.transforms.hex.precompile` (numba caches only where it can write: NUMBA_CACHE_DIR)."""

import numpy as np
import shapely

from cng_assets.transforms.hex.fill import large_fill
from cng_assets.transforms.hex.lattice import lattice_fill


def main() -> None:
    lattice_fill(np.array([shapely.box(-122.3, 37.8, -122.29, 37.81)]), 10)
    for _ in large_fill(shapely.box(-122.4, 37.7, -122.2, 37.9), 10, "center"):
        pass


if __name__ == "__main__":
    main()
