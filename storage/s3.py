"""``s3://bucket/optional/prefix``: blobs as objects in an S3 bucket (AWS, MinIO, R2, ...).

boto3 is imported when a store is opened, never by ``import storage``: install ``inferbox[s3]``.
The client is ``boto3.client("s3")`` configured the standard way (keeping up to
``MAX_POOL_CONNECTIONS`` connections for reuse, not 10): credentials from the usual
chain, the endpoint from ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` (MinIO, R2), the region
from ``AWS_REGION``, else ``AWS_DEFAULT_REGION`` or the AWS config file. For a MinIO host that
has no per-bucket DNS, set ``addressing_style = path`` under ``s3`` in the AWS config file.

Guarantees:

- ``put`` is atomic: S3 makes an object visible only once it is complete. Streams go through
  ``upload_fileobj``, which buffers at most a few parts (8 MiB each) in memory and uses a
  multipart upload for large blobs. It aborts that upload if the stream raises.
- ``get`` streams the object's HTTP body. ``list`` pages through ``list_objects_v2`` in key
  order, skipping object names that are not valid keys (such as console "folder" markers).
- Keys are stored under the URL's prefix (``s3://b/p`` keeps key ``k`` as object ``p/k``).
  Prefix and key together must fit S3's 1024-byte limit, else :class:`InvalidKey`.
- Metadata round-trips exactly, even through proxies that drop header names with ``_`` or
  trim spaces. Names are escaped (``-`` as ``--``, ``_`` as ``-u``), and in values ``%`` and
  leading or trailing spaces are percent-encoded. S3 caps metadata at 2 KB as stored, so
  metadata near the 2 KiB limit that grows past it when escaped raises
  :class:`InvalidMetadata`.
- A missing bucket or denied access raises :class:`StorageUnavailable`, except ``head`` (and
  so ``exists``), which cannot tell a missing bucket from a missing key.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import unquote, urlsplit

from .base import DEFAULT_CONTENT_TYPE, MAX_POOL_CONNECTIONS, BlobStore
from .blob import Blob, BlobInfo
from .errors import (
    BlobNotFound,
    InvalidKey,
    InvalidMetadata,
    StorageError,
    StorageUnavailable,
)
from .keys import is_valid_key, validate_key
from .source import Source

MAX_OBJECT_KEY_BYTES = 1024
MAX_STORED_METADATA_BYTES = 2048
_NOT_FOUND_CODES = frozenset({"404", "NoSuchKey", "NotFound"})
_ENCODED_NAME = re.compile(r"(?:[a-z0-9]|--|-u)+")


class S3Store(BlobStore):
    """Blobs in ``bucket`` under ``prefix``. See the module docstring for what it guarantees.

    ``client`` defaults to ``boto3.client("s3")`` (see the module docstring); it stays
    available as the ``client`` attribute, and :meth:`close` closes it only if it was made here.
    """

    def __init__(self, bucket: str, prefix: str = "", *, client: Any = None) -> None:
        transfer = _import_boto3_transfer()
        self.bucket = bucket
        self.prefix = _normalize_prefix(prefix)
        self.url = f"s3://{bucket}/{self.prefix}".rstrip("/")
        self._errors_of = _backend_error_types()
        self._transfer = transfer.TransferConfig()
        self._owns_client = client is None
        with self._errors("connect to", None):
            self.client = client if client is not None else _default_client()

    @classmethod
    def from_url(cls, url: str) -> S3Store:
        """``s3://bucket`` or ``s3://bucket/prefix``."""
        parts = urlsplit(url)
        if not parts.netloc or parts.query or parts.fragment:
            raise StorageError(f"bad S3 URL {url!r}: use s3://bucket or s3://bucket/prefix")
        return cls(parts.netloc, parts.path.lstrip("/"))

    def close(self) -> None:
        """Close the client if this store created it."""
        close = getattr(self.client, "close", None)
        if self._owns_client and close is not None:
            close()

    # -- the contract ---------------------------------------------------------------------------

    def _put(
        self, key: str, source: Source, content_type: str, metadata: dict[str, str]
    ) -> BlobInfo:
        extra = {"ContentType": content_type, "Metadata": _encode_metadata(metadata)}
        name = self._object_name(key)
        with self._errors("store", key, source):
            self.client.upload_fileobj(
                source, self.bucket, name, ExtraArgs=extra, Config=self._transfer
            )
        return BlobInfo(key, source.size, content_type, dict(metadata))

    def _get(self, key: str) -> Blob:
        with self._errors("read", key):
            response = self.client.get_object(Bucket=self.bucket, Key=self._object_name(key))
        where = f"{key!r} in {self.url}"
        return Blob(_info(key, response), response["Body"], io_errors=self._errors_of, where=where)

    def _head(self, key: str) -> BlobInfo:
        with self._errors("read", key):
            response = self.client.head_object(Bucket=self.bucket, Key=self._object_name(key))
        return _info(key, response)

    def _delete(self, key: str) -> None:
        with self._errors("delete", key):
            self.client.delete_object(Bucket=self.bucket, Key=self._object_name(key))

    def _list(self, prefix: str) -> Iterator[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        pages = iter(paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix))
        while True:
            with self._errors("list", None):
                page = next(pages, None)
            if page is None:
                return
            for item in page.get("Contents", []):
                key = item["Key"][len(self.prefix) :]
                if is_valid_key(key):
                    yield key

    def _ping(self) -> None:
        with self._errors("reach", None):
            self.client.head_bucket(Bucket=self.bucket)

    # -- helpers --------------------------------------------------------------------------------

    def _object_name(self, key: str) -> str:
        name = self.prefix + key
        if len(name.encode("utf-8")) > MAX_OBJECT_KEY_BYTES:
            raise InvalidKey(key, f"with the prefix, longer than S3's {MAX_OBJECT_KEY_BYTES} bytes")
        return name

    @contextmanager
    def _errors(self, action: str, key: str | None, source: Source | None = None) -> Iterator[None]:
        """Convert boto errors; let the caller's stream errors and everything else through."""
        try:
            yield
        except BaseException as exc:
            if source is not None and source.failure is not None:
                if exc is source.failure:
                    raise
                raise source.failure from None  # s3transfer may report it as something else
            if not isinstance(exc, self._errors_of):
                raise
            raise self._translate(exc, action, key) from exc

    def _translate(self, exc: BaseException, action: str, key: str | None) -> StorageError:
        response = getattr(exc, "response", None) or {}
        code = str(response.get("Error", {}).get("Code", ""))
        if key is not None and action == "read" and code in _NOT_FOUND_CODES:
            return BlobNotFound(key, self.url)
        what = f"{key!r} in {self.url}" if key is not None else self.url
        return StorageUnavailable(f"could not {action} {what}: {exc}")


