"""The dataset catalog: one YAML file per dataset, validated on load."""

from __future__ import annotations

import difflib
import hashlib
import importlib
import json
import os
import re
from datetime import date, datetime, timezone
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from cng_assets.errors import CngInputError

CATALOG_DIR = Path(__file__).parent / "catalog"
DOCS = "docs/catalog.md"  # every field, what it does and its default
NAME_PATTERN = r"^[a-z][a-z0-9_]*$"  # becomes an asset-key prefix, so no hyphens


MAX_CELLS = 2_000_000_000  # default cell budget per layer (h3.max_cells): a global land layer at res 10 is ~10 G


class H3Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    resolution: int = Field(10, ge=1, le=15)  # not 0: h0 is the partition folder, finer cells are the files' rows
    parents: list[int] = Field(default_factory=lambda: [9, 8, 0])
    containment: str = Field("center", pattern="^(center|overlap)$")
    # Layer columns carried into the hex output: "all", "none", or a list of names.
    attributes: str | list[str] = "all"
    max_chunks: int = Field(200, ge=1, le=200, description="chunk partitions per layer; 200 is the cluster's cap")
    target_cells_per_chunk: int = Field(20_000_000, ge=1000, description="planned work per chunk, in output cells")
    max_cells: int = Field(MAX_CELLS, ge=1, description="budget per layer: a hex plan estimating more is refused")

    @model_validator(mode="before")
    @classmethod
    def _parents_follow_resolution(cls, data):
        """Parents not given: the two resolutions above the cell's and 0 (9, 8, 0 for the default 10), so a
        resolution alone (`--resolution 8`, `h3: {resolution: 8}`) needs nothing else."""
        if isinstance(data, dict) and data.get("parents") is None and isinstance(data.get("resolution"), int):
            r = data["resolution"]
            data = {**data, "parents": sorted({p for p in (r - 1, r - 2, 0) if 0 <= p < r}, reverse=True)}
        return data

    @model_validator(mode="after")
    def _parents_coarser(self) -> H3Settings:
        bad = [p for p in self.parents if not 0 <= p < self.resolution]
        if bad:
            raise ValueError(f"parents {bad} must be coarser than resolution {self.resolution} (0..{self.resolution - 1})")
        if len(set(self.parents)) != len(self.parents):
            raise ValueError(f"parents {self.parents} repeat a resolution")
        self.parents = sorted(self.parents, reverse=True)
        return self

    @field_validator("attributes")
    @classmethod
    def _attributes_keyword(cls, v):
        if isinstance(v, str) and v not in ("all", "none"):
            raise ValueError("attributes must be 'all', 'none' or a list of column names")
        return v


PROVIDER_ROLES = ("licensor", "producer", "processor", "host")  # STAC's


def _all_in(values, allowed, message: str):
    """`values` when each is one of `allowed`; else a ValueError: `message` with the others, and what to use."""
    if bad := sorted(set(values) - set(allowed)):
        raise ValueError(message.format(bad) + f" (use {', '.join(allowed)})")
    return values


