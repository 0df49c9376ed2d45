"""The wire format of the original four Azure Functions (v0), without the HTTP: fields, ids, base64.

The blueprint ``broker.blueprints.compat`` serves the v0 endpoints; this module holds what it
needs to read and write their bodies, and knows no Flask. docs/compat-azureml.md tells the story.

- **Fields** come from the query string first, else from the body parsed as JSON whatever its
  Content-Type, leniently as Newtonsoft.Json did: :func:`parse_body` also takes single-quoted
  strings, unquoted names and trailing commas (the C# client sends ``{'payload': '...'}``).
- **Base64** is the standard alphabet with padding. :func:`decode_base64` ignores whitespace as
  .NET's ``Convert.FromBase64String`` did, and reads a space in a query-string value as the ``+``
  that URL decoding turned into it. :func:`base64_chunks` encodes a stream as it goes.
- **Ids**: a v0 client holds ``<guid>.payload``, the form the original ids had. The GUID is the
  inferbox task id itself (its 16 random bytes), so the mapping needs no storage and an imported
  ``inboxv0/<guid>.payload`` blob keeps the id its client already holds. A v0 worker is handed
  ``<guid>.<lease id>.payload``, so the result it posts is checked against its own lease.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import uuid
from collections.abc import Iterable, Iterator
from typing import Any, NoReturn

from .errors import InvalidRequest, TaskNotFound
from .options import TASK_ID

SENTINEL = base64.b64encode(b"task_id not found!").decode()  # "dGFza19pZCBub3QgZm91bmQh"
PAYLOAD_SUFFIX = ".payload"

# The original functions' own messages for a missing field.
MISSING_PAYLOAD = "Please send the payload!"
MISSING_TASK_ID = "Please pass a task_id on the query string or in the request body"
MISSING_TASK_ID_AND_RESULT = (
    "Please pass a task_id and result on the query string or in the request body"
)

GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
LEASE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_ENCODE_CHUNK = 3 * 65536  # a multiple of 3: chunks encode without padding in between

# -- ids ----------------------------------------------------------------------------------------


def task_guid(task_id: str) -> str:
    """The GUID form of a task id: its 16 bytes as a GUID; an id of another form is kept."""
    try:
        raw = base64.urlsafe_b64decode(task_id + "==")
    except (binascii.Error, ValueError):
        return task_id
    if len(raw) != 16 or base64.urlsafe_b64encode(raw).rstrip(b"=").decode() != task_id:
        return task_id
    return str(uuid.UUID(bytes=raw))


def client_id(task_id: str) -> str:
    """What ``predict_v0`` answers: ``<guid>.payload``."""
    return task_guid(task_id) + PAYLOAD_SUFFIX


def worker_id(task_id: str, lease_id: str) -> str:
    """What ``getnexttask_v0`` answers before the ``|``: ``<guid>.<lease id>.payload``."""
    return f"{task_guid(task_id)}.{lease_id}{PAYLOAD_SUFFIX}"


def parse_id(text: str) -> tuple[str, str | None]:
    """(task id, lease id or None) from a v0 id; raises TaskNotFound for anything else.

    Takes ``<guid>``, ``<guid>.payload``, ``<guid>.<lease>.payload`` and the same with an
    inferbox task id in place of the GUID.
    """
    parts = text.split(".")
    if parts[-1] == PAYLOAD_SUFFIX[1:] and len(parts) > 1:
        parts.pop()
    if len(parts) > 2 or (len(parts) == 2 and not LEASE_ID.fullmatch(parts[1])):
        raise TaskNotFound(f"no task {text[:80]!r}")
    ref, lease_id = parts[0], (parts[1] if len(parts) == 2 else None)
    if GUID.fullmatch(ref):
        task_id = base64.urlsafe_b64encode(uuid.UUID(ref).bytes).rstrip(b"=").decode()
    elif TASK_ID.fullmatch(ref):
        task_id = ref
    else:
        raise TaskNotFound(f"no task {text[:80]!r}")
    return task_id, lease_id


# -- base64 -------------------------------------------------------------------------------------


def decode_base64(name: str, text: str, *, from_query: bool) -> bytes:
    """The bytes of a standard base64 field; raises InvalidRequest naming the field."""
    if from_query:
        text = text.replace(" ", "+")  # URL decoding turned an unescaped '+' into a space
    compact = "".join(text.split())
    if len(compact) % 4 or not _BASE64.fullmatch(compact):
        raise InvalidRequest(f"{name} is not valid base64")
    return base64.b64decode(compact)


def base64_length(size: int) -> int:
    return 4 * ((size + 2) // 3)


def base64_chunks(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Encode a stream of bytes as one base64 text, chunk by chunk; closes ``chunks`` at the end."""
    pending = b""
    try:
        for chunk in chunks:
            data = pending + chunk
            cut = len(data) - len(data) % 3
            for start in range(0, cut, _ENCODE_CHUNK):
                yield base64.b64encode(data[start : min(start + _ENCODE_CHUNK, cut)])
            pending = data[cut:]
        if pending:
            yield base64.b64encode(pending)
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()