def _import_boto3_transfer() -> Any:
    try:
        import boto3.s3.transfer
    except ImportError as exc:
        raise StorageError("s3:// stores need boto3: pip install 'inferbox[s3]'") from exc
    return boto3.s3.transfer


def _default_client() -> Any:
    import boto3
    from botocore.config import Config

    # boto3 reads AWS_DEFAULT_REGION itself; AWS_REGION is the name the other AWS SDKs use.
    return boto3.client("s3", region_name=os.environ.get("AWS_REGION") or None,
                        config=Config(max_pool_connections=MAX_POOL_CONNECTIONS))


def _backend_error_types() -> tuple[type[BaseException], ...]:
    import boto3.exceptions
    import botocore.exceptions
    import urllib3.exceptions

    return (
        botocore.exceptions.BotoCoreError,
        botocore.exceptions.ClientError,
        boto3.exceptions.Boto3Error,
        urllib3.exceptions.HTTPError,
        OSError,
    )


def _normalize_prefix(prefix: str) -> str:
    prefix = prefix.strip("/")
    if not prefix:
        return ""
    try:
        validate_key(prefix)
    except InvalidKey as exc:
        raise StorageError(f"bad S3 prefix {prefix!r}: {exc.reason}") from exc
    return prefix + "/"


def _info(key: str, response: dict[str, Any]) -> BlobInfo:
    return BlobInfo(
        key=key,
        size=int(response["ContentLength"]),
        content_type=response.get("ContentType") or DEFAULT_CONTENT_TYPE,
        metadata=_decode_metadata(response.get("Metadata") or {}),
    )


def _encode_metadata(metadata: dict[str, str]) -> dict[str, str]:
    encoded = {_encode_name(name): _encode_value(value) for name, value in metadata.items()}
    stored = sum(len(name) + len(value) for name, value in encoded.items())
    if stored > MAX_STORED_METADATA_BYTES:
        raise InvalidMetadata(
            f"metadata takes {stored} bytes once escaped for S3, which allows "
            f"{MAX_STORED_METADATA_BYTES}"
        )
    return encoded


def _decode_metadata(stored: dict[str, str]) -> dict[str, str]:
    return {_decode_name(name): unquote(value) for name, value in stored.items()}


def _encode_name(name: str) -> str:
    return name.replace("-", "--").replace("_", "-u")


def _decode_name(stored: str) -> str:
    """The name ``_encode_name`` was given; a name it cannot have produced is kept as it is."""
    if not _ENCODED_NAME.fullmatch(stored):
        return stored
    return re.sub(r"-(.)", lambda match: "-" if match[1] == "-" else "_", stored)


def _encode_value(value: str) -> str:
    core = value.strip(" ")
    if not core:
        return "%20" * len(value)
    leading = len(value) - len(value.lstrip(" "))
    trailing = len(value) - len(value.rstrip(" "))
    return "%20" * leading + core.replace("%", "%25") + "%20" * trailing