class Provider(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    roles: list[str] = Field(default_factory=list, description="licensor, producer, processor, host")
    url: str | None = None

    @field_validator("roles")
    @classmethod
    def _stac_roles(cls, v):
        return _all_in(v, PROVIDER_ROLES, "roles {} are not STAC provider roles")


class PodSize(BaseModel):
    """A step's pod on the cluster: requests = limits, so the scheduler places it where it fits."""

    model_config = ConfigDict(extra="forbid")

    cpu: str = Field("1", pattern=r"^(\d+(\.\d+)?|\d+m)$", description="Kubernetes CPU: 1, 0.5 or 500m")
    memory_gib: int = Field(4, ge=1, le=256)
    max_memory_gib: int | None = Field(None, ge=1, le=256, description="cap for out-of-memory retries (doubling)")
    # The cluster's LimitRange allows 50 Gi per pod; a pod that writes more than it requested is evicted.
    ephemeral_gib: int = Field(4, ge=1, le=50, description="local disk (ephemeral storage) the step writes: downloads, "
                                                          "scratch and the product before upload")


# hex: consolidation writes its units on every CPU of the pod (its cgroup quota; transforms/cpus.py).
# Local disk, from what each step writes (S3 storage stages every product locally before its upload): geoparquet the
# product and its unsorted copy; pmtiles the downloaded GeoParquet, tippecanoe's temporary files and the archive;
# thumbnail and hex_plan the downloaded GeoParquet; hex the GeoParquet, every chunk and the consolidated folder
# (about the chunks' size again); cog and geozarr the raster product; table the table; the rest (source, layers,
# stac, docs: footers and headers read in place; mirror streams) a few files.
DEFAULT_PODS = {"default": PodSize(ephemeral_gib=4), "table": PodSize(ephemeral_gib=10),
                "geoparquet": PodSize(memory_gib=8, ephemeral_gib=40),
                "pmtiles": PodSize(cpu="2", memory_gib=8, ephemeral_gib=50),
                "thumbnail": PodSize(ephemeral_gib=20), "hex_plan": PodSize(ephemeral_gib=20),
                "hex_chunk": PodSize(memory_gib=8, max_memory_gib=32, ephemeral_gib=10),
                "hex": PodSize(cpu="4", memory_gib=8, ephemeral_gib=50),
                "cog": PodSize(ephemeral_gib=40), "geozarr": PodSize(ephemeral_gib=40)}


class RasterSettings(BaseModel):
    """How raster layers are published."""

    model_config = ConfigDict(extra="forbid")

    to_wgs84: bool = Field(False, description="reproject the COG to EPSG:4326 (default: keep the native CRS)")
    categorical: bool | None = Field(None, description="class codes, not measurements (default: integer bands are)")
    stats: list[str] | None = Field(None, description="per-band statistics for raster hex (default by data type)")
    # Raster hex's own: a vector layer's resolution (h3.resolution) says nothing of a raster's pixel size.
    resolution: int | None = Field(None, ge=1, le=15, description="raster hex's H3 resolution (default: from the pixel size)")
    target_pixels_per_chunk: int = Field(50_000_000, ge=1)

    @field_validator("stats")
    @classmethod
    def _known_stats(cls, v):
        from cng_assets.transforms.raster.hex import STATS

        bad = [x for x in v or [] if x not in STATS]
        if bad or (v is not None and len(set(v)) != len(v)):
            raise ValueError(f"stats {v}: each once, among {', '.join(STATS)}")
        return v


class MirrorTarget(BaseModel):
    model_config = ConfigDict(extra="forbid")

    bucket: str
    prefix: str = Field(pattern=r"^[A-Za-z0-9._-][A-Za-z0-9._/-]*$")


def check_crs(text: str) -> str:
    """`text` if PROJ knows the CRS it names, else ValueError saying what it accepts."""
    from pyproj import CRS
    from pyproj.exceptions import CRSError

    try:
        CRS.from_user_input(text)
    except CRSError:
        raise ValueError(f"{text!r} is not a CRS PROJ knows (e.g. EPSG:4269, or a WKT or PROJ string)") from None
    return text


def utc(value: str) -> datetime:
    """An ISO 8601 date or datetime as an aware UTC datetime (a date, or a time without zone, is UTC)."""
    t = datetime.fromisoformat(value)
    return t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t.astimezone(timezone.utc)


# Pod sizes, the cell budget, owners and tags: no product depends on them.
NOT_IN_PRODUCTS = {"pods": True, "h3": {"max_cells"}, "owners": True, "tags": True}
# The assets `pods:` can size (the names defs/ passes to op_tags), and "default" for the others.
POD_ASSETS = ("default", "source", "layers", "table", "geoparquet", "pmtiles", "thumbnail", "hex_plan", "hex_chunk", "hex",
              "cog", "geozarr", "stac", "docs", "mirror")
# Where a dataset's STAC datetime came from (STAC's `cng:datetime_source`).
FROM_CATALOG, FROM_CLI, FROM_SOURCE, FROM_RUN = "catalog", "cli", "source last-modified", "processing time"


class Dataset(BaseModel):
    """One catalog entry. Free text (title, description, column descriptions) is what the docs are made from."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN, description="slug; the asset-key prefix")
    title: str
    description: str = ""
    # Local path (relative paths resolve against the product storage root), /vsizip/..., https://..., s3://bucket/key
    source: str
    # "module:function" that writes the source file (for generated sources such as the demo); it becomes an asset.
    source_builder: str | None = Field(None, pattern=r"^[\w.]+:\w+$")
    bucket: str | None = Field(None, pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
    prefix: str = Field(pattern=r"^[A-Za-z0-9._-][A-Za-z0-9._/-]*$")
    include: list[str] = Field(default_factory=lambda: ["*"], description="fnmatch patterns on layer names or slugs")
    exclude: list[str] = Field(default_factory=list)
    crs: str | None = Field(None, description="CRS for layers whose source declares none")
    h3: H3Settings = Field(default_factory=H3Settings)
    license: str = "proprietary"
    citation: str | None = None
    doi: str | None = None
    columns: dict[str, str] = Field(default_factory=dict, description="column descriptions, shared by all layers")
    # When the data describe (STAC needs a datetime or a range); ISO 8601 dates or datetimes. Neither given: the
    # source's last-modified time, read when STAC is written (see with_default_datetime in defs/sources.py).
    datetime: str | None = None
    start_datetime: str | None = None
    end_datetime: str | None = None
    providers: list[Provider] = Field(default_factory=list)
    keywords: list[str] = Field(default_factory=list)
    # Shown on every asset of the dataset in the UI (and filterable there): owners as emails or `team:<name>`.
    owners: list[str] = Field(default_factory=list)
    tags: dict[str, str] = Field(default_factory=dict)
    # Where the published products are mirrored (e.g. source.coop), under another bucket and path.
    mirror: MirrorTarget | None = None
    raster: RasterSettings = Field(default_factory=RasterSettings)
    # Pod size per asset (its name, or "default") on the cluster; entries here replace the defaults above.
    pods: dict[str, PodSize] = Field(default_factory=dict)
    _datetime_source: str = PrivateAttr(FROM_CATALOG)

    @property
    def datetime_source(self) -> str | None:
        """Where the STAC time came from (FROM_*), None while it is still to be read from the source."""
        return self._datetime_source if self.datetime or self.start_datetime else None

    def dated(self, when: str, source: str) -> Dataset:
        """This entry with `datetime` = `when` (ISO 8601), which came from `source` (FROM_CLI, FROM_SOURCE, ...)."""
        utc(when)  # a bad time fails here, not in STAC
        copy = self.model_copy(update={"datetime": when})
        copy._datetime_source = source
        return copy

    def pod(self, asset: str) -> PodSize:
        sizes = {**DEFAULT_PODS, **self.pods}
        size = sizes.get(asset, sizes["default"])
        if "ephemeral_gib" not in size.model_fields_set:  # an entry sizing CPU or memory only keeps the step's disk
            size = size.model_copy(update={"ephemeral_gib": DEFAULT_PODS.get(asset, DEFAULT_PODS["default"]).ephemeral_gib})
        return size

    @field_validator("datetime", "start_datetime", "end_datetime", mode="before")
    @classmethod
    def _iso_time(cls, v):
        if isinstance(v, (date, datetime)):  # YAML reads an unquoted 2024-01-01 as a date
            v = v.isoformat()
        if isinstance(v, str):
            try:
                utc(v)
            except ValueError:
                raise ValueError(f"{v!r} is not an ISO 8601 date or datetime (write it like 2024-01-01 or "
                                 "2024-01-01T00:00:00Z)") from None
        return v

    @model_validator(mode="after")
    def _time_range(self) -> Dataset:
        if (self.start_datetime is None) != (self.end_datetime is None):
            raise ValueError("start_datetime and end_datetime go together (STAC needs both ends of a range); give both, "
                             "or a single datetime")
        if self.start_datetime and utc(self.start_datetime) > utc(self.end_datetime):
            raise ValueError(f"start_datetime {self.start_datetime} is after end_datetime {self.end_datetime}: swap them")
        return self

    @field_validator("source")
    @classmethod
    def _source_shape(cls, v):
        if not v.strip():
            raise ValueError("is empty: give a path, s3://bucket/key or https:// URL")
        if v.startswith("s3://") and not re.fullmatch(r"s3://[a-z0-9][a-z0-9.-]+/.+", v):
            raise ValueError(f"{v!r} is not s3://bucket/key")
        if re.match(r"^(s3|https?):/?[^/]", v):
            raise ValueError(f"{v!r} lacks a slash after the scheme (s3://, https://)")
        return v

    @field_validator("source_builder")
    @classmethod
    def _builder_exists(cls, v):
        if v is None:
            return v
        module, func = v.split(":")
        try:
            found = callable(getattr(importlib.import_module(module), func, None))
        except ImportError as e:
            raise ValueError(f"{v!r}: module {module} cannot be imported ({e})") from None
        if not found:
            raise ValueError(f"{v!r}: module {module} has no function {func}")
        return v

    @field_validator("pods")
    @classmethod
    def _pod_assets(cls, v):
        return _all_in(v, POD_ASSETS, "{} are not assets")

    @field_validator("doi")
    @classmethod
    def _doi_shape(cls, v):
        if v is not None and not re.match(r"^10\.\d{4,9}/\S+$", v):
            raise ValueError(f"{v!r} is not a DOI (expected 10.NNNN/suffix, without https://doi.org/)")
        return v

    @field_validator("crs")
    @classmethod
    def _crs_known(cls, v):
        return v if v is None else check_crs(v)

    @field_validator("owners")
    @classmethod
    def _owners_shape(cls, v):
        bad = [o for o in v if not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+|team:[A-Za-z0-9_-]+", o)]
        if bad:
            raise ValueError(f"owners {bad} must be emails or team:<name>")
        return v

    @field_validator("tags")
    @classmethod
    def _tags_shape(cls, v):
        bad = [k for k, x in v.items() if not re.fullmatch(r"[A-Za-z0-9_.-]{1,63}", k) or not re.fullmatch(r"[A-Za-z0-9_.-]{0,63}", x)]
        if bad:
            raise ValueError(f"tags {bad}: keys and values are letters, digits, '_', '-', '.' (at most 63)")
        return v

    @field_validator("prefix")
    @classmethod
    def _prefix_clean(cls, v):
        return v.strip("/")

    def code_version(self, code: str, *fields: str) -> str:
        """An asset's code version: its transform's VERSION plus a digest of the catalog fields it reads (all of
        them when none are named, but never NOT_IN_PRODUCTS, which change no product), so editing the
        catalog makes exactly the products it changes stale. A field is a top-level name (`source`) or one
        setting of a group (`h3.resolution`): consolidation reads `h3.attributes`, the chunks do not."""
        include: dict = {}
        for f in fields:
            top, _, sub = f.partition(".")
            known = top in type(self).model_fields and (not sub or sub in getattr(type(getattr(self, top)), "model_fields", {}))
            if not known:
                raise ValueError(f"{f!r} is not a catalog field")  # a typo would hash nothing and stale nothing
            if not sub:
                include[top] = True
            elif include.get(top) is not True:
                include.setdefault(top, {})[sub] = True
        data = self.model_dump(mode="json", include=include or None, exclude=NOT_IN_PRODUCTS)
        return f"{code}+{hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:8]}"


def _problem(err: dict) -> str:
    loc = ".".join(map(str, err["loc"]))
    if err["type"] == "missing":
        return f"{loc}: required, and missing"
    if err["type"] == "extra_forbidden":
        close = difflib.get_close_matches(str(err["loc"][-1]), Dataset.model_fields, n=1) if len(err["loc"]) == 1 else []
        return f"{loc}: not a catalog field" + (f" (did you mean {close[0]}?)" if close else "")
    return f"{loc or '(entry)'}: {err['msg'].removeprefix('Value error, ')}"


def validation_problems(e: ValidationError) -> str:
    """Each invalid field and why, on one line."""
    return "; ".join(map(_problem, e.errors()))


def load_dataset_file(path: Path) -> Dataset:
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise CngInputError(f"catalog file {path} is not valid YAML: {e}", hint="fix the YAML syntax") from None
    if not isinstance(raw, dict):
        raise CngInputError(f"catalog file {path} must hold a mapping of fields",
                            hint=f"see cng_assets/catalog/demo.yaml and {DOCS}")
    try:
        ds = Dataset.model_validate(raw)
    except ValidationError as e:
        name = raw.get("name") if isinstance(raw.get("name"), str) else path.stem
        raise CngInputError(f"catalog file {path} is invalid: {validation_problems(e)}", dataset=name,
                            hint=f"fix those fields in {path.name} ({DOCS} describes each)") from None
    if path.stem.replace("-", "_") != ds.name:
        raise CngInputError(f"catalog file {path.name} holds dataset {ds.name!r}",
                            hint=f"name the file {ds.name}.yaml (or {ds.name.replace('_', '-')}.yaml)")
    return ds


def load_catalog(directory: Path | None = None) -> dict[str, Dataset]:
    """Every dataset of the catalog folder: `directory`, else `CNG_CATALOG_DIR`, else the package's own."""
    directory = directory or Path(os.environ.get("CNG_CATALOG_DIR") or CATALOG_DIR)
    datasets: dict[str, Dataset] = {}
    for path in sorted(Path(directory).glob("*.yaml")):
        ds = load_dataset_file(path)
        if ds.name in datasets:
            raise CngInputError(f"dataset {ds.name!r} is defined twice in {directory}", hint="keep one file per dataset")
        datasets[ds.name] = ds
    return datasets
