"""Folder sources: a folder of files GDAL reads (shapefiles, GeoJSON, GeoPackages, GeoTIFFs, ...) is one
multi-layer source, each file's layers its layers. Only a `.gdb` folder is one FileGDB (see gdb.py).

A file with its sidecars (a shapefile's .dbf/.shx/.prj, a GeoTIFF's .aux.xml) is one unit: its layers' data
version is a digest over those files, so replacing one file changes only its own layers."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path, PurePosixPath

# Read by GDAL beside the main file, never opened on their own.
SIDECARS = {".dbf", ".shx", ".prj", ".cpg", ".qix", ".sbn", ".sbx", ".fix", ".xml", ".ovr", ".aux", ".tfw", ".msk",
            ".qmd", ".qml", ".sld", ".lock"}
# Not data, or not complete yet (a browser's or rsync's partial download).
IGNORED = {".md", ".txt", ".pdf", ".html", ".part", ".tmp", ".crdownload", ".partial"}


def is_filegdb(source: str) -> bool:
    return source.rstrip("/").lower().endswith(".gdb")


def may_be_folder(source: str) -> bool:
    """Worth listing as a folder: not a FileGDB or URL, and named like a folder (no extension, or a trailing /)."""
    return (not is_filegdb(source) and not source.startswith(("https://", "http://", "/vsi"))
            and (source.endswith("/") or not PurePosixPath(source).suffix))


def is_folder(source: str, files: dict[str, str]) -> bool:
    """A folder of separate files (not a single file, not a FileGDB)."""
    return set(files) != {""} and bool(files) and not is_filegdb(source)


def file_version(st: os.stat_result) -> str:
    """A local file's version, its size and modification time: what local storage gives as an object's ETag."""
    return f"{st.st_size}-{st.st_mtime_ns}"


def local_files(path: str) -> dict[str, str]:
    """A local folder's files, relative to it, each with its version."""
    root = Path(path)
    return {p.relative_to(root).as_posix(): file_version(p.stat()) for p in sorted(root.rglob("*")) if p.is_file()}


def local_modified(path: Path) -> float | None:
    """The newest modification time (epoch seconds) of a local file, or of the files in a folder; None if none."""
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else []
    return max((p.stat().st_mtime for p in files), default=None)


def _stem(rel: str) -> str:
    """The path without its extensions: `a/roads.shp` and `a/roads.shp.xml` share `a/roads`."""
    p = PurePosixPath(rel)
    return str(p.parent / p.name.split(".", 1)[0])


def _suffix(rel: str) -> str:
    name = PurePosixPath(rel).name.lower()
    return "." + name.rsplit(".", 1)[-1] if "." in name else ""


def _hidden(rel: str) -> bool:
    return any(part.startswith((".", "_")) or part == "__MACOSX" for part in PurePosixPath(rel).parts)


def units(files: dict[str, str]) -> dict[str, str]:
    """Each file GDAL is to open (relative to the folder) -> a data version over it and its sidecars. A `.gdb`
    inside the folder is one unit."""
    members: dict[str, list[str]] = {}
    for rel, etag in files.items():
        parts = PurePosixPath(rel).parts
        gdb = next((i for i, p in enumerate(parts) if p.lower().endswith(".gdb")), None)
        if gdb is not None:
            members.setdefault("/".join(parts[:gdb + 1]), []).append(f"{rel}\t{etag}")
        elif not _hidden(rel) and _suffix(rel) not in SIDECARS | IGNORED:
            members.setdefault(rel, []).append(f"{rel}\t{etag}")
    stems = {_stem(unit) for unit in members}
    by_stem: dict[str, list[str]] = {}
    for rel, etag in files.items():
        if _suffix(rel) in SIDECARS and not _hidden(rel):
            by_stem.setdefault(_stem(rel), []).append(f"{rel}\t{etag}")
            if _suffix(rel) == ".dbf" and _stem(rel) not in stems:  # no shapefile beside it: a dBase table
                members[rel] = []
    return {unit: "sha256:" + hashlib.sha256("\n".join(sorted(lines + by_stem.get(_stem(unit), []))).encode())
            .hexdigest()[:32] for unit, lines in sorted(members.items())}
