"""What a store hands back: :class:`BlobInfo` (the facts about a blob) and :class:`Blob` (a reader).

A :class:`Blob` streams the stored bytes: backends that keep blobs outside the process (file, s3)
hold an open file or HTTP body, never the whole blob. Close it, or use it as a context manager,
or exhaust :meth:`Blob.iter_chunks`, which closes it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from .errors import StorageUnavailable

DEFAULT_CHUNK_SIZE = 65536


@dataclass(frozen=True)
class BlobInfo:
    """A stored blob's key, size in bytes, content type and user metadata.

    ``metadata`` is the caller's own copy: changing it changes nothing stored.
    """

    key: str
    size: int
    content_type: str
    metadata: dict[str, str] = field(default_factory=dict)


class Blob:
    """A reader over one stored blob, positioned at its first byte.

    ``stream`` is the backend's open source (a file, an HTTP body, a BytesIO). Errors of the types
    in ``io_errors`` raised while reading or closing it become :class:`StorageUnavailable`, with
    ``where`` (the key and store) in the message.
    """

    def __init__(
        self,
        info: BlobInfo,
        stream: Any,
        *,
        io_errors: tuple[type[BaseException], ...] = (OSError,),
        where: str = "",
    ) -> None:
        self.info = info
        self._stream = stream
        self._io_errors = io_errors
        self._where = where or repr(info.key)
        self._closed = False

    def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes (all that remain if ``n`` < 0); ``b""`` only at the end."""
        if self._closed:
            raise ValueError(f"read from a closed blob ({self._where})")
        with self._translated("read"):
            data = self._stream.read() if n < 0 else self._stream.read(n)
        return bytes(data)

    def iter_chunks(self, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Iterator[bytes]:
        """Yield the remaining bytes in chunks of at most ``chunk_size``; close when done.

        The blob is closed when the iterator is exhausted, closed, or garbage collected.
        """
        if chunk_size <= 0:
            raise ValueError("chunk_size must be positive")
        try:
            while chunk := self.read(chunk_size):
                yield chunk
        finally:
            self.close()

    def close(self) -> None:
        """Release the underlying stream. Safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        with self._translated("close"):
            self._stream.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> Blob:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<Blob {self.info.key!r} {self.info.size} bytes, {state}>"

    @contextmanager
    def _translated(self, action: str) -> Iterator[None]:
        try:
            yield
        except self._io_errors as exc:
            raise StorageUnavailable(f"could not {action} blob {self._where}: {exc}") from exc