# -- bodies -------------------------------------------------------------------------------------


def parse_body(raw: bytes) -> dict[str, Any]:
    """The fields of a v0 body: a JSON object, as leniently as Newtonsoft.Json read it.

    An empty body has no fields. Raises InvalidRequest for a body that is not such an object.
    """
    text = raw.decode("utf-8-sig", errors="replace").strip()
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        value = _LenientJson(text).document()
    if not isinstance(value, dict):
        raise InvalidRequest("the body must be a JSON object of fields")
    return value


class _LenientJson:
    """JSON plus what Newtonsoft.Json also reads: 'single-quoted' strings, unquoted property
    names, trailing commas, ``undefined``. Strings are matched by regular expression, so a
    payload of many megabytes costs no per-character Python loop."""

    _SPACE = re.compile(r"\s*")
    _STRING = {
        '"': re.compile(r'"([^"\\]*(?:\\.[^"\\]*)*)"', re.DOTALL),
        "'": re.compile(r"'([^'\\]*(?:\\.[^'\\]*)*)'", re.DOTALL),
    }
    _NAME = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*")
    _NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
    _WORDS = {"true": True, "false": False, "null": None, "undefined": None}
    MAX_DEPTH = 32

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def document(self) -> Any:
        value = self._value(0)
        self._skip()
        if self.pos != len(self.text):
            self._fail("unexpected text after the value")
        return value

    def _fail(self, what: str) -> NoReturn:
        raise InvalidRequest(f"the body is not JSON: {what} at character {self.pos}")

    def _skip(self) -> None:
        self.pos = self._SPACE.match(self.text, self.pos).end()  # type: ignore[union-attr]

    def _peek(self) -> str:
        self._skip()
        return self.text[self.pos : self.pos + 1]

    def _value(self, depth: int) -> Any:
        if depth > self.MAX_DEPTH:
            self._fail("nesting too deep")
        char = self._peek()
        if char == "{":
            return self._object(depth)
        if char == "[":
            return self._array(depth)
        if char in self._STRING:
            return self._string()
        number = self._NUMBER.match(self.text, self.pos)
        if number:
            self.pos = number.end()
            return json.loads(number.group())
        name = self._NAME.match(self.text, self.pos)
        if name and name.group() in self._WORDS:
            self.pos = name.end()
            return self._WORDS[name.group()]
        self._fail("expected a value")

    def _string(self) -> str:
        quote = self.text[self.pos]
        match = self._STRING[quote].match(self.text, self.pos)
        if match is None:
            self._fail("unterminated string")
        self.pos = match.end()
        body = match.group(1)
        if "\\" not in body and '"' not in body:
            return body
        as_json = re.sub(r'\\(.)|"', _to_json_escape, body, flags=re.DOTALL)
        try:
            return str(json.loads(f'"{as_json}"', strict=False))
        except ValueError:
            self._fail("bad escape in a string")

    def _name(self) -> str:
        if self._peek() in self._STRING:
            return self._string()
        match = self._NAME.match(self.text, self.pos)
        if match is None:
            self._fail("expected a property name")
        self.pos = match.end()
        return match.group()

    def _object(self, depth: int) -> dict[str, Any]:
        self.pos += 1
        fields: dict[str, Any] = {}
        while self._peek() != "}":
            name = self._name()
            if self._peek() != ":":
                self._fail("expected ':'")
            self.pos += 1
            fields[name] = self._value(depth + 1)
            if not self._comma_or("}"):
                break
        self._close("}")
        return fields

    def _array(self, depth: int) -> list[Any]:
        self.pos += 1
        items: list[Any] = []
        while self._peek() != "]":
            items.append(self._value(depth + 1))
            if not self._comma_or("]"):
                break
        self._close("]")
        return items

    def _comma_or(self, closing: str) -> bool:
        char = self._peek()
        if char == ",":
            self.pos += 1
            return True
        if char != closing:
            self._fail(f"expected ',' or '{closing}'")
        return False

    def _close(self, closing: str) -> None:
        if self._peek() != closing:
            self._fail(f"expected '{closing}'")
        self.pos += 1


def _to_json_escape(match: re.Match[str]) -> str:
    escaped = match.group(1)
    if escaped is None:  # a bare double quote inside a single-quoted string
        return '\\"'
    return "'" if escaped == "'" else "\\" + escaped
