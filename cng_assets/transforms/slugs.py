"""Slugs: the `[a-z0-9_]` names layers and domains get as partition keys and file names."""

from __future__ import annotations

import re
import unicodedata


def slugify(name: str) -> str:
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "_", ascii_name.lower()).strip("_") or "layer"


def unique_slugs(names: list[str]) -> list[str]:
    """Slugs in the order of `names`; a repeat gets `_2`, `_3`, ... so every name keeps its own key."""
    taken: set[str] = set()
    out = []
    for name in names:
        base = slug = slugify(name)
        n = 1
        while slug in taken:
            n += 1
            slug = f"{base}_{n}"
        taken.add(slug)
        out.append(slug)
    return out
