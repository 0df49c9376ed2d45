"""Python values to HTTP bodies and back: the one place that pairs types with Content-Types.

Encoding (what ``Client.submit`` sends and what a worker posts as a result):

=========================================== ======================================
Python value                                Content-Type
=========================================== ======================================
``bytes``, ``bytearray``, ``memoryview``    ``application/octet-stream``
``str``                                     ``text/plain; charset=utf-8``
``numpy.ndarray``                           ``application/x-npy`` (``numpy.save``)
``dict``, ``list``, ``tuple``, ``int``,     ``application/json``
``float``, ``bool``, ``None``, numpy scalar
=========================================== ======================================

Decoding goes by Content-Type: ``application/json`` (and any ``+json`` type) gives the parsed
object, ``text/*`` a ``str`` in the declared charset (UTF-8 by default), anything else the
raw ``bytes``. numpy is never imported here: arrays are recognised only when the caller
already has numpy loaded.
"""

from __future__ import annotations

import codecs
import io
import json
import sys
from typing import Any, NamedTuple

from client_sdk.http import parse_content_type

__all__ = ["BINARY", "JSON", "NPY", "TEXT", "Encoded", "decode", "dump_json", "encode"]

JSON = "application/json"
TEXT = "text/plain; charset=utf-8"
BINARY = "application/octet-stream"
NPY = "application/x-npy"


class Encoded(NamedTuple):
    """A body ready to send, and the Content-Type that describes it."""

    body: bytes
    content_type: str


def _numpy() -> Any:
    """The numpy module if something already imported it, else ``None``."""
    return sys.modules.get("numpy")


def _json_default(value: Any) -> Any:
    np = _numpy()
    if np is not None and isinstance(value, np.ndarray):
        return value.tolist()
    if np is not None and isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def dump_json(value: Any) -> bytes:
    """Compact UTF-8 JSON; numpy scalars and arrays inside become numbers and lists.

    NaN and infinities raise ``ValueError``: they are not JSON, and other languages'
    parsers reject them.
    """
    text = json.dumps(
        value, default=_json_default, ensure_ascii=False, allow_nan=False, separators=(",", ":")
    )
    return text.encode("utf-8")


def _npy(array: Any) -> bytes:
    buffer = io.BytesIO()
    _numpy().save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def encode(value: Any) -> Encoded:
    """``value`` as a body and its Content-Type, per the table in the module docstring.

    Raises ``TypeError`` for any other type and ``ValueError`` for NaN or infinity in JSON.
    """
    if isinstance(value, (bytes, bytearray, memoryview)):
        return Encoded(bytes(value), BINARY)
    if isinstance(value, str):
        return Encoded(value.encode("utf-8"), TEXT)
    np = _numpy()
    if np is not None and isinstance(value, np.ndarray):
        return Encoded(_npy(value), NPY)
    json_types = (dict, list, tuple, int, float, bool, type(None))
    if isinstance(value, json_types) or (np is not None and isinstance(value, np.generic)):
        return Encoded(dump_json(value), JSON)
    raise TypeError(
        f"cannot encode a {type(value).__name__}: return bytes, str, a JSON-able value "
        "or a numpy array"
    )


def _charset(params: dict[str, str]) -> str:
    charset = params.get("charset", "utf-8")
    try:
        return codecs.lookup(charset).name
    except LookupError:
        return "utf-8"


def decode(body: bytes, content_type: str | None) -> Any:
    """The Python value a body stands for, by its Content-Type (see the module docstring).

    Raises ``ValueError`` when the body is not what its type declares (invalid JSON, text
    that is not in its charset).
    """
    media_type, params = parse_content_type(content_type)
    if media_type == "application/json" or media_type.endswith("+json"):
        return json.loads(body)
    if media_type.startswith("text/"):
        return body.decode(_charset(params))
    return body
