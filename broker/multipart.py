"""``multipart/mixed`` (RFC 2046): the framing of batches, both ways.

Request bodies are read whole (they are bounded by the broker's payload limit) and split on the
boundary; part bodies come back byte for byte. Malformed framing raises ``InvalidRequest``.
Answers are streamed (:func:`stream`): blob parts are read chunk by chunk, never buffered.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from storage import Blob

from .errors import InvalidRequest

_BOUNDARY = re.compile(r'boundary=(?:"([^"]{1,70})"|([^;\s]{1,70}))', re.IGNORECASE)


@dataclass(frozen=True)
class Part:
    headers: dict[str, str]  # names lower-cased
    body: bytes


def boundary_of(content_type: str) -> bytes:
    media_type = content_type.split(";")[0].strip().lower()
    match = _BOUNDARY.search(content_type)
    if not media_type.startswith("multipart/") or not match:
        raise InvalidRequest("the body must be multipart/mixed with a boundary parameter")
    return (match.group(1) or match.group(2)).encode("latin-1")


def parse(content_type: str, body: bytes, *, max_parts: int) -> list[Part]:
    """The parts of ``body``; at most ``max_parts`` of them."""
    delimiter = b"--" + boundary_of(content_type)
    if body.startswith(delimiter):
        body = b"\r\n" + body
    chunks = body.split(b"\r\n" + delimiter)
    if len(chunks) < 2 or not chunks[-1].startswith(b"--"):
        raise InvalidRequest("the multipart body ends before its close delimiter")
    parts = [_part(chunk) for chunk in chunks[1:-1]]
    if not parts or len(parts) > max_parts:
        raise InvalidRequest(f"send 1 to {max_parts} parts")
    return parts


def _part(chunk: bytes) -> Part:
    line_end = chunk.find(b"\r\n")
    if line_end < 0 or chunk[:line_end].strip(b" \t"):
        raise InvalidRequest("malformed multipart delimiter line")
    rest = chunk[line_end + 2 :]
    if rest.startswith(b"\r\n"):  # a part without headers
        return Part({}, rest[2:])
    head, separator, body = rest.partition(b"\r\n\r\n")
    if not separator:
        raise InvalidRequest("a multipart part has no blank line after its headers")
    headers: dict[str, str] = {}
    for line in head.decode("latin-1").split("\r\n"):
        name, colon, value = line.partition(":")
        if not colon or not name.strip():
            raise InvalidRequest(f"malformed multipart header line {line[:100]!r}")
        headers[name.strip().lower()] = value.strip()
    return Part(headers, body)


@dataclass(frozen=True)
class OutPart:
    """One part of an answer: its headers and its body, bytes or a blob streamed from storage."""

    headers: dict[str, str]
    body: bytes | Blob

    @property
    def size(self) -> int:
        return len(self.body) if isinstance(self.body, bytes) else self.body.info.size


def stream(parts: Sequence[OutPart]) -> tuple[Iterator[bytes], int, str]:
    """(body chunks, Content-Length, Content-Type) of a multipart/mixed answer of ``parts``.

    Every blob is closed once the body is read through, or abandoned by a client that left.
    """
    boundary = secrets.token_hex(16)
    heads = []
    for part in parts:
        headers = {**part.headers, "Content-Length": str(part.size)}
        lines = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        heads.append(f"--{boundary}\r\n{lines}\r\n".encode("latin-1"))
    closing = f"--{boundary}--\r\n".encode()
    length = sum(len(head) + part.size + 2 for head, part in zip(heads, parts, strict=True))

    def body() -> Iterator[bytes]:
        try:
            for head, part in zip(heads, parts, strict=True):
                yield head
                if isinstance(part.body, bytes):
                    yield part.body
                else:
                    yield from part.body.iter_chunks()
                yield b"\r\n"
            yield closing
        finally:
            for part in parts:
                if not isinstance(part.body, bytes):
                    part.body.close()

    return body(), length + len(closing), f"multipart/mixed; boundary={boundary}"
