"""Python values to HTTP bodies and back: the one place that pairs types with Content-Types.

The worker and the client share it, so what a handler returns is what ``Task.result()`` gives.

Encoding (what ``Client.submit`` sends and what a worker posts as a result):

=========================================== ======================================
Python value                                Content-Type
=========================================== ======================================
``bytes``, ``bytearray``, ``memoryview``    ``application/octet-stream``
``str``                                     ``text/plain; charset=utf-8``
``numpy.ndarray``                           ``application/x-npy`` (``numpy.save``), or
                                            ``image/png`` / ``image/jpeg`` when asked
``PIL.Image.Image``                         ``image/png`` (or ``image/jpeg`` when asked)
``dict``, ``list``, ``tuple``, ``int``,     ``application/json``
``float``, ``bool``, ``None``, numpy scalar
``Encoded(body, content_type)``             sent as it is, with its own type
``PayloadRef(url)``                         the blob's URL, for the broker to read
                                            (``application/vnd.inferbox.payload-ref+json``)
a file path (``pathlib.Path``)              the file's bytes, typed by its extension
=========================================== ======================================

Decoding goes by Content-Type: ``application/json`` (and any ``+json`` type) gives the parsed
object, ``text/*`` a ``str`` in the declared charset (UTF-8 by default), ``application/x-npy``
a numpy array, ``image/*`` the raw bytes, a numpy array or a PIL image (the caller says which:
workers get arrays, clients bytes unless they ask), anything else the raw ``bytes``.

numpy and Pillow are imported only when a value or a body needs them: the client SDK works
without either for JSON, text and bytes.
"""

from __future__ import annotations

import codecs
import io
import json
import mimetypes
import os
import sys
from pathlib import Path
from typing import Any, Literal, NamedTuple

from client_sdk.http import parse_content_type

__all__ = [
    "BINARY",
    "JPEG",
    "JSON",
    "NPY",
    "PNG",
    "TEXT",
    "REFERENCE",
    "Encoded",
    "ImageAs",
    "PayloadRef",
    "decode",
    "dump_json",
    "encode",
    "file_type",
    "is_image",
    "read_file",
    "stack",
]

JSON = "application/json"
TEXT = "text/plain; charset=utf-8"
BINARY = "application/octet-stream"
NPY = "application/x-npy"
PNG = "image/png"
JPEG = "image/jpeg"
REFERENCE = "application/vnd.inferbox.payload-ref+json"
_IMAGE_FORMATS = {PNG: "PNG", JPEG: "JPEG"}
_EXTRA_TYPES = {".npy": NPY, ".json": JSON, ".webp": "image/webp"}

ImageAs = Literal["bytes", "array", "pil"]


class Encoded(NamedTuple):
    """A body ready to send, and the Content-Type that describes it.

    A handler that returns one has its bytes posted untouched with that type.
    """

    body: bytes
    content_type: str


class PayloadRef(NamedTuple):
    """A payload already in blob storage, named by its URL (``s3://bucket/in/cat.png``).

    Submitted, only the URL travels: the broker reads the blob itself and copies it into the
    task, if its ``INFERBOX_PAYLOAD_SOURCES`` let this token name it (else ``BadRequest`` with
    ``error == "source_refused"``). ``content_type`` overrides the blob's own type.
    """

    url: str
    content_type: str | None = None

    def encoded(self) -> Encoded:
        fields = {"url": self.url}
        if self.content_type:
            fields["content_type"] = self.content_type
        return Encoded(dump_json(fields), REFERENCE)


def _numpy() -> Any:
    """The numpy module if something already imported it, else ``None``."""
    return sys.modules.get("numpy")


def _pil_image_class() -> Any:
    module = sys.modules.get("PIL.Image")
    return getattr(module, "Image", None) if module is not None else None


def _import(name: str, extra: str) -> Any:
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise ImportError(f"{name} is needed for this; pip install 'inferbox[{extra}]'") from exc


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


def _image_bytes(value: Any, content_type: str) -> bytes:
    """A numpy array (HxW, HxWx3 or HxWx4; uint8, or bool for masks) or a PIL image as PNG/JPEG."""
    image_module = _import("PIL.Image", "images")
    image = value
    if not isinstance(value, image_module.Image):
        array = value
        if array.dtype == bool:
            array = array.astype("uint8") * 255
        if array.dtype != _numpy().uint8:
            raise TypeError(f"an image array must be uint8 or bool, not {array.dtype}")
        if array.ndim == 3 and array.shape[2] == 1:
            array = array[:, :, 0]
        if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
            raise TypeError(f"an image array must be HxW, HxWx3 or HxWx4, not {array.shape}")
        image = image_module.fromarray(array)
    if content_type == JPEG and image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format=_IMAGE_FORMATS[content_type])
    return buffer.getvalue()


