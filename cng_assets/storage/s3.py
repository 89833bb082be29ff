"""Products in S3 (NRP Nautilus' Ceph, SeaweedFS in tests). The control path (list, head, copy, delete, multipart
upload) goes through dagster-aws' S3Resource; parquet is read in place with range requests (pyarrow's S3
filesystem) and GDAL reads sources through `/vsis3/`. Credentials come only from the environment (the `aws`
Secret in a pod): never from config, so they never reach the run storage."""

from __future__ import annotations

import mimetypes
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlparse

import pyogrio
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError
from dagster_aws.s3 import S3Resource
from pydantic import PrivateAttr

from cng_assets.storage.base import ObjectInfo, ProductStorage
from cng_assets.transforms.folders import local_modified
from cng_assets.transforms.product_files import multihash_sha256
from cng_assets.transforms.sources import gdal_path

STAGING = ".staging"
CHECKSUM = "multihash"  # user metadata (x-amz-meta-multihash): the object's sha2-256 multihash, as STAC's file:checksum


class S3Storage(ProductStorage):
    """Products at `s3://<bucket>/<key>`; bucket None means `default_bucket`."""

    s3: S3Resource  # endpoint_url (the internal one in pods), use_ssl, region, retries (max_attempts)
    default_bucket: str = "cng-assets"
    multipart_threshold_mb: int = 64  # larger files go up in parts, several at once

    _client = PrivateAttr(default=None)
    _fs = PrivateAttr(default=None)

    @property
    def client(self):
        if self._client is None:
            self._client = self.s3.get_client()
        return self._client

    @property
    def transfer(self) -> TransferConfig:
        mb = 1024 * 1024
        size = self.multipart_threshold_mb * mb
        return TransferConfig(multipart_threshold=size, multipart_chunksize=size)

    def _upload(self, path: Path, bucket: str, key: str) -> None:
        # A Content-Type, or a browser downloads map.html (and README.md, the PNGs) instead of showing it; the
        # checksum STAC gives, hashed here from the local file, so that describing a product never downloads it
        kind = mimetypes.guess_type(key)[0]
        with open(path, "rb") as f:
            extra = {"Metadata": {CHECKSUM: multihash_sha256(f)}, **({"ContentType": kind} if kind else {})}
        self.client.upload_file(str(path), bucket, key, Config=self.transfer, ExtraArgs=extra)

    def _b(self, bucket: str | None) -> str:
        return bucket or self.default_bucket

    def uri(self, bucket: str | None, key: str) -> str:
        return f"s3://{self._b(bucket)}/{key}"

    @contextmanager
    def _scratch(self) -> Iterator[Path]:
        path = Path(tempfile.mkdtemp(prefix="cng-"))
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    @contextmanager
    def publish(self, bucket: str | None, key: str) -> Iterator[Path]:
        # An S3 PUT (or a completed multipart upload) is atomic: readers see the old object or the new one.
        with self._scratch() as scratch:
            tmp = scratch / key.rsplit("/", 1)[-1]
            yield tmp
            if not tmp.exists():
                raise RuntimeError(f"nothing was written for {key}")
            self._upload(tmp, self._b(bucket), key)

    @contextmanager
    def publish_dir(self, bucket: str | None, key: str) -> Iterator[Path]:
        """S3 cannot rename a set of objects at once. The new set is uploaded whole to a staging prefix first (an
        upload failure leaves the product as it was); then each object is copied into place server-side (each
        replace is atomic, file names are deterministic) and objects of the old set that the new one lacks are
        deleted. During those seconds a reader may see old and new partitions side by side, never a partial file."""
        b, key = self._b(bucket), key.rstrip("/")
        with self._scratch() as scratch:
            new = scratch / "new"
            new.mkdir()
            yield new
            files = sorted(p.relative_to(new).as_posix() for p in new.rglob("*") if p.is_file())
            staging = f"{STAGING}/{uuid.uuid4().hex}"
            try:
                for rel in files:
                    self._upload(new / rel, b, f"{staging}/{rel}")
                old = {o.key for o in self.list_objects(b, key + "/")}
                for rel in files:
                    self.client.copy({"Bucket": b, "Key": f"{staging}/{rel}"}, b, f"{key}/{rel}", Config=self.transfer)
                self._delete_keys(b, sorted(old - {f"{key}/{rel}" for rel in files}))
            finally:
                self._delete_keys(b, [f"{staging}/{rel}" for rel in files])

    @contextmanager
    def local_path(self, bucket: str | None, key: str) -> Iterator[Path]:
        """A downloaded copy of the object (same file name) or of every object under the folder `key`."""
        b = self._b(bucket)
        with self._scratch() as scratch:
            if self._head(b, key) is not None:
                path = scratch / key.rsplit("/", 1)[-1]
                self.client.download_file(b, key, str(path), Config=self.transfer)
            else:
                path = scratch / key.rstrip("/").rsplit("/", 1)[-1]
                path.mkdir()
                for o in self.list_objects(b, key.rstrip("/") + "/"):
                    target = path / o.key[len(key.rstrip("/")) + 1:]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    try:
                        self.client.download_file(b, o.key, str(target), Config=self.transfer)
                    except ClientError as e:  # deleted since the listing (e.g. chunk files after consolidation)
                        if not _missing(e):
                            raise
                        target.unlink(missing_ok=True)
            yield path

    def _delete_keys(self, bucket: str, keys: list[str]) -> None:
        for i in range(0, len(keys), 1000):  # the DeleteObjects limit
            self.client.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys[i:i + 1000]], "Quiet": True})

    def delete(self, bucket: str | None, key: str) -> None:
        b = self._b(bucket)
        self._delete_keys(b, [key, *(o.key for o in self.list_objects(b, key.rstrip("/") + "/"))])

    def _head(self, bucket: str, key: str) -> dict | None:
        try:
            return self.client.head_object(Bucket=bucket, Key=key)
        except ClientError as e:
            if _missing(e):
                return None
            raise

    @property
    def filesystem(self):
        """pyarrow's S3 filesystem on the same endpoint: parquet footers and row groups by range request."""
        if self._fs is None:
            from pyarrow import fs

            url = urlparse(self.s3.endpoint_url or "https://s3.amazonaws.com")
            self._fs = fs.S3FileSystem(endpoint_override=url.netloc, scheme=url.scheme or "https",
                                       region=self.s3.region_name or "us-east-1", allow_bucket_creation=False,
                                       retry_strategy=fs.AwsStandardS3RetryStrategy(max_attempts=self.s3.max_attempts))
        return self._fs

    def open(self, bucket: str | None, key: str) -> BinaryIO:
        return self.filesystem.open_input_file(f"{self._b(bucket)}/{key}")

    def checksum(self, bucket: str | None, key: str) -> str | None:
        head = self._head(self._b(bucket), key)
        return None if head is None else head.get("Metadata", {}).get(CHECKSUM)

    def size(self, bucket: str | None, key: str) -> int:
        head = self._head(self._b(bucket), key)
        if head is None:
            raise FileNotFoundError(self.uri(bucket, key))
        return head["ContentLength"]

    def exists(self, bucket: str | None, key: str) -> bool:
        b = self._b(bucket)
        if self._head(b, key) is not None:
            return True
        return next(iter(self.list_objects(b, key.rstrip("/") + "/")), None) is not None

    def list_objects(self, bucket: str | None, prefix: str) -> Iterator[ObjectInfo]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self._b(bucket), Prefix=prefix)
        try:
            for page in pages:
                for o in page.get("Contents", []):
                    if not o["Key"].startswith(STAGING + "/"):
                        yield ObjectInfo(o["Key"], o["Size"], o["ETag"].strip('"'), o["LastModified"].timestamp())
        except ClientError as e:  # a bucket that does not exist holds nothing
            if not _missing(e):
                raise

    def _location(self, source: str) -> tuple[str, str] | None:
        if source.startswith("s3://"):
            bucket, _, key = source.removeprefix("s3://").partition("/")
            return bucket, key.rstrip("/")
        if source.startswith(("https://", "http://", "/vsi")) or Path(source).is_absolute():
            return None
        return self.default_bucket, source.rstrip("/")

    def _source_objects(self, source: str) -> dict[str, ObjectInfo]:
        """The objects of a source, by their path relative to it ('' for a single object)."""
        where = self._location(source)
        if where is None:
            return {}
        bucket, key = where
        return {("" if o.key == key else o.key[len(key) + 1:]): o for o in self.list_objects(bucket, key)
                if o.key == key or o.key.startswith(key + "/")}

    def source_files(self, source: str) -> dict[str, str]:
        return {rel: o.etag for rel, o in self._source_objects(source).items()}

    def source_modified(self, source: str) -> float | None:
        if self._location(source) is None:  # an absolute local path (`cng-assets run` with S3 storage)
            return None if source.startswith(("https://", "http://", "/vsi")) else local_modified(Path(source))
        return max((o.modified for o in self._source_objects(source).values() if o.modified is not None), default=None)

    def source_path(self, source: str) -> str:
        self.configure_gdal()
        where = self._location(source)
        return f"/vsis3/{where[0]}/{where[1]}" if where else gdal_path(source)

    def gdal_path(self, bucket: str | None, key: str) -> str:
        self.configure_gdal()
        return f"/vsis3/{self._b(bucket)}/{key}"

    def configure_gdal(self) -> None:
        pyogrio.set_gdal_config_options(self.gdal_options())

    def gdal_options(self) -> dict[str, str]:
        """GDAL's /vsis3/ on the same endpoint, path-style; it reads the keys from the environment itself."""
        url = urlparse(self.s3.endpoint_url or "https://s3.amazonaws.com")
        return {
            "AWS_S3_ENDPOINT": url.netloc, "AWS_HTTPS": "YES" if url.scheme == "https" else "NO",
            "AWS_VIRTUAL_HOSTING": "FALSE", "AWS_REGION": self.s3.region_name or os.environ.get("AWS_REGION", "us-east-1"),
            # A long-lived process (the sensor daemon) must see re-uploads: keep no listings or bytes after close.
            "CPL_VSIL_CURL_NON_CACHED": "/vsis3/",
            # Ride out a gateway restart the way the boto3 client does (standard retries with backoff).
            "GDAL_HTTP_MAX_RETRY": str(self.s3.max_attempts), "GDAL_HTTP_RETRY_DELAY": "1",
        }


def _missing(e: ClientError) -> bool:
    return e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound", "NoSuchBucket")
