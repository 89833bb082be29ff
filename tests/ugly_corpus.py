"""An ugly corpus (issue 22): awkward inputs users bring, each built here from scratch, and how to run them.

Pure data: `build(folder)` writes every source under `folder` and returns nothing; `CASES` says which layer of
which run each case is and what a right product looks like, in terms a test checks without this project's code;
`RUNS` says how `cng-assets run` is called on each source. Cases of one format share a source (layers of one
GeoPackage, files of one folder), so the corpus costs a few runs, not one per case.

Make it by hand: `python tests/ugly_corpus.py OUTDIR`, then e.g.
`cng-assets run --source OUTDIR/corpus.gpkg --dataset ugly --out OUTDIR/out --resolution 5 --parents 4,0`.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import rasterio
import shapely
from rasterio.transform import Affine

H3 = ("--resolution", "5", "--parents", "4,0")  # the cheapest hex that still fills every polygon layer


@dataclass(frozen=True)
class Run:
    source: str  # relative to the corpus folder
    dataset: str
    args: tuple[str, ...] = ()


RUNS = {
    "gpkg": Run("corpus.gpkg", "ugly_gpkg"),
    "files": Run("files", "ugly_files"),  # a folder: each file its own layers (shapefiles, GeoJSON, GeoTIFF)
    # layers that declare no CRS, given one; and grows.gpkg, run twice: rows are appended between the runs
    "crs_given": Run("given", "ugly_given", ("--crs", "EPSG:32618")),
    "zip": Run("nested.zip", "ugly_zip"),
}

SOUTH_LAEA = "+proj=laea +lat_0=-90 +lon_0=0 +datum=WGS84 +units=m"
NORTH_LAEA = "+proj=laea +lat_0=90 +lon_0=0 +datum=WGS84 +units=m"
DATELINE_LAEA = "+proj=laea +lat_0=-16 +lon_0=180 +datum=WGS84 +units=m"
EQUAL_AREA = "EPSG:6933"


@dataclass(frozen=True)
class Case:
    name: str
    run: str  # a key of RUNS
    source: str  # the file (relative to the corpus folder) that holds the layer
    layer: str  # the layer's name in that file
    expect: str = "product"  # or "refused": non-zero exit, a message naming dataset and layer, nothing published
    kind: str = "polygon"  # polygon | line | point | raster
    area_crs: str = EQUAL_AREA  # an equal-area CRS for per-feature areas
    fids: tuple[int, ...] = ()  # the features (1-based source order) the case is about; () = all of the layer
    densify: bool = False  # segmentize before projecting to the area CRS: edges are straight in the CRS they are written in
    intended: dict[int, str] = field(default_factory=dict)  # fid: WKT (source CRS) of what a feature means
    encoding: str | None = None  # the source's real text encoding, when GDAL cannot tell
    said: tuple[str, ...] = ()  # words a refusal must say, besides the dataset and layer
    about: str = ""


def _ring(cx: float, cy: float, r: float, n: int = 128) -> shapely.Polygon:
    a = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return shapely.Polygon(np.column_stack([cx + r * np.cos(a), cy + r * np.sin(a)]))


def _buildings() -> list[shapely.Polygon]:
    """A 2 km park (in EPSG:3857 metres near lon 10, lat 45) and 30 buildings of 20 m x 20 m inside it."""
    x0, y0 = 1_113_194.9, 5_621_521.5
    park = shapely.box(x0, y0, x0 + 2000, y0 + 2000)
    homes = [shapely.box(x0 + 100 + 300 * (i % 6), y0 + 100 + 350 * (i // 6), x0 + 120 + 300 * (i % 6),
                         y0 + 120 + 350 * (i // 6)) for i in range(30)]
    return [park, *homes]


BOWTIE = "POLYGON((10 45, 11 46, 11 45, 10 46, 10 45))"
HOLE_ON_EDGE = "POLYGON((10 45, 12 45, 12 47, 10 47, 10 45), (10 45.5, 11 45.5, 11 46.5, 10 46.5, 10 45.5))"
ENCLAVE = "MULTIPOLYGON(((10 45, 13 45, 13 48, 10 48, 10 45)), ((11 46, 12 46, 12 47, 11 47, 11 46)))"
ANTARCTICA = shapely.Polygon([*((x, -60) for x in range(-180, 181)), (180, -90), (-180, -90)])
ODD_NAME = "12 Áreas protegidas (año)"
LATIN = ["Zürich", "São Paulo", "Kraków", "Île-de-France", "Ñuñoa"]
WHEN = ["2024-03-10T08:30:00+05:30", "2024-03-10T08:30:00-08:00", "2024-07-01T00:00:00Z", None]

CASES = [
    # -- one GeoPackage, many layers (run "gpkg") ------------------------------------------------------------
    Case("south_pole_3031", "gpkg", "corpus.gpkg", "south_pole_3031", area_crs=SOUTH_LAEA, densify=True,
         about="a 1000 km ring around the South Pole in Antarctic Polar Stereographic"),
    Case("north_pole_3413", "gpkg", "corpus.gpkg", "north_pole_3413", area_crs=NORTH_LAEA, densify=True,
         about="a 1000 km ring around the North Pole in NSIDC Sea Ice Polar Stereographic North"),
    Case("antarctica_lonlat", "gpkg", "corpus.gpkg", "antarctica_lonlat", area_crs=SOUTH_LAEA, densify=True,
         about="lon/lat ring along -60 from -180 to 180, closed along ±180 and the pole (as Natural Earth's Antarctica)"),
    Case("across_180_lonlat", "gpkg", "corpus.gpkg", "across_180_lonlat", area_crs=DATELINE_LAEA,
         about="boxes across ±180 written 177 .. -178 in lon/lat"),
    Case("across_180_3832", "gpkg", "corpus.gpkg", "across_180_3832", area_crs=DATELINE_LAEA, densify=True,
         about="a box across ±180 in PDC Mercator (EPSG:3832): reprojection wraps it"),
    Case("bowtie", "gpkg", "corpus.gpkg", "repairs_and_nulls", fids=(1,), intended={
        1: "MULTIPOLYGON(((10 45, 10.5 45.5, 10 46, 10 45)), ((11 45, 11 46, 10.5 45.5, 11 45)))"},
         about="a self-crossing ring: two triangles"),
    Case("hole_on_shell_edge", "gpkg", "corpus.gpkg", "repairs_and_nulls", fids=(3,), intended={
        3: "POLYGON((10 45, 12 45, 12 47, 10 47, 10 46.5, 11 46.5, 11 45.5, 10 45.5, 10 45))"},
         about="a hole sharing part of an edge with its shell: the shell less the hole"),
    Case("enclave_part", "gpkg", "corpus.gpkg", "repairs_and_nulls", fids=(5,), intended={
        5: "POLYGON((10 45, 13 45, 13 48, 10 48, 10 45), (11 46, 12 46, 12 47, 11 47, 11 46))"},
         about="a MultiPolygon part inside another part: an enclave, drawn as boundary files draw one, is a hole"),
    Case("nulls_and_empties", "gpkg", "corpus.gpkg", "repairs_and_nulls", fids=(2, 4),
         about="a null and an empty geometry among polygons: dropped, counted"),
    Case("polygon_z", "gpkg", "corpus.gpkg", "polygon_z", about="3D polygons: 2D in the product"),
    Case("polygon_zm", "gpkg", "corpus.gpkg", "polygon_zm", about="polygons with Z and M coordinates"),
    Case("curvepolygon", "gpkg", "corpus.gpkg", "curvepolygon", intended={1: _ring(0, 4_005_000, 5000, 1024).wkt},
         about="a CURVEPOLYGON circle of radius 5 km in EPSG:6933 (equal-area): area pi r^2 once linearised"),
    Case("park_30_buildings", "gpkg", "corpus.gpkg", "small_parts", fids=tuple(range(1, 32)),
         about="a 2 km park with 30 buildings of 20 m inside: all 31 in the tiles at max zoom"),
    Case("tiny_20m", "gpkg", "corpus.gpkg", "small_parts", fids=(32,), about="a lone 20 m polygon, far below one H3 cell"),
    Case("odd_layer_name", "gpkg", "corpus.gpkg", ODD_NAME, about="a layer name with a leading digit, spaces, accents"),
    Case("empty_layer", "gpkg", "corpus.gpkg", "empty_layer", about="no features"),
    Case("only_null_geometries", "gpkg", "corpus.gpkg", "only_null_geometries", expect="refused",
         said=("null",), about="features, none with a geometry"),
    Case("no_crs", "gpkg", "corpus.gpkg", "no_crs", expect="refused", said=("--crs",),
         about="a layer that declares no CRS, run without --crs"),
    Case("points_near_180_and_pole", "gpkg", "corpus.gpkg", "points", kind="point",
         about="points at -179.5 and 179.99, near the South Pole (beyond the tiles' -85.05), and a null"),
    # -- one folder of files (run "files") -------------------------------------------------------------------
    Case("mixed_geojson", "files", "files/mixed.geojson", "mixed",
         about="a GeoJSON mixing polygons, points, lines and a collection: a polygon layer"),
    Case("datetimes_tz", "files", "files/datetimes.geojson", "datetimes", about="datetimes with time zones, and a null"),
    Case("duplicate_names_by_case", "files", "files/dup_case.geojson", "dup_case",
         about="properties 'Name', 'NAME' and 'name': three columns"),
    Case("geojson_integer_id", "files", "files/with_id.geojson", "with_id",
         about="an integer 'id' property GDAL also takes as FID"),
    Case("latin1_shapefile", "files", "files/latin.shp", "latin", encoding="latin1",
         about="a shapefile whose .dbf is Latin-1, with no .cpg"),
    Case("line_zm_fixture", "files", "files/line_zm.gpkg", "line_zm", kind="line",
         about="pyogrio's measured 3D line fixture (LineString ZM)"),
    Case("cut_short_shp", "files", "files/cut_shp.shp", "cut_shp", expect="refused", said=("cut short",),
         about="a .shp cut to half its length (an interrupted copy)"),
    Case("cut_short_dbf", "files", "files/cut_dbf.shp", "cut_dbf", expect="refused", said=("cut short",),
         about="a .dbf cut to half its length"),
    Case("engineering_crs", "files", "files/site.shp", "site", expect="refused", said=("reproject",),
         about="a shapefile in a local (engineering) CRS"),
    Case("rotated_geotiff", "files", "files/rotated.tif", "rotated", kind="raster",
         about="a GeoTIFF whose geotransform is rotated 30 degrees"),
    Case("km_pixels", "files", "files/km_pixels.tif", "km_pixels", kind="raster",
         about="a raster of 1 km pixels in an equal-area CRS"),
    Case("geotiff_no_crs", "files", "files/no_crs_grid.tif", "no_crs_grid", kind="raster", expect="refused",
         said=("--crs",), about="a GeoTIFF without a CRS, run without --crs"),
    # -- a folder run with --crs (run "crs_given") -------------------------------------------------------------
    Case("no_crs_given", "crs_given", "given/parcels.gpkg", "parcels", about="a layer without a CRS, with --crs EPSG:32618"),
    Case("geotiff_no_crs_given", "crs_given", "given/grid.tif", "grid", kind="raster",
         about="a GeoTIFF without a CRS, with --crs EPSG:32618"),
    Case("grows_between_runs", "crs_given", "given/grows.gpkg", "grows",
         about="3 rows at the first run, 5 at the second (run again after `grow`): the second run rebuilds it"),
    # -- a zip whose data is two folders down (run "zip") -----------------------------------------------------
    Case("zip_nested_folder", "zip", "nested.zip", "parcels", about="a zip of export/2024/parcels/parcels.shp"),
]


def _write(frame: gpd.GeoDataFrame, path: Path, layer: str | None = None, **kw) -> None:
    pyogrio.write_dataframe(frame, path, layer=layer, append=path.exists() and path.suffix == ".gpkg", **kw)


def _frame(geoms, crs, **columns) -> gpd.GeoDataFrame:
    geoms = [shapely.from_wkt(g) if isinstance(g, str) else g for g in geoms]
    return gpd.GeoDataFrame({"name": [f"f{i + 1}" for i in range(len(geoms))], **columns}, geometry=geoms, crs=crs)


def _patch_gpkg_geometries(path: Path, layer: str, wkb: list[bytes], srs_id: int, type_name: str, z: int, m: int) -> None:
    """Replace a GeoPackage layer's geometry blobs with ISO WKB that shapely cannot hand to GDAL (curves, M), and
    declare the type: the GeoPackage binary header (GP, version 0, little-endian, no envelope, SRS id) + WKB."""
    con = sqlite3.connect(path)
    with con:
        geom_col = con.execute("SELECT column_name FROM gpkg_geometry_columns WHERE table_name=?", (layer,)).fetchone()[0]
        for (trigger,) in con.execute("SELECT name FROM sqlite_master WHERE type='trigger' AND tbl_name=?", (layer,)).fetchall():
            con.execute(f'DROP TRIGGER "{trigger}"')  # GDAL's R-tree triggers need SpatiaLite; the envelopes stay right
        fids = [r[0] for r in con.execute(f'SELECT fid FROM "{layer}" ORDER BY fid')]
        for fid, blob in zip(fids, wkb):
            header = b"GP\x00\x01" + srs_id.to_bytes(4, "little", signed=True)
            con.execute(f'UPDATE "{layer}" SET "{geom_col}"=? WHERE fid=?', (header + blob, fid))
        con.execute("UPDATE gpkg_geometry_columns SET geometry_type_name=?, z=?, m=? WHERE table_name=?",
                    (type_name, z, m, layer))
    con.close()


def _curve_circle_wkb(cx: float, cy: float, r: float) -> bytes:
    """ISO WKB of CURVEPOLYGON(CIRCULARSTRING(cx-r cy, cx+r cy, cx-r cy)): a whole circle."""
    ring = (b"\x01" + (8).to_bytes(4, "little") + (3).to_bytes(4, "little")
            + np.array([cx - r, cy, cx + r, cy, cx - r, cy], "<f8").tobytes())
    return b"\x01" + (10).to_bytes(4, "little") + (1).to_bytes(4, "little") + ring


def _geojson(path: Path, features: list[tuple[dict, str | None]]) -> None:
    """A GeoJSON written as text, so properties stay exactly as given (duplicate names, ids, offsets)."""
    def geometry(wkt):
        return None if wkt is None else shapely.geometry.mapping(shapely.from_wkt(wkt))
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": props, "geometry": geometry(wkt)} for props, wkt in features]},
        ensure_ascii=False), encoding="utf-8")


def _geotiff(path: Path, transform: Affine, crs: str | None, shape=(30, 40), dtype="int32") -> None:
    """Pixel value = row * 1000 + col, so a product's pixel says where it came from."""
    rows, cols = shape
    values = (np.arange(rows)[:, None] * 1000 + np.arange(cols)[None, :]).astype(dtype)
    with rasterio.open(path, "w", driver="GTiff", width=cols, height=rows, count=1, dtype=dtype, crs=crs,
                       transform=transform) as d:
        d.write(values[None])


