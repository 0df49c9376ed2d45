"""Blob storage for inferbox: bytes plus a content type and small metadata, under string keys.

Open a store by URL with :func:`open_store`; every backend honours the :class:`BlobStore`
contract (atomic puts, streaming gets, sorted listing, the key rules of :func:`validate_key`)::

    store = open_store("file:///var/lib/inferbox")    # or memory://, s3://b/prefix, az://c/prefix
    store.put("inbox/42", request_body, content_type="image/png", metadata={"task_id": "42"})
    with store.get("inbox/42") as blob:
        for chunk in blob.iter_chunks():
            ...

Errors all derive from :class:`StorageError`; see :mod:`storage.errors` for the tree.
"""

from .base import BlobStore, Put
from .blob import Blob, BlobInfo
from .errors import (
    BlobNotFound,
    InvalidKey,
    InvalidMetadata,
    StorageError,
    StorageUnavailable,
    UnknownScheme,
)
from .keys import validate_key
from .registry import open_store

__all__ = [
    "BlobStore",
    "Put",
    "BlobInfo",
    "Blob",
    "open_store",
    "validate_key",
    "StorageError",
    "BlobNotFound",
    "InvalidKey",
    "InvalidMetadata",
    "UnknownScheme",
    "StorageUnavailable",
]