def encode(value: Any, *, array_type: str | None = None) -> Encoded:
    """``value`` as a body and its Content-Type, per the table in the module docstring.

    ``array_type`` says how numpy arrays and PIL images travel: ``image/png``,
    ``image/jpeg``, ``application/x-npy`` or ``application/json`` (default: .npy for arrays,
    PNG for images). Raises ``TypeError`` for any other type and ``ValueError`` for NaN or
    infinity in JSON.
    """
    if isinstance(value, Encoded):
        return value
    if isinstance(value, PayloadRef):
        return value.encoded()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return Encoded(bytes(value), BINARY)
    if isinstance(value, str):
        return Encoded(value.encode("utf-8"), TEXT)
    if isinstance(value, os.PathLike):
        return read_file(value)
    np = _numpy()
    image_class = _pil_image_class()
    is_array = np is not None and isinstance(value, np.ndarray)
    if is_array or (image_class is not None and isinstance(value, image_class)):
        return _encode_picture(value, array_type or (NPY if is_array else PNG))
    json_types = (dict, list, tuple, int, float, bool, type(None))
    if isinstance(value, json_types) or (np is not None and isinstance(value, np.generic)):
        return Encoded(dump_json(value), JSON)
    raise TypeError(
        f"cannot encode a {type(value).__name__}: return bytes, str, a JSON-able value, "
        "a numpy array, a PIL image or Encoded(body, content_type)"
    )


def _encode_picture(value: Any, content_type: str) -> Encoded:
    if content_type in _IMAGE_FORMATS:
        return Encoded(_image_bytes(value, content_type), content_type)
    array = value if _numpy() is not None and isinstance(value, _numpy().ndarray) else None
    if array is None:
        array = _import("numpy", "images").asarray(value)
    if content_type == NPY:
        return Encoded(_npy(array), NPY)
    if content_type == JSON:
        return Encoded(dump_json(array.tolist()), JSON)
    raise ValueError(f"cannot send arrays as {content_type!r}: use image/png, image/jpeg, "
                     "application/x-npy or application/json")  # fmt: skip


def read_file(path: str | os.PathLike[str]) -> Encoded:
    """A file's bytes, typed by its extension (``file_type``)."""
    return Encoded(Path(path).read_bytes(), file_type(path))


def file_type(path: str | os.PathLike[str]) -> str:
    """The media type of a file by its extension (``application/octet-stream`` when unknown)."""
    file = Path(path)
    suffix = file.suffix.lower()
    content_type = _EXTRA_TYPES.get(suffix) or mimetypes.guess_type(file.name)[0] or BINARY
    if content_type.startswith("text/"):
        content_type += "; charset=utf-8"
    return content_type


def _charset(params: dict[str, str]) -> str:
    charset = params.get("charset", "utf-8")
    try:
        return codecs.lookup(charset).name
    except LookupError:
        return "utf-8"


def is_image(content_type: str | None) -> bool:
    return parse_content_type(content_type)[0].startswith("image/")


def decode(body: bytes, content_type: str | None, *, images: ImageAs = "bytes") -> Any:
    """The Python value a body stands for, by its Content-Type (see the module docstring).

    ``images`` says what ``image/*`` bodies become: ``bytes`` (untouched), ``array`` (a numpy
    uint8 array, HxW or HxWxC) or ``pil`` (a ``PIL.Image.Image``). Raises ``ValueError`` when
    the body is not what its type declares (invalid JSON, text that is not in its charset, a
    broken .npy or image).
    """
    media_type, params = parse_content_type(content_type)
    if media_type == "application/json" or media_type.endswith("+json"):
        return json.loads(body)
    if media_type.startswith("text/"):
        return body.decode(_charset(params))
    if media_type == NPY:
        return _load_npy(body)
    if media_type.startswith("image/") and images != "bytes":
        return _load_image(body, images)
    return body


def _load_npy(body: bytes) -> Any:
    np = _import("numpy", "images")
    try:
        return np.load(io.BytesIO(body), allow_pickle=False)
    except (OSError, EOFError) as exc:  # numpy's way of saying "not an .npy file"
        raise ValueError(f"not a valid .npy body: {exc}") from exc


def _load_image(body: bytes, images: ImageAs) -> Any:
    image_module = _import("PIL.Image", "images")
    try:
        image = image_module.open(io.BytesIO(body))
        image.load()
    except (OSError, image_module.DecompressionBombError) as exc:
        raise ValueError(f"not a readable image: {exc}") from exc
    if images == "pil":
        return image
    if image.mode not in ("L", "RGB", "RGBA", "1", "I;16", "I", "F"):
        image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
    return _import("numpy", "images").asarray(image)


def stack(values: list[Any]) -> Any:
    """One numpy array of ``values`` along a new first axis when they are all arrays of one
    shape and dtype; otherwise ``values`` unchanged (a list)."""
    np = _numpy()
    if np is None or not values or not all(isinstance(v, np.ndarray) for v in values):
        return values
    first = values[0]
    if any(v.shape != first.shape or v.dtype != first.dtype for v in values):
        return values
    return np.stack(values)
