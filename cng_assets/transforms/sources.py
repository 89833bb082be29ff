"""Turn a catalog `source` into something GDAL opens, and say clearly why it cannot be opened."""

from __future__ import annotations

import warnings
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

import pyogrio
from pyogrio.errors import DataSourceError
from pyogrio.raw import open_arrow

from cng_assets.errors import CngInputError
from cng_assets.transforms.folders import SIDECARS

REMOTE_PREFIXES = ("s3://", "https://", "http://", "/vsi")

# GDAL open options a user would otherwise have to know, by file type. OpenStreetMap (.osm XML, .osm.pbf; GDAL's OSM
# driver): node ids that do not increase (files edited by hand or by JOSM, pyogrio's own sample) stop the default
# custom indexing with "Non increasing node id", so the SQLite index is used, which takes any order; `other_tags`
# as JSON, which DuckDB and pandas parse, rather than PostgreSQL's hstore text. Interleaved reading is not needed:
# pyogrio reads one layer at a time (`SET interest_layers`), so the other layers' features are not kept waiting.
OSM_OPTIONS = {"USE_CUSTOM_INDEXING": "NO", "TAGS_FORMAT": "JSON"}
# CSV: longitude and latitude columns become point geometry (their columns are kept), as a WKT column does already.
CSV_OPTIONS = {"X_POSSIBLE_NAMES": "longitude,lon,lng,long", "Y_POSSIBLE_NAMES": "latitude,lat",
               "KEEP_GEOM_COLUMNS": "YES"}


def open_options(path: str) -> dict[str, str]:
    """The GDAL open options every reader of `path` passes (pyogrio takes them as keyword arguments)."""
    name = path.lower().rstrip("/")
    if name.endswith((".osm", ".pbf")):
        return dict(OSM_OPTIONS)
    if name.endswith(".csv"):
        return dict(CSV_OPTIONS)
    return {}


def gdal_path(source: str, base_dir: str | Path | None = None) -> str:
    """GDAL-readable path for `source`; local paths are checked here so the error names the file."""
    if source.startswith("s3://"):
        return "/vsis3/" + source.removeprefix("s3://")
    if source.startswith(("https://", "http://")):
        return "/vsicurl/" + source
    if source.startswith("/vsi"):
        return source
    path = Path(source).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = Path(base_dir) / path
    if not path.exists():
        raise CngInputError(f"source {str(path)!r} does not exist",
                            hint="check the `source` path (relative paths resolve against the product storage root)")
    if path.suffix.lower() == ".zip":
        if not zipfile.is_zipfile(path):
            raise CngInputError(f"source {str(path)!r} is not a readable zip archive (corrupt or truncated)",
                                hint="re-download or re-upload the archive")
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
            inner = _data_folder(z.namelist())
        if bad is not None:
            raise CngInputError(f"source {str(path)!r} has a corrupt member {bad!r}",
                                hint="re-download or re-upload the archive")
        if inner:  # GDAL looks only at the top of an archive: open the folder that holds the data
            return f"/vsizip/{path}/{inner}"
    return str(path)


def _data_folder(names: list[str]) -> str:
    """The folder inside a zip that holds every member, as zipping a folder makes it ('' when the data are at the
    top): down to a `.gdb` folder, which GDAL opens whole. macOS's `__MACOSX/` and hidden files do not count."""
    parts = [n.split("/") for n in names  # files only: a folder's own entry ends with '/'
             if not n.endswith("/") and not n.startswith("__MACOSX/") and not n.rsplit("/", 1)[-1].startswith(".")]
    folder: list[str] = []
    while parts and all(len(p) > len(folder) + 1 and p[len(folder)] == parts[0][len(folder)] for p in parts):
        folder.append(parts[0][len(folder)])
        if folder[-1].lower().endswith(".gdb"):
            break
    if folder and folder[-1].lower().endswith(".gdb") and len(folder) == 1:
        return ""  # a .gdb at the top: GDAL's OpenFileGDB reads `x.gdb.zip` as it is
    data = {p[-1] for p in parts if len(p) == len(folder) + 1 and PurePosixPath(p[-1]).suffix.lower() not in SIDECARS}
    if folder and len(data) == 1 and len(parts) == sum(len(p) == len(folder) + 1 for p in parts):
        return "/".join([*folder, *data])  # one file (with its sidecars): GDAL opens a folder only of shapefiles
    return "/".join(folder)


def list_layers(path: str) -> list[tuple[str, str | None]]:
    """(layer name, geometry type or None) for every layer; unreadable sources raise CngInputError."""
    with warnings.catch_warnings(record=True) as seen:  # GDAL's warnings go into the message, not the terminal
        warnings.simplefilter("always")
        try:
            return [(str(n), None if g is None else str(g)) for n, g in pyogrio.list_layers(path)]
        except DataSourceError as e:
            said = [str(w.message) for w in seen if "Measured (M) geometry" not in str(w.message)]
            raise open_error(path, "; ".join([str(e), *said])) from None


