"""FileGDB coded-value domains (lookup tables hidden in GDB_Items), read through GDAL's OpenFileGDB driver."""

from __future__ import annotations

import warnings
import xml.etree.ElementTree as ET
from dataclasses import dataclass

import pyarrow as pa
import pyogrio
from pyogrio.errors import DataLayerError, DataSourceError

from cng_assets.transforms.slugs import unique_slugs

CODED_VALUE_DOMAIN = "{8C368B12-A12E-4C7E-9638-C9C64E69E98F}"
DATASET_TYPES = {"{70737809-852C-4A03-9E22-2CECEA5B9BFA}", "{CD06BC3B-789D-4C51-AAFA-A467912B8965}"}  # feature class, table


@dataclass
class Domain:
    name: str
    slug: str
    description: str
    field_type: str  # esriFieldType*
    codes: list[tuple[str, str]]  # (code, label); codes kept as text, their type is field_type


def read_filegdb_domains(path: str, layer_names: list[str]) -> tuple[list[Domain], dict[str, dict[str, str]]]:
    """Coded-value domains, and for each layer the fields that use one. Empty for sources that are not FileGDB."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if pyogrio.read_info(path, layer=layer_names[0])["driver"] != "OpenFileGDB":
                return [], {}
            items = pyogrio.read_dataframe(path, layer="GDB_Items", read_geometry=False,
                                           columns=["Type", "Name", "Definition"])
    except (DataLayerError, DataSourceError, IndexError, KeyError):
        return [], {}
    domains, used = [], {}
    for row in items.itertuples():
        if not isinstance(row.Definition, str):
            continue
        if row.Type == CODED_VALUE_DOMAIN:
            root = ET.fromstring(row.Definition)
            codes = [(cv.findtext("Code", ""), cv.findtext("Name", "")) for cv in root.iter("CodedValue")]
            domains.append(Domain(name=row.Name, slug="", description=root.findtext("Description", ""),
                                  field_type=root.findtext("FieldType", ""), codes=codes))
        elif row.Type in DATASET_TYPES and row.Name in layer_names:
            root = ET.fromstring(row.Definition)
            fields = {f.findtext("Name"): f.findtext("DomainName") for f in root.iter("GPFieldInfoEx")}
            used[row.Name] = {k: v for k, v in fields.items() if k and v}
    domains.sort(key=lambda d: d.name.lower())
    for d, slug in zip(domains, unique_slugs([d.name for d in domains])):
        d.slug = slug
    return domains, used


def domain_table(domain: Domain) -> pa.Table:
    return pa.table({"code": [c for c, _ in domain.codes], "label": [n for _, n in domain.codes]},
                    metadata={"domain": domain.name, "description": domain.description, "field_type": domain.field_type})
