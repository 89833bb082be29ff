"""The dataset catalog: one YAML file per dataset, validated on load."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cng_assets.errors import CngInputError

CATALOG_DIR = Path(__file__).parent / "catalog"
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


class Provider(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    roles: list[str] = Field(default_factory=list, description="licensor, producer, processor, host")
    url: str | None = None


class PodSize(BaseModel):
    """A step's pod on the cluster: requests = limits, so the scheduler places it where it fits."""

    model_config = ConfigDict(extra="forbid")

    cpu: str = "1"
    memory_gib: int = Field(4, ge=1, le=256)
    max_memory_gib: int | None = Field(None, ge=1, le=256, description="cap for out-of-memory retries (doubling)")


# hex: consolidation writes its units on every CPU of the pod (its cgroup quota; transforms/cpus.py)
DEFAULT_PODS = {"default": PodSize(), "geoparquet": PodSize(memory_gib=8), "pmtiles": PodSize(cpu="2", memory_gib=8),
                "hex_chunk": PodSize(memory_gib=8, max_memory_gib=32), "hex": PodSize(cpu="4", memory_gib=8)}


class RasterSettings(BaseModel):
    """How raster layers are published."""

    model_config = ConfigDict(extra="forbid")

    to_wgs84: bool = Field(False, description="reproject the COG to EPSG:4326 (default: keep the native CRS)")
    categorical: bool | None = Field(None, description="class codes, not measurements (default: integer bands are)")
    stats: list[str] | None = Field(None, description="per-band statistics for raster hex (default by data type)")
    target_pixels_per_chunk: int = Field(50_000_000, ge=1)


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


# Pod sizes, the cell budget, owners and tags: no product depends on them.
NOT_IN_PRODUCTS = {"pods": True, "h3": {"max_cells"}, "owners": True, "tags": True}


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
    bucket: str | None = None
    prefix: str = Field(pattern=r"^[A-Za-z0-9._-][A-Za-z0-9._/-]*$")
    include: list[str] = Field(default_factory=lambda: ["*"], description="fnmatch patterns on layer names or slugs")
    exclude: list[str] = Field(default_factory=list)
    crs: str | None = Field(None, description="CRS for layers whose source declares none")
    h3: H3Settings = Field(default_factory=H3Settings)
    license: str = "proprietary"
    citation: str | None = None
    doi: str | None = None
    columns: dict[str, str] = Field(default_factory=dict, description="column descriptions, shared by all layers")
    # When the data describe (STAC needs a datetime or a range); ISO 8601 dates or datetimes.
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

    def pod(self, asset: str) -> PodSize:
        sizes = {**DEFAULT_PODS, **self.pods}
        return sizes.get(asset, sizes["default"])

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
        catalog makes exactly the products it changes stale."""
        data = self.model_dump(mode="json", include=set(fields) or None, exclude=NOT_IN_PRODUCTS)
        return f"{code}+{hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:8]}"


def validation_problems(e: ValidationError) -> str:
    """Each invalid field and why, on one line."""
    return "; ".join(f"{'.'.join(map(str, err['loc'])) or '(top)'}: {err['msg'].removeprefix('Value error, ')}" for err in e.errors())


def load_dataset_file(path: Path) -> Dataset:
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise CngInputError(f"catalog file {path} is not valid YAML: {e}", hint="fix the YAML syntax") from None
    if not isinstance(raw, dict):
        raise CngInputError(f"catalog file {path} must hold a mapping of fields", hint="see cng_assets/catalog/demo.yaml")
    try:
        ds = Dataset.model_validate(raw)
    except ValidationError as e:
        raise CngInputError(f"catalog file {path} is invalid: {validation_problems(e)}", hint="fix those fields") from None
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
