"""Choosing a backend by URL scheme: :func:`open_store`.

``SCHEMES`` maps a scheme to a factory that takes the whole URL. A backend module is imported
only when its scheme is opened, so ``import storage`` pulls in no optional dependency (boto3,
azure-storage-blob).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from urllib.parse import urlsplit

from .base import BlobStore
from .errors import UnknownScheme

StoreFactory = Callable[[str], BlobStore]


def _lazy(module: str, class_name: str) -> StoreFactory:
    def open_url(url: str) -> BlobStore:
        store_class = getattr(importlib.import_module(module, __package__), class_name)
        store: BlobStore = store_class.from_url(url)
        return store

    return open_url


SCHEMES: dict[str, StoreFactory] = {
    "file": _lazy(".file", "FileStore"),
    "memory": _lazy(".memory", "MemoryStore"),
    "s3": _lazy(".s3", "S3Store"),
    "az": _lazy(".azure", "AzureStore"),
}


def open_store(url: str) -> BlobStore:
    """Open the store that ``url`` names, such as ``file:///var/lib/inferbox``, ``memory://``,
    ``memory://shared``, ``s3://bucket/prefix`` or ``az://container/prefix``.

    Raises :class:`~storage.errors.UnknownScheme` (naming the supported schemes) for a missing or
    unknown scheme, :class:`~storage.errors.StorageError` for a malformed URL, and
    :class:`~storage.errors.StorageUnavailable` if the backend cannot be set up.
    """
    scheme = urlsplit(url).scheme.lower() if isinstance(url, str) else ""
    factory = SCHEMES.get(scheme)
    if factory is None:
        raise UnknownScheme(scheme, sorted(SCHEMES))
    return factory(url)
