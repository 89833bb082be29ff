"""Layer discovery: every layer of a source with its kind, count, CRS and fields, under a stable slug."""

from __future__ import annotations

import difflib
import fnmatch
import os
import warnings
from collections import Counter
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa
from pyogrio.raw import open_arrow

from cng_assets.errors import CngInputError
from cng_assets.transforms import folders, sources
from cng_assets.transforms.domains import Domain, read_filegdb_domains
from cng_assets.transforms.geometry import WKB_COLLECTION, WKB_FAMILIES, families, parse_wkb, wkb_type_ids
from cng_assets.transforms.raster.info import list_rasters
from cng_assets.transforms.slugs import unique_slugs

POLYGON, OTHER, TABLE, RASTER = "polygon", "other", "table", "raster"
VERSION = "4"  # bump when discovery output changes
DOMAIN_KEY_PREFIX = "domain-"  # slugify never makes a hyphen, so domain keys cannot clash with layer slugs


@dataclass
class Layer:
    name: str  # as in the source
    slug: str  # partition key and file name
    kind: str  # polygon | other | table | raster
    geometry_type: str | None
    features: int  # rows, or pixels for a raster
    crs: str | None
    fields: list[tuple[str, str]]  # (name, OGR type); a raster's bands as (b1, dtype), ...
    domains: dict[str, str] = field(default_factory=dict)  # field -> coded-value domain name
    raster: dict | None = None  # a raster's GDAL path, size, bands, dtype, nodata
    file: str | None = None  # in a folder source: the file it is in, relative to the folder
    # Features per geometry family found in the data, when the header declares no one type (Unknown,
    # GeometryCollection): "polygon", "line", "point", and e.g. "line+polygon" for collections of several.
    geometry_families: dict[str, int] | None = None

    @property
    def what(self) -> str:
        """What a person calls the layer: polygon, line, point, table or raster (lines and points are both
        `other` to the products), or geometry when neither its header nor its data say which."""
        if self.kind != OTHER:
            return self.kind
        found = max(self.geometry_families or {}, key=lambda f: self.geometry_families[f], default="")
        text = (found or self.geometry_type or "").lower()
        return "line" if "line" in text else "point" if "point" in text else "geometry"

    @property
    def geometry_label(self) -> str:
        found = ", ".join(f"{n} {f}" for f, n in (self.geometry_families or {}).items())
        return f"{self.geometry_type or ''} ({found})" if found else self.geometry_type or ""


@dataclass
class Inventory:
    layers: list[Layer]
    domains: list[Domain]
    skipped: list[str]  # layer names left out by include/exclude
    unread: dict[str, str] = field(default_factory=dict)  # in a folder source: files GDAL cannot read -> why

    def to_json(self) -> dict:
        return {"layers": [asdict(x) for x in self.layers], "domains": [asdict(d) for d in self.domains],
                "skipped": self.skipped, "unread": self.unread}

    @classmethod
    def from_json(cls, data: dict) -> Inventory:
        layers = [Layer(**{**x, "fields": [tuple(f) for f in x["fields"]]}) for x in data["layers"]]
        domains = [Domain(**{**d, "codes": [tuple(c) for c in d["codes"]]}) for d in data["domains"]]
        return cls(layers=layers, domains=domains, skipped=data["skipped"], unread=data.get("unread", {}))

    def layer(self, slug: str) -> Layer:
        for x in self.layers:
            if x.slug == slug:
                return x
        close = difflib.get_close_matches(slug, [x.slug for x in self.layers], n=3)
        raise CngInputError(f"no layer {slug!r} in this source",
                            hint=f"did you mean {', '.join(close)}?" if close else
                            f"known layers: {', '.join(x.slug for x in self.layers)}")

    def domain(self, key: str) -> Domain:
        for d in self.domains:
            if DOMAIN_KEY_PREFIX + d.slug == key:
                return d
        raise CngInputError(f"no coded-value domain {key!r} in this source", hint="re-run layer discovery")

    def keys(self, *kinds: str) -> list[str]:
        return [x.slug for x in self.layers if x.kind in kinds]

    def table_keys(self) -> list[str]:
        return self.keys(TABLE) + [DOMAIN_KEY_PREFIX + d.slug for d in self.domains]


def classify(geometry_type: str | None, found: dict[str, int] | None = None) -> str:
    """A layer's kind, which decides its products. A header of no one type (`found` is given) is decided by the
    data: any polygon makes a polygon layer, whose points and lines are dropped and counted."""
    if geometry_type is None:
        return TABLE
    if found is not None:
        return POLYGON if any("polygon" in f for f in found) else OTHER
    return POLYGON if ("Polygon" in geometry_type or "Surface" in geometry_type) else OTHER


def undeclared(geometry_type: str | None) -> bool:
    """A header that does not say which geometries the layer holds (GDAL's names, with or without Z/M)."""
    return bool(geometry_type) and geometry_type.split()[0] in ("Unknown", "GeometryCollection", "Geometry")


