"""Every error the storage package raises.

One base, so a caller can catch all storage failures with a single ``except``::

    StorageError                 base of every storage failure
    ├── BlobNotFound             no blob under that key (also a KeyError)
    ├── InvalidKey               the key or list prefix breaks the key rules (also a ValueError)
    ├── InvalidMetadata          bad metadata or content type (also a ValueError)
    ├── UnknownScheme            open_store() got a URL it has no backend for (also a ValueError)
    └── StorageUnavailable       the backend failed: disk, network, permissions, credentials

Backends convert their own errors (``OSError``, botocore's) to :class:`StorageUnavailable` where
they meet the backend, keeping the original as ``__cause__``. Exceptions that are not the
backend's, such as one raised by the caller's stream passed to ``put``, pass through unchanged.
A malformed URL for a known scheme raises the base :class:`StorageError`.
"""

from __future__ import annotations


class StorageError(Exception):
    """Base class of every storage failure."""

    def __str__(self) -> str:
        # KeyError (a base of BlobNotFound) would print repr(message); keep the plain message.
        return Exception.__str__(self)


class BlobNotFound(StorageError, KeyError):
    """No blob is stored under ``key``."""

    def __init__(self, key: str, where: str = "") -> None:
        suffix = f" in {where}" if where else ""
        super().__init__(f"no blob under key {key!r}{suffix}")
        self.key = key


class InvalidKey(StorageError, ValueError):
    """``key`` breaks the key rules; ``reason`` says which."""

    def __init__(self, key: str, reason: str) -> None:
        shown = key if len(key) <= 80 else key[:80] + "..."
        super().__init__(f"invalid key {shown!r}: {reason}")
        self.key = key
        self.reason = reason


class InvalidMetadata(StorageError, ValueError):
    """Metadata or content type that the store cannot keep exactly."""


class UnknownScheme(StorageError, ValueError):
    """``open_store`` has no backend for the URL's scheme."""

    def __init__(self, scheme: str, supported: list[str]) -> None:
        named = f"unknown storage URL scheme {scheme!r}" if scheme else "storage URL has no scheme"
        super().__init__(f"{named}; supported: {', '.join(s + '://' for s in supported)}")
        self.scheme = scheme
        self.supported = supported


class StorageUnavailable(StorageError):
    """The backend could not do the operation; ``__cause__`` holds the backend's own error."""
