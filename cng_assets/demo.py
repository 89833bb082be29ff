"""The demo source: a GeoPackage shaped like PAD-US, built from the Natural Earth countries pyogrio ships.

Layers: two polygon layers (one in an equal-area CRS, as PAD-US is in Albers), a point layer with a name that
needs a slug, a non-spatial lookup table, and a raster (population density on a 1-degree grid, float32, nodata
over the oceans, NaN) stored as GeoPackage tiles.
"""

from __future__ import annotations

import os
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pyogrio

NATURAL_EARTH = Path(pyogrio.__file__).parent / "tests" / "fixtures" / "naturalearth_lowres" / "naturalearth_lowres.shp"
LAYERS = ("Countries", "Continents", "Country labels", "Continent_Lookup")


def build_demo_source(out_path: str | Path) -> Path:
    out_path = Path(out_path)
    if not NATURAL_EARTH.exists():
        raise FileNotFoundError(f"{NATURAL_EARTH} is missing: the installed pyogrio does not ship its test fixtures")
    countries = gpd.read_file(NATURAL_EARTH)
    continents = countries.dissolve(by="continent", aggfunc={"pop_est": "sum", "name": "count"}).reset_index()
    continents = continents.rename(columns={"name": "countries"}).to_crs("EPSG:6933")  # World Cylindrical Equal Area
    labels = countries[["name", "iso_a3"]].copy()
    labels = gpd.GeoDataFrame(labels, geometry=countries.geometry.representative_point(), crs=countries.crs)
    lookup = pd.DataFrame({"continent": sorted(countries.continent.unique())})
    lookup["code"] = [c[:2].upper() + str(i) for i, c in enumerate(lookup.continent)]

    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.stem}.{os.getpid()}.tmp{out_path.suffix}")
    tmp.unlink(missing_ok=True)
    try:
        for name, frame in zip(LAYERS, (countries, continents, labels, lookup)):
            pyogrio.write_dataframe(frame, tmp, layer=name, driver="GPKG", append=tmp.exists())
        _write_density(countries, tmp)
        os.replace(tmp, out_path)
    finally:
        tmp.unlink(missing_ok=True)
    return out_path


RASTER = "Population density"


def _write_density(countries: gpd.GeoDataFrame, gpkg: Path) -> None:
    """People per km² of each country, rasterized on a global 1° grid (360 x 180), as a GeoPackage raster."""
    import numpy as np
    import rasterio
    from rasterio.features import rasterize
    from rasterio.transform import from_origin

    area_km2 = countries.to_crs("EPSG:6933").area / 1e6
    density = (countries.pop_est / area_km2).astype("float32")
    transform = from_origin(-180, 90, 1, 1)
    # Oceans are NaN: GDAL keeps no nodata value for GeoPackage float tiles, and NaN is never a valid density.
    grid = rasterize(zip(countries.geometry, density), out_shape=(180, 360), transform=transform, fill=np.nan,
                     dtype="float32")
    with rasterio.open(gpkg, "w", driver="GPKG", width=360, height=180, count=1, dtype="float32", crs="EPSG:4326",
                       transform=transform, RASTER_TABLE=RASTER, APPEND_SUBDATASET="YES",
                       TILE_FORMAT="TIFF") as dst:
        dst.write(grid[np.newaxis])