def open_error(path: str, gdal_says: str) -> CngInputError:
    """Why GDAL could not open `path`, from what GDAL said (each distinct message once), and what to do."""
    said = "; ".join(dict.fromkeys(m.strip().rstrip(".") for m in gdal_says.split(";") if m.strip(" .")))
    if path.startswith("/vsis3/") and ("credentials" in said.lower() or "Malformed input to a URL" in said):
        return CngInputError(
            f"cannot read s3://{path.removeprefix('/vsis3/')}: no S3 credentials or endpoint ({said})",
            hint="set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (on the cluster they come from the S3 Secret) and "
                 "AWS_S3_ENDPOINT (outside Nautilus: s3-west.nrp-nautilus.io); for a public bucket AWS_NO_SIGN_REQUEST=YES")
    if path.startswith(("/vsicurl/", "/vsis3/")) and ("CURL error" in said or "HTTP response code" in said):
        url = path.removeprefix("/vsicurl/")
        return CngInputError(f"cannot reach {url}: {said}",
                             hint="check the URL, and that this machine reaches it (network, proxy, firewall)")
    return CngInputError(f"GDAL cannot open source {path!r}: {said}",
                         hint="check that it is a complete file in a vector format GDAL reads "
                              "(FileGDB, GeoPackage, shapefile, GeoJSON, ...)")


def read_info(path: str, layer: str) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return pyogrio.read_info(path, layer=layer, force_feature_count=True, **open_options(path))


@contextmanager
def open_records(path: str, layer: str, info: dict | None = None, **arrow_options) -> Iterator[tuple]:
    """pyogrio's Arrow stream of a source layer, `(meta, reader)`, as every product reads it: refused when its files
    are cut short (check_complete), its text recoded to UTF-8 from the encoding GDAL found (arrow_encoding).
    `info` is the layer's pyogrio.read_info, read here when not given."""
    info = info if info is not None else pyogrio.read_info(path, layer=layer, **open_options(path))
    check_complete(path, layer, info)
    with open_arrow(path, layer=layer, use_pyarrow=True, encoding=arrow_encoding(info), **open_options(path),
                    **arrow_options) as opened:
        yield opened


def check_complete(path: str, layer: str, info: dict) -> None:
    """Refuse a local shapefile or dBase table shorter than its own headers say (an interrupted copy): GDAL reads
    the missing records as null geometries and empty rows, without a word."""
    if info.get("driver") != "ESRI Shapefile" or path.startswith("/vsi"):
        return
    base = Path(path)
    base = base.with_suffix("") if base.suffix.lower() in (".shp", ".dbf") else base / layer
    short = []
    for suffix, declared in ((".shp", _shp_bytes), (".dbf", _dbf_bytes)):
        part = next((p for p in (base.with_suffix(suffix), base.with_suffix(suffix.upper())) if p.is_file()), None)
        if part is not None and (need := declared(part)) > (size := part.stat().st_size):
            short.append(f"{part.name} is {size:,} bytes where its header says {need:,}")
    if short:
        raise CngInputError(f"the file is cut short: {'; '.join(short)}", layer=layer,
                            hint="copy or download it again (an interrupted copy leaves out the end of the file)")


def _shp_bytes(path: Path) -> int:
    with open(path, "rb") as f:
        head = f.read(28)
    return int.from_bytes(head[24:28], "big") * 2 if len(head) == 28 else 0  # the file length, in 16-bit words


def _dbf_bytes(path: Path) -> int:
    with open(path, "rb") as f:
        head = f.read(12)
    if len(head) < 12:
        return 0
    records, header, record = (int.from_bytes(head[4:8], "little"), int.from_bytes(head[8:10], "little"),
                               int.from_bytes(head[10:12], "little"))
    return header + records * record


def arrow_encoding(info: dict) -> str | None:
    """The text encoding to name to pyogrio's Arrow reader, which recodes to UTF-8 only when told: the one GDAL
    found (a shapefile's .cpg, its .dbf's code page, or dBase's default ISO-8859-1) when it is not UTF-8 already.
    Unnamed, such text reaches Parquet as bytes that pyarrow and DuckDB refuse."""
    found = info.get("encoding") or ""
    return None if found.upper().replace("_", "-") in ("", "UTF-8", "UTF8") else found


def remote_version(source: str) -> str | None:
    """ETag (or Last-Modified) of an http(s) source from a HEAD request; None when it has neither."""
    if not source.startswith(("https://", "http://")):
        return None
    import urllib.request

    with urllib.request.urlopen(urllib.request.Request(source, method="HEAD"), timeout=30) as r:
        return r.headers.get("ETag", "").strip('"') or r.headers.get("Last-Modified")