def families_present(path: str, layer: str) -> dict[str, int]:
    """Features per geometry family, from each feature's WKB header; geometry collections are parsed and
    counted as their one family, or as e.g. "line+polygon" when they mix families."""
    found: Counter = Counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "Measured (M) geometry types are not supported"
        with open_arrow(path, layer=layer, columns=[], batch_size=65_536, use_pyarrow=True,
                        **sources.open_options(path)) as (meta, reader):
            for batch in reader:
                wkb = batch.column(meta["geometry_name"] or "wkb_geometry")
                ids = wkb_type_ids(wkb)
                found.update({f: int(np.isin(ids, list(t)).sum()) for f, t in WKB_FAMILIES.items()})
                in_collections = wkb.filter(pa.array(ids == WKB_COLLECTION)).to_numpy(zero_copy_only=False)
                try:
                    collections, _ = parse_wkb(in_collections)
                except CngInputError:  # collections of 3D surfaces: polygonal, refused with its reason when converted
                    found["polygon"] += len(in_collections)
                    continue
                found.update("+".join(sorted(f)) for f in map(families, collections) if f)
    return {f: n for f, n in found.items() if n}


def _matches(name: str, slug: str, pattern: str) -> bool:
    p = pattern.lower()
    return fnmatch.fnmatch(name.lower(), p) or fnmatch.fnmatch(slug, p)


def _listing(path: str, gdal_options: dict | None) -> list[tuple[str, str | None, object]]:
    """(name, declared geometry type, RasterInfo or None) of every vector and raster layer of one source."""
    rasters = list_rasters(path, gdal_options)
    try:
        listed = sources.list_layers(path)
    except CngInputError:
        if not rasters:  # neither vector nor raster: the vector reader's message says why
            raise
        listed = []
    return [(n, g, None) for n, g in listed] + [(r.name, None, r) for r in rasters]


def _member(path: str, file: str | None) -> str:
    return f"{path.rstrip('/')}/{file}" if file else path


def layer_path(path: str, layer: Layer) -> str:
    """What GDAL opens for this layer: the source, or in a folder source the layer's file."""
    return _member(path, layer.file)


def open_source(path: str, include: list[str] | tuple = ("*",), gdal_options: dict | None = None,
                files: dict[str, str] | None = None) -> tuple[list[tuple], list[str], dict[str, str]]:
    """Open a source and list its layers, without reading them: (name, declared type, RasterInfo or None, file)
    of each, their slugs, and a folder's unread files. Fails, saying why, when nothing can be read or an include
    pattern without wildcards names no layer (a typo must not silently drop a layer)."""
    listed, unread = [], {}
    if files is None and os.path.isdir(path) and not folders.is_filegdb(path):
        files = folders.local_files(path)
    if files is not None and folders.is_folder(path, files):
        for unit in folders.units(files):
            try:
                listed += [(*x, unit) for x in _listing(_member(path, unit), gdal_options)]
            except CngInputError as e:
                unread[unit] = e.problem
        if not listed:
            raise CngInputError(f"no file in folder {path!r} holds a layer GDAL reads"
                                + (f" (not read: {', '.join(unread)})" if unread else ""),
                                hint="put shapefiles, GeoJSON, GeoPackages, GeoTIFFs or other GDAL formats in it")
    else:
        listed = [(*x, None) for x in _listing(path, gdal_options)]
    names = [n for n, _, _, _ in listed]
    slugs = unique_slugs(names)
    for pattern in include:
        if not any(c in pattern for c in "*?[") and not any(_matches(n, s, pattern) for n, s in zip(names, slugs)):
            close = difflib.get_close_matches(pattern, names + slugs, n=3)
            raise CngInputError(f"source has no layer {pattern!r}",
                                hint=f"did you mean {', '.join(close)}?" if close else f"its layers are {', '.join(names)}")
    return listed, slugs, unread


def discover(path: str, include: list[str] | tuple = ("*",), exclude: list[str] | tuple = (),
             gdal_options: dict | None = None, files: dict[str, str] | None = None) -> Inventory:
    """Read every layer's facts from `path` (a GDAL path), keeping those `include` selects and `exclude` does not.
    `files` (relative path -> ETag) makes a folder of files one source (folders.py); files GDAL cannot read are
    listed in `unread`, not fatal, so one stray file does not hold back the rest.

    Coded-value domains are all kept when every layer is selected, else only those the selected layers use.
    """
    listed, slugs, unread = open_source(path, include, gdal_options, files)
    vector_names = [n for n, _, r, f in listed if r is None and f is None]
    domains, field_domains = read_filegdb_domains(path, vector_names) if vector_names else ([], {})
    layers, skipped = [], []
    for (name, gtype, r, file), slug in zip(listed, slugs):
        if not any(_matches(name, slug, p) for p in include) or any(_matches(name, slug, p) for p in exclude):
            skipped.append(name)
            continue
        if r is not None:
            layers.append(Layer(name=name, slug=slug, kind=RASTER, geometry_type=None, features=r.width * r.height,
                                crs=r.crs, fields=[(f"b{i + 1}", r.dtype) for i in range(r.bands)], raster=r.to_json(),
                                file=file))
            continue
        where = _member(path, file)
        info = sources.read_info(where, name)
        gtype = info["geometry_type"] or gtype
        found = families_present(where, name) if undeclared(gtype) else None
        layers.append(Layer(
            name=name, slug=slug, kind=classify(gtype, found), geometry_type=gtype, features=int(info["features"]),
            crs=info["crs"], fields=[(str(f), str(t)) for f, t in zip(info["fields"], info["ogr_types"])],
            domains=field_domains.get(name, {}), file=file, geometry_families=found,
        ))
    if skipped:
        used = {d for x in layers for d in x.domains.values()}
        domains = [d for d in domains if d.name in used]
    return Inventory(layers=layers, domains=domains, skipped=skipped, unread=unread)
