"""Reading the data given to ``put``: bytes, or a binary stream read in bounded chunks.

:class:`Source` remembers the exception the caller's stream raised, so a backend can tell the
caller's failure (re-raised unchanged) from its own I/O failure (converted to
:class:`~storage.errors.StorageUnavailable`), even when both are ``OSError``.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import IO

CHUNK_SIZE = 1024 * 1024

_BYTES_LIKE = (bytes, bytearray, memoryview)


class Source:
    """A read-only, forward-only view of ``bytes | IO[bytes]`` that counts what it has read."""

    def __init__(self, data: bytes | IO[bytes]) -> None:
        if isinstance(data, _BYTES_LIKE):
            self._stream: IO[bytes] = io.BytesIO(data)
        elif callable(getattr(data, "read", None)):
            self._stream = data
        else:
            raise TypeError(f"put() needs bytes or a binary stream, not {type(data).__name__}")
        self.size = 0
        self.failure: BaseException | None = None

    def read(self, n: int = -1) -> bytes:
        """Exactly ``n`` bytes unless the stream ends first (all the rest if ``n`` < 0)."""
        if n < 0:
            return b"".join(self.chunks())
        parts = []
        while n > 0:
            chunk = self._read_once(n)
            if not chunk:
                break
            parts.append(chunk)
            n -= len(chunk)
        return b"".join(parts)

    def chunks(self, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        """Yield the remaining data in chunks of ``chunk_size`` (the last may be shorter)."""
        while chunk := self.read(chunk_size):
            yield chunk

    def raised(self, exc: BaseException) -> bool:
        """Whether ``exc`` came from the caller's stream rather than from a backend."""
        return exc is self.failure

    def _read_once(self, n: int) -> bytes:
        try:
            chunk = self._stream.read(n)
        except BaseException as exc:
            self.failure = exc
            raise
        if not isinstance(chunk, _BYTES_LIKE):
            raise TypeError(f"put() needs a binary stream; read() returned {type(chunk).__name__}")
        self.size += len(chunk)
        return bytes(chunk)
