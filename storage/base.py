"""The blob store contract, written once: :class:`BlobStore`.

The public methods check their arguments (see :mod:`storage.keys`) and hand off to the
underscore methods that each backend implements, so every backend enforces the same rules.
"""

from __future__ import annotations

import builtins
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from types import TracebackType
from typing import IO, Any, TypeVar

from .blob import Blob, BlobInfo
from .errors import BlobNotFound, StorageError
from .keys import validate_content_type, validate_key, validate_metadata, validate_prefix
from .source import Source

DEFAULT_CONTENT_TYPE = "application/octet-stream"


# Connections an HTTP store's default client keeps for reuse: a broker process calls its store
# from all its request threads (64 by default) and its batch storage threads; the SDKs' default
# of 10 would open and discard a connection per call beyond ten, with a warning each time.
MAX_POOL_CONNECTIONS = 128

_In = TypeVar("_In")
_Out = TypeVar("_Out")
# How ``put_many`` runs its puts: ``map(call, items)`` is ``[call(item) for item in items]``,
# in any order or at once (a thread pool), and returns once every call has ended.
Mapper = Callable[[Callable[[_In], _Out], Sequence[_In]], list[_Out]]


@dataclass(frozen=True)
class Put:
    """One blob for :meth:`BlobStore.put_many`: the arguments of :meth:`BlobStore.put`."""

    key: str
    data: bytes | IO[bytes]
    content_type: str = DEFAULT_CONTENT_TYPE
    metadata: Mapping[str, str] | None = None


@dataclass(frozen=True)
class CheckedPut:
    """A :class:`Put` whose key, content type and metadata passed the checks."""

    key: str
    source: Source
    content_type: str
    metadata: dict[str, str]


def in_turn(call: Callable[[_In], _Out], items: Sequence[_In]) -> list[_Out]:
    """The default ``map`` of ``put_many``: one call after the other, in this thread."""
    return [call(item) for item in items]


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

    def put_many(self, puts: Sequence[Put], *, map: Mapper[Any, Any] = in_turn) -> list[BlobInfo]:
        """Store every blob as :meth:`put` would, and describe each, in order.

        All are checked before anything is written; each is atomic, and all are durable when
        this returns. If any fails, every put still ends, the blobs this call stored are
        deleted again (a key it replaced then holds nothing), and the first error in order is
        raised. ``map`` runs the puts of a store that writes them one by one (a thread pool's
        map lets a cloud store's round trips overlap); a store with a cheaper way to make a
        batch durable (``file://``: one file system sync for the lot) may not use it. Readers
        may see some blobs before others, and any of them before this returns.
        """
        checked = [CheckedPut(validate_key(put.key), Source(put.data),
                              validate_content_type(put.content_type),
                              validate_metadata(put.metadata)) for put in puts]  # fmt: skip
        return self._put_many(checked, map) if checked else []

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

    def _put_many(self, puts: Sequence[CheckedPut], map: Mapper[Any, Any]
                  ) -> builtins.list[BlobInfo]:  # fmt: skip
        """Each put through ``_put``, run by ``map``; on a failure, undo the others."""

        def attempt(put: CheckedPut) -> BlobInfo | BaseException:
            try:
                return self._put(put.key, put.source, put.content_type, put.metadata)
            except BaseException as exc:  # noqa: BLE001 - raised below, once the others end
                return exc

        outcomes = map(attempt, puts)
        failure = next((out for out in outcomes if isinstance(out, BaseException)), None)
        if failure is None:
            return outcomes  # type: ignore[return-value]
        for put, out in zip(puts, outcomes, strict=True):
            if isinstance(out, BlobInfo):
                with suppress(StorageError):
                    self._delete(put.key)
        raise failure

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
