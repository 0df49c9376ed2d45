"""The rules for keys, list prefixes, metadata and content types, shared by every backend.

A key is at most 1024 characters of ``/``-separated segments. Each segment is non-empty, is not
``.`` or ``..``, and has no backslash and no control character (below 0x20, or 0x7f). A key does
not start with ``/`` or a drive (``C:``), so it can never name an absolute path, and it must be
encodable as UTF-8. These rules let a key be a relative file path or an S3 object name unchanged.

Metadata is a small ``str -> str`` mapping: names match ``[a-z0-9_-]{1,64}``, values are printable
ASCII (0x20-0x7e) of at most 1024 characters, and names plus values total at most 2 KiB. A content
type is 1 to 1024 printable ASCII characters, without leading or trailing spaces.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from .errors import InvalidKey, InvalidMetadata

MAX_KEY_CHARS = 1024
MAX_METADATA_VALUE_CHARS = 1024
MAX_METADATA_TOTAL_CHARS = 2048
MAX_CONTENT_TYPE_CHARS = 1024

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_DRIVE = re.compile(r"^[A-Za-z]:")
_METADATA_NAME = re.compile(r"[a-z0-9_-]{1,64}")
_PRINTABLE_ASCII = re.compile(r"[\x20-\x7e]*")


def validate_key(key: str) -> str:
    """Return ``key`` unchanged if it follows the key rules, else raise :class:`InvalidKey`."""
    reason = _key_problem(key)
    if reason:
        raise InvalidKey(key if isinstance(key, str) else repr(key), reason)
    return key


def is_valid_key(key: str) -> bool:
    """Whether ``key`` follows the key rules (for filtering names found in a backend)."""
    return not _key_problem(key)


def validate_prefix(prefix: str) -> str:
    """Return ``prefix`` if it is empty or a valid key, optionally ending with one ``/``."""
    if prefix == "":
        return prefix
    validate_key(prefix[:-1] if prefix.endswith("/") and len(prefix) > 1 else prefix)
    return prefix


def _key_problem(key: str) -> str:
    if not isinstance(key, str):
        return "a key must be a str"
    if not key:
        return "a key must not be empty"
    if len(key) > MAX_KEY_CHARS:
        return f"longer than {MAX_KEY_CHARS} characters"
    if "\\" in key:
        return "backslash is not allowed"
    if _CONTROL.search(key):
        return "control characters are not allowed"
    if key.startswith("/") or _DRIVE.match(key):
        return "absolute paths are not allowed"
    if any(segment in ("", ".", "..") for segment in key.split("/")):
        return "empty, '.' and '..' segments are not allowed"
    return "" if _encodes_as_utf8(key) else "not encodable as UTF-8"


def _encodes_as_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def validate_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    """Return a plain-dict copy of ``metadata`` ({} for None), or raise :class:`InvalidMetadata`."""
    copied = dict(metadata or {})
    total = 0
    for name, value in copied.items():
        _check_metadata_item(name, value)
        total += len(name) + len(value)
    if total > MAX_METADATA_TOTAL_CHARS:
        raise InvalidMetadata(
            f"metadata totals {total} characters; at most {MAX_METADATA_TOTAL_CHARS}"
        )
    return copied


def _check_metadata_item(name: object, value: object) -> None:
    if not isinstance(name, str) or not _METADATA_NAME.fullmatch(name):
        raise InvalidMetadata(f"metadata name {name!r} must match [a-z0-9_-]{{1,64}}")
    if not isinstance(value, str) or not _PRINTABLE_ASCII.fullmatch(value):
        raise InvalidMetadata(f"metadata value for {name!r} must be printable ASCII text")
    if len(value) > MAX_METADATA_VALUE_CHARS:
        raise InvalidMetadata(
            f"metadata value for {name!r} is longer than {MAX_METADATA_VALUE_CHARS} characters"
        )


def validate_content_type(content_type: str) -> str:
    """Return ``content_type`` if it can round-trip through every backend, else raise."""
    if (
        not isinstance(content_type, str)
        or not 0 < len(content_type) <= MAX_CONTENT_TYPE_CHARS
        or not _PRINTABLE_ASCII.fullmatch(content_type)
        or content_type != content_type.strip(" ")
    ):
        raise InvalidMetadata(
            f"content type {content_type!r} must be 1 to {MAX_CONTENT_TYPE_CHARS} printable ASCII "
            "characters without leading or trailing spaces"
        )
    return content_type
