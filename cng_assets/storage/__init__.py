"""Product storage: the interface and its local-folder and S3 implementations."""

from cng_assets.storage.base import ObjectInfo, ProductStorage
from cng_assets.storage.local import LocalStorage
from cng_assets.storage.s3 import S3Storage

__all__ = ["LocalStorage", "ObjectInfo", "ProductStorage", "S3Storage"]
