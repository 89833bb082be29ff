"""Turn a catalog `source` into something GDAL opens, and say clearly why it cannot be opened."""

from __future__ import annotations

import warnings
import zipfile
from pathlib import Path

import pyogrio
from pyogrio.errors import DataSourceError

from cng_assets.errors import CngInputError

REMOTE_PREFIXES = ("s3://", "https://", "http://", "/vsi")


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
        if bad is not None:
            raise CngInputError(f"source {str(path)!r} has a corrupt member {bad!r}",
                                hint="re-download or re-upload the archive")
    return str(path)


def list_layers(path: str) -> list[tuple[str, str | None]]:
    """(layer name, geometry type or None) for every layer; unreadable sources raise CngInputError."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "Measured (M) geometry types are not supported"
            return [(str(n), None if g is None else str(g)) for n, g in pyogrio.list_layers(path)]
    except DataSourceError as e:
        raise CngInputError(f"GDAL cannot open source {path!r}: {e}",
                            hint="check that it is a vector format GDAL reads (FileGDB, GeoPackage, shapefile, ...)") from None


def read_info(path: str, layer: str) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return pyogrio.read_info(path, layer=layer, force_feature_count=True)


def remote_version(source: str) -> str | None:
    """ETag (or Last-Modified) of an http(s) source from a HEAD request; None when it has neither."""
    if not source.startswith(("https://", "http://")):
        return None
    import urllib.request

    with urllib.request.urlopen(urllib.request.Request(source, method="HEAD"), timeout=30) as r:
        return r.headers.get("ETag", "").strip('"') or r.headers.get("Last-Modified")
