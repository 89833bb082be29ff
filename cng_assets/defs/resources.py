"""Per-environment resources, chosen in one place. Embedded default: products in a local folder."""

from __future__ import annotations

import os

from cng_assets.storage import LocalStorage

DEFAULT_DATA_DIR = "data"


def resources(data_dir: str | None = None) -> dict:
    """`CNG_DATA_DIR` (default ./data) picks the product folder; `CNG_PUBLIC_BASE_URL` the hrefs of published
    products (unset: relative)."""
    return {"storage": LocalStorage(root=data_dir or os.environ.get("CNG_DATA_DIR", DEFAULT_DATA_DIR),
                                    public_base_url=os.environ.get("CNG_PUBLIC_BASE_URL") or None)}
