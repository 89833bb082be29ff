"""Offline STAC validation against the schema mirror in shared/stac-schemas/ (folders named by host: a schema's URL
without its scheme). Every `$ref` and `$schema` URL resolves to a file there, never to the network; an unknown URL
raises `UnknownSchemaError`. Each object is validated against the core schema for its type and version AND every
schema in its `stac_extensions`.

Also a pystac `STACValidator`, so in-memory objects can be checked with `obj.validate(validator=...)`.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import jsonschema
import referencing
import referencing.exceptions
from pystac.errors import STACValidationError
from pystac.stac_object import STACObjectType
from pystac.validation.stac_validator import STACValidator
from referencing.jsonschema import DRAFT7

CORE = {"Feature": "item-spec/json-schema/item.json", "Collection": "collection-spec/json-schema/collection.json",
        "Catalog": "catalog-spec/json-schema/catalog.json"}
HTTP_ONLY_HOSTS = {"json-schema.org"}  # the draft-07 meta-schema's canonical URL is http://

RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


class UnknownSchemaError(LookupError):
    """A schema URL that the local mirror does not hold (nothing is ever downloaded)."""


def _format_checker() -> jsonschema.FormatChecker:
    """Draft-07's checkers that need no extra package, plus the three formats STAC schemas lean on."""
    fc = jsonschema.FormatChecker(jsonschema.Draft7Validator.FORMAT_CHECKER.checkers)

    @fc.checks("date-time", raises=ValueError)
    def _date_time(v: object) -> bool:
        if not isinstance(v, str):
            return True
        if not RFC3339.match(v):
            return False
        datetime.fromisoformat(v.replace("z", "Z").replace("t", "T"))  # ranges: month 13 or hour 25 raise
        return True

    @fc.checks("iri")
    def _iri(v: object) -> bool:  # absolute: a scheme and no spaces
        return not isinstance(v, str) or bool(re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:\S+$", v))

    @fc.checks("iri-reference")
    def _iri_reference(v: object) -> bool:
        return not isinstance(v, str) or bool(re.match(r"^\S+$", v))

    return fc


def _deepest(errors: list[jsonschema.ValidationError]) -> jsonschema.ValidationError:
    """The error that reaches deepest into the instance, following oneOf/anyOf causes (the branch for the object's
    own type, not the branches for other types): a readable message. All errors stay in the exception's `source`."""
    def reach(e: jsonschema.ValidationError) -> int:
        return max([len(e.absolute_path), *(reach(c) for c in e.context)])

    error = max(errors, key=reach)
    while error.context:
        error = max(error.context, key=reach)
    return error


class LocalSchemas(STACValidator):
    def __init__(self, root: Path):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"no STAC schema folder at {self.root}")
        resources: dict[str, referencing.Resource] = {}
        for path in sorted(self.root.rglob("*")):
            if not path.is_file() or path.suffix in (".md", ".txt"):
                continue
            rel = path.relative_to(self.root).as_posix()
            scheme = "http" if rel.split("/")[0] in HTTP_ONLY_HOSTS else "https"
            contents = json.loads(path.read_text())
            resource = referencing.Resource.from_contents(contents, default_specification=DRAFT7)
            # keyed by the URL the folder layout gives AND by the file's own $id (v1.1.0 common.json's $id is
            # ".../commonjson", an upstream typo, and refs resolve against it)
            for url in {f"{scheme}://{rel}", str(contents.get("$id", "")).rstrip("#")} - {""}:
                resources[url] = resource
        self.urls = frozenset(resources)
        self.registry = referencing.Registry(retrieve=self._refuse).with_resources(resources.items()).crawl()
        self.format_checker = _format_checker()

    def _refuse(self, uri: str) -> referencing.Resource:
        raise UnknownSchemaError(f"schema {uri} is not in {self.root} (validation is offline: add the file there)")

    def check_known(self, url: str) -> None:
        if url.split("#")[0] not in self.urls:
            self._refuse(url)

    def errors(self, instance: Any, url: str) -> list[jsonschema.ValidationError]:
        """Every error of `instance` against the schema at `url` (a fragment such as '#/definitions/fields' is fine)."""
        self.check_known(url)
        validator = jsonschema.Draft7Validator({"$ref": url}, registry=self.registry, format_checker=self.format_checker)
        try:
            return list(validator.iter_errors(instance))
        except referencing.exceptions.Unresolvable as e:
            raise UnknownSchemaError(f"while validating against {url}: cannot resolve {e}") from e

    def validate_against(self, instance: Any, url: str) -> None:
        errors = self.errors(instance, url)
        if errors:
            best = _deepest(errors)
            where = "/".join(map(str, best.absolute_path)) or "(top)"
            what = f"{instance.get('type')} {instance.get('id')!r}" if isinstance(instance, dict) else "instance"
            message = best.message if len(best.message) < 300 else best.message[:300] + "..."
            raise STACValidationError(f"{what} is invalid against {url} at {where}: {message}", source=errors)

    # pystac's STACValidator interface
    def validate_core(self, stac_dict: dict[str, Any], stac_object_type: STACObjectType, stac_version: str,
                      href: str | None = None) -> str:
        url = f"https://schemas.stacspec.org/v{stac_version}/{CORE[str(stac_object_type.value)]}"
        self.validate_against(stac_dict, url)
        return url

    def validate_extension(self, stac_dict: dict[str, Any], stac_object_type: STACObjectType, stac_version: str,
                           extension_id: str, href: str | None = None) -> str:
        self.validate_against(stac_dict, extension_id)
        return extension_id

    def validate_dict(self, stac: dict) -> list[str]:
        """Validate a STAC Item, Collection or Catalog (as JSON) against its core schema and every extension it
        declares. Returns the schema URLs used; raises STACValidationError or UnknownSchemaError."""
        kind = stac.get("type")
        if kind not in CORE:
            raise STACValidationError(f"type {kind!r} is not a STAC Item, Collection or Catalog")
        version = stac.get("stac_version")
        if not isinstance(version, str):
            raise STACValidationError(f"{kind} {stac.get('id')!r} has no stac_version")
        extensions = stac.get("stac_extensions", [])
        if not isinstance(extensions, list):
            extensions = []  # the core schema rejects it
        return self.validate(stac, STACObjectType(kind), version, extensions)

    def validate_file(self, path: Path) -> list[str]:
        return self.validate_dict(json.loads(Path(path).read_text()))
