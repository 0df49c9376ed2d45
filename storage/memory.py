"""``memory://``: blobs in a dict in this process, for tests and single-process demos.

Guarantees: thread-safe; every operation is atomic (a put replaces the whole entry under a lock);
``get`` returns a reader over the bytes as they were, unaffected by later puts or deletes. Nothing
survives the process. ``memory://`` is always a new, empty store; ``memory://<name>`` returns the
same store for the same name everywhere in the process, until :func:`forget_named_stores`.
"""

from __future__ import annotations

import bisect
import io
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

from .base import BlobStore
from .blob import Blob, BlobInfo
from .errors import BlobNotFound, StorageError
from .source import Source

_named: dict[str, MemoryStore] = {}
_named_lock = threading.Lock()


@dataclass(frozen=True)
class _Entry:
    data: bytes
    content_type: str
    metadata: dict[str, str]

    def info(self, key: str) -> BlobInfo:
        return BlobInfo(key, len(self.data), self.content_type, dict(self.metadata))


class MemoryStore(BlobStore):
    """An in-process store. See the module docstring for what it guarantees."""

    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str) -> MemoryStore:
        """``memory://`` (a new store) or ``memory://<name>`` (the process-wide store so named)."""
        parts = urlsplit(url)
        if parts.path or parts.query or parts.fragment:
            raise StorageError(f"memory URL takes only a name, as in memory://cache, not {url!r}")
        if not parts.netloc:
            return cls(url)
        with _named_lock:
            return _named.setdefault(parts.netloc, cls(f"memory://{parts.netloc}"))

    def _put(
        self, key: str, source: Source, content_type: str, metadata: dict[str, str]
    ) -> BlobInfo:
        entry = _Entry(b"".join(source.chunks()), content_type, metadata)
        with self._lock:
            self._entries[key] = entry
        return entry.info(key)

    def _get(self, key: str) -> Blob:
        entry = self._entry(key)
        return Blob(entry.info(key), io.BytesIO(entry.data), where=f"{key!r} in {self.url}")

    def _head(self, key: str) -> BlobInfo:
        return self._entry(key).info(key)

    def _delete(self, key: str) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def _list(self, prefix: str) -> Iterator[str]:
        with self._lock:
            keys = sorted(self._entries)
        start = bisect.bisect_left(keys, prefix)
        for key in keys[start:]:
            if not key.startswith(prefix):
                return
            yield key

    def _ping(self) -> None:
        return None

    def _entry(self, key: str) -> _Entry:
        with self._lock:
            entry = self._entries.get(key)
        if entry is None:
            raise BlobNotFound(key, self.url)
        return entry


def forget_named_stores() -> None:
    """Drop every ``memory://<name>`` store (for test isolation)."""
    with _named_lock:
        _named.clear()