def grow(folder: Path) -> None:
    """The rows appended to given/grows.gpkg between the two runs of "crs_given"."""
    _write(_frame([shapely.box(3, 40, 3.5, 40.5), shapely.box(4, 40, 4.5, 40.5)], 4326, name=["f4", "f5"]),
           Path(folder) / "given" / "grows.gpkg", layer="grows")


def build(folder: Path) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    gpkg = folder / "corpus.gpkg"
    square = shapely.box(10, 45, 10.5, 45.5)
    layers = {  # layer: frame
        "south_pole_3031": _frame([_ring(0, 0, 1_000_000)], 3031),
        "north_pole_3413": _frame([_ring(0, 0, 1_000_000)], 3413),
        "antarctica_lonlat": _frame([ANTARCTICA], 4326),
        "across_180_lonlat": _frame(["POLYGON((177 -17, -178 -17, -178 -15, 177 -15, 177 -17))",
                                     "POLYGON((179 -20, -179 -20, -179 -19, 179 -19, 179 -20))"], 4326),
        "across_180_3832": _frame([shapely.box(3_200_000, -2_000_000, 3_500_000, -1_800_000)], 3832),
        "repairs_and_nulls": _frame([BOWTIE, None, HOLE_ON_EDGE, "POLYGON EMPTY", ENCLAVE], 4326),
        "polygon_z": _frame(["POLYGON Z((10 45 100, 11 45 200, 11 46 300, 10 46 400, 10 45 100))"], 4326),
        "small_parts": _frame([*_buildings(), shapely.box(1_213_194.9, 5_721_521.5, 1_213_214.9, 5_721_541.5)], 3857),
        ODD_NAME: _frame([square], 4326),
        "only_null_geometries": _frame([None, None], 4326),
        "no_crs": _frame([shapely.box(500_000, 4_100_000, 501_000, 4_101_000)], None),
        "points": _frame(["POINT(10 45)", "POINT(-179.5 0)", None, "POINT(179.9 -89.5)", "POINT(179.99 -84.9)"], 4326),
    }
    for name, frame in layers.items():
        kind = {"points": "Point", "repairs_and_nulls": "MultiPolygon"}.get(name)
        _write(frame, gpkg, layer=name, **({"geometry_type": kind} if kind else {}))
    _write(gpd.GeoDataFrame({"name": []}, geometry=gpd.GeoSeries([], crs=4326)), gpkg, layer="empty_layer",
           geometry_type="MultiPolygon")
    # curves and M coordinates: shapely cannot hand them to GDAL, so patch the blobs GDAL will read
    _write(_frame([shapely.box(-5000, 4_000_000, 5000, 4_010_000)], 6933), gpkg, layer="curvepolygon")
    _patch_gpkg_geometries(gpkg, "curvepolygon", [_curve_circle_wkb(0, 4_005_000, 5000)], 6933, "CURVEPOLYGON", 0, 0)
    zm = shapely.from_wkt("POLYGON ZM((10 45 1 10, 11 45 2 20, 11 46 3 30, 10 46 4 40, 10 45 1 10))")
    _write(_frame([shapely.force_2d(zm)], 4326), gpkg, layer="polygon_zm")
    _patch_gpkg_geometries(gpkg, "polygon_zm", [shapely.to_wkb(zm, flavor="iso", output_dimension=4)], 4326,
                           "POLYGON", 1, 1)

    files = folder / "files"
    files.mkdir(exist_ok=True)
    from tests.conftest import FIXTURES, MIXED

    pyogrio.write_dataframe(_frame(list(MIXED.values()), 4326, name=list(MIXED)), files / "mixed.geojson", layer="mixed")
    box = shapely.box(10, 45, 10.5, 45.5).wkt
    _geojson(files / "dup_case.geojson", [({"Name": "upper N", "NAME": "all caps", "name": "lower"}, box),
                                          ({"Name": "second", "NAME": "SECOND", "name": "2nd"}, box)])
    _geojson(files / "with_id.geojson", [({"id": 7 + 5 * i, "name": f"park {i}"}, shapely.box(i, 0, i + 0.5, 1).wkt)
                                         for i in range(4)])
    _geojson(files / "datetimes.geojson", [({"name": f"f{i + 1}", "when": w}, shapely.box(i, 10, i + 0.5, 10.5).wkt)
                                           for i, w in enumerate(WHEN)])
    _write(_frame([shapely.box(i, 40, i + 0.5, 40.5) for i in range(len(LATIN))], 4326, name=LATIN), files / "latin.shp",
           encoding="latin1")
    (files / "latin.cpg").unlink(missing_ok=True)
    many = _frame([shapely.box(i * 0.01, 0, i * 0.01 + 0.005, 0.005) for i in range(200)], 4326)
    for stem, cut in (("cut_shp", ".shp"), ("cut_dbf", ".dbf")):
        _write(many, files / f"{stem}.shp")
        part = files / f"{stem}{cut}"
        part.write_bytes(part.read_bytes()[: part.stat().st_size // 2])
    _write(_frame([shapely.box(0, 0, 10, 10)], None), files / "site.shp")
    (files / "site.prj").write_text('LOCAL_CS["site grid",UNIT["metre",1],AXIS["X",EAST],AXIS["Y",NORTH]]')
    shutil.copy(FIXTURES / "line_zm.gpkg", files / "line_zm.gpkg")
    rotated = Affine.translation(500_000, 5_000_000) * Affine.rotation(30) * Affine.scale(100, -100)
    _geotiff(files / "rotated.tif", rotated, "EPSG:32633")
    _geotiff(files / "km_pixels.tif", Affine(1000, 0, 800_000, 0, -1000, 5_600_000), "EPSG:6933", dtype="float32")
    _geotiff(files / "no_crs_grid.tif", Affine(100, 0, 500_000, 0, -100, 4_100_000), None)

    given = folder / "given"
    given.mkdir(exist_ok=True)
    _write(_frame([shapely.box(500_000, 4_100_000, 501_000, 4_101_000), shapely.box(502_000, 4_100_000, 502_500, 4_100_500)],
                  None), given / "parcels.gpkg", layer="parcels")
    _geotiff(given / "grid.tif", Affine(100, 0, 500_000, 0, -100, 4_100_000), None, shape=(10, 20))

    made = folder / "made"
    made.mkdir(exist_ok=True)
    _write(_frame([shapely.box(i, 30, i + 0.5, 30.5) for i in range(3)], 4326), made / "parcels.shp")
    with zipfile.ZipFile(folder / "nested.zip", "w") as z:
        z.writestr("export/", b"")
        for p in sorted(made.glob("parcels.*")):
            z.write(p, f"export/2024/parcels/{p.name}")
    shutil.rmtree(made)

    _write(_frame([shapely.box(i, 40, i + 0.5, 40.5) for i in range(3)], 4326), given / "grows.gpkg", layer="grows")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/ugly_corpus.py OUTDIR")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    build(Path(sys.argv[1]))
    print(f"{len(CASES)} cases in {sys.argv[1]}; runs: " + "; ".join(
        f"--source {r.source} --dataset {r.dataset} {' '.join(r.args + H3)}" for r in RUNS.values()))
