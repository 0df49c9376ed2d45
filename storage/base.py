"""The blob store contract, written once: :class:`BlobStore`.

The public methods check their arguments (see :mod:`storage.keys`) and hand off to the
underscore methods that each backend implements, so every backend enforces the same rules.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from types import TracebackType
from typing import IO

from .blob import Blob, BlobInfo
from .errors import BlobNotFound
from .keys import validate_content_type, validate_key, validate_metadata, validate_prefix
from .source import Source

DEFAULT_CONTENT_TYPE = "application/octet-stream"


# Connections an HTTP store's default client keeps for reuse: a broker process calls its store
# from all its request threads (64 by default) and its batch storage threads; the SDKs' default
# of 10 would open and discard a connection per call beyond ten, with a warning each time.
MAX_POOL_CONNECTIONS = 128


class BlobStore(ABC):
    """Blobs (bytes plus a content type and small metadata) stored under string keys.

    Every method that takes a key raises :class:`~storage.errors.InvalidKey` for a key that breaks
    the rules in :mod:`storage.keys`. Backend failures raise
    :class:`~storage.errors.StorageUnavailable`. Stores are safe to share between threads.
    """

    url: str

    def put(
        self,
        key: str,
        data: bytes | IO[bytes],
        *,
        content_type: str = DEFAULT_CONTENT_TYPE,
        metadata: Mapping[str, str] | None = None,
    ) -> BlobInfo:
        """Store ``data`` under ``key``, replacing any blob there, and describe what was stored.

        Atomic: readers see the old blob or the whole new one, never part of it. A stream is read
        in chunks, never all at once. If reading it raises, that exception propagates unchanged,
        nothing new is stored and the previous blob (if any) is kept. Raises
        :class:`~storage.errors.InvalidMetadata` before reading anything if ``content_type`` or
        ``metadata`` cannot round-trip exactly.
        """
        validate_key(key)
        content_type = validate_content_type(content_type)
        checked = validate_metadata(metadata)
        return self._put(key, Source(data), content_type, checked)

    def get(self, key: str) -> Blob:
        """Open the blob under ``key`` for streaming; raises :class:`~storage.errors.BlobNotFound`.

        The blob reads as it was when opened, even if it is overwritten or deleted meanwhile.
        """
        return self._get(validate_key(key))

    def head(self, key: str) -> BlobInfo:
        """Describe the blob under ``key``; raises :class:`~storage.errors.BlobNotFound`."""
        return self._head(validate_key(key))

    def exists(self, key: str) -> bool:
        """Whether a blob is stored under ``key``."""
        try:
            self.head(key)
        except BlobNotFound:
            return False
        return True

    def read_bytes(self, key: str) -> bytes:
        """The whole blob under ``key``, in memory; raises :class:`~storage.errors.BlobNotFound`."""
        with self.get(key) as blob:
            return blob.read()

    def delete(self, key: str) -> None:
        """Remove the blob under ``key``. Removing a missing key is not an error."""
        self._delete(validate_key(key))

    def list(self, prefix: str = "") -> Iterator[str]:
        """Yield the keys that start with ``prefix``, sorted by code point.

        ``prefix`` is plain string matching (``"inbox"`` matches ``"inbox2/x"``; ``"inbox/"``
        does not). It is checked like a key, except that ``""`` and one trailing ``/`` are
        allowed. Keys stored meanwhile may or may not appear.
        """
        return self._list(validate_prefix(prefix))

    def ping(self) -> None:
        """Return if the backend answers, else raise :class:`~storage.errors.StorageUnavailable`."""
        self._ping()

    def close(self) -> None:
        """Release the store's resources (connections, clients). Safe to call more than once."""
        return None

    def __enter__(self) -> BlobStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url}>"

    @abstractmethod
    def _put(
        self, key: str, source: Source, content_type: str, metadata: dict[str, str]
    ) -> BlobInfo:
        """Store ``source`` atomically; ``source.raised(exc)`` tells its errors from ours."""

    @abstractmethod
    def _get(self, key: str) -> Blob: ...

    @abstractmethod
    def _head(self, key: str) -> BlobInfo: ...

    @abstractmethod
    def _delete(self, key: str) -> None: ...

    @abstractmethod
    def _list(self, prefix: str) -> Iterator[str]: ...

    @abstractmethod
    def _ping(self) -> None: ...
