"""Payloads named by URL: a submit may point the broker at a blob instead of sending its bytes.

``INFERBOX_PAYLOAD_SOURCES`` lists the storage URLs under which clients may name payloads, such
as ``s3://scans/incoming`` or ``az://uploads/{owner}``; with none listed, every reference is
refused. A submit whose ``Content-Type`` is ``application/vnd.inferbox.payload-ref+json`` and
whose body is ``{"url": "s3://scans/incoming/cat.png"}`` makes the broker copy that blob into
its own inbox, streaming, server-side: the bytes never pass through the client, and the task
stays whole whatever happens to the source afterwards (the index can be rebuilt from the
inbox, and a retry reads the same bytes).

What keeps it safe:

- a URL is served only if it lies under a listed source, segment by segment
  (``s3://scans/in`` does not cover ``s3://scans/inside/x``), and its key follows the storage
  key rules, so ``..``, empty segments and backslashes cannot climb out of it;
- ``{owner}`` in a source stands for the caller's owner id (``t-`` and the first 16 hex digits
  of the SHA-256 of its token; ``anonymous`` on an open broker), so each token reads only
  its own prefix and never another tenant's;
- a source may not cover the broker's own tasks (its store, or the ``inbox/``, ``outbox/``
  and ``state/`` folders inside it), checked at start-up;
- ``file://`` sources are refused: the broker's file store keeps a format of its own, and a
  client on the same machine can send the bytes itself;
- a URL outside the sources is refused before anything is read, so a refusal tells nothing
  about what exists there.
"""

from __future__ import annotations

import mimetypes
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from storage import (
    Blob,
    BlobNotFound,
    BlobStore,
    InvalidKey,
    StorageError,
    open_store,
    validate_key,
)
from storage.registry import SCHEMES

from . import keys as K
from .errors import PayloadTooLarge, SettingsError, SourceRefused

REFERENCE_TYPE = "application/vnd.inferbox.payload-ref+json"
OWNER = "{owner}"
BROKER_FOLDERS = (K.INBOX, K.OUTBOX, "state")  # what the broker writes in its own store
_GENERIC_TYPES = frozenset({"", "application/octet-stream", "binary/octet-stream"})
_MAX_URL = 2048


@dataclass(frozen=True)
class _Location:
    """A storage URL taken apart: scheme, container (bucket, name) and key segments."""

    scheme: str
    netloc: str
    segments: tuple[str, ...]

    @classmethod
    def parse(cls, url: str) -> _Location:
        """Raises ValueError for anything but ``scheme://container[/segment...]``."""
        parts = urlsplit(url)
        if parts.query or parts.fragment or not parts.netloc or "\\" in url:
            raise ValueError("use scheme://container/path, without query or fragment")
        path = parts.path.strip("/")
        return cls(parts.scheme.lower(), parts.netloc, tuple(path.split("/")) if path else ())

    def text(self) -> str:
        return "/".join([f"{self.scheme}://{self.netloc}", *self.segments])


def _same_until_either_ends(a: Sequence[str], b: Sequence[str]) -> bool:
    """Whether one segment list is a prefix of the other; an ``{owner}`` segment matches any."""
    return all(x == y or OWNER in x or OWNER in y for x, y in zip(a, b, strict=False))


class PayloadSources:
    """The allowed sources, and the stores opened to read them (one per container)."""

    def __init__(self, urls: Sequence[str] = (), *, own_store: str = "") -> None:
        self._roots = [self._root(url) for url in urls]
        if own_store:
            self._check_apart(own_store)
        self._stores: dict[tuple[str, str], BlobStore] = {}
        self._lock = threading.Lock()

    def __bool__(self) -> bool:
        return bool(self._roots)

    @staticmethod
    def _root(url: str) -> _Location:
        try:
            root = _Location.parse(url)
        except ValueError as exc:
            raise SettingsError(f"INFERBOX_PAYLOAD_SOURCES: bad URL {url!r}: {exc}") from None
        if root.scheme == "file" or root.scheme not in SCHEMES:
            raise SettingsError(f"INFERBOX_PAYLOAD_SOURCES: {url!r}: sources are s3://, az:// "
                                "or memory:// URLs (a client sends local files itself)")
        if any(segment in ("", ".", "..") for segment in root.segments) or OWNER in root.netloc:
            raise SettingsError(f"INFERBOX_PAYLOAD_SOURCES: {url!r}: empty, '.' or '..' "
                                "segments, or {owner} in the container name")
        return root

    def _check_apart(self, own_store: str) -> None:
        """Refuse a source that covers the broker's own tasks."""
        try:
            own = _Location.parse(own_store)
        except ValueError:
            return  # file:relative and memory:// stores: no source can name them
        for root in self._roots:
            if (root.scheme, root.netloc) != (own.scheme, own.netloc):
                continue
            if not _same_until_either_ends(root.segments, own.segments):
                continue
            inside = root.segments[len(own.segments):]
            if not inside or OWNER in inside[0] or inside[0] in BROKER_FOLDERS:
                raise SettingsError(
                    f"INFERBOX_PAYLOAD_SOURCES: {root.text()} covers the broker's own store "
                    f"{own.text()} (its tasks' payloads and results): name a folder beside them"
                )

    def open(self, reference: Mapping[str, Any], owner: str, *, max_bytes: int) -> tuple[Blob, str]:
        """The blob ``reference["url"]`` names and the payload's content type.

        Raises SourceRefused (outside the sources, malformed, missing or unreadable) and
        PayloadTooLarge (over ``max_bytes``); an open blob is the caller's to close.
        """
        url, content_type = _fields(reference)
        location = self._allowed(url, owner)
        store = self._store(location.scheme, location.netloc)
        key = "/".join(location.segments)
        try:
            blob = store.get(key)
        except BlobNotFound:
            raise SourceRefused(f"no blob at {url}") from None
        except InvalidKey as exc:
            raise SourceRefused(f"{url} cannot name a blob: {exc.reason}") from None
        except StorageError as exc:
            raise SourceRefused(f"the broker could not read {url}: {exc}") from None
        if blob.info.size > max_bytes:
            blob.close()
            raise PayloadTooLarge(f"{url} holds {blob.info.size} bytes; the limit is {max_bytes} "
                                  "(INFERBOX_MAX_PAYLOAD_BYTES)")  # fmt: skip
        return blob, content_type or _content_type(blob.info.content_type, key)

    def _allowed(self, url: str, owner: str) -> _Location:
        try:
            location = _Location.parse(url)
            validate_key("/".join(location.segments))  # no '..', '.' or empty segments
        except (ValueError, InvalidKey) as exc:
            raise SourceRefused(f"bad payload URL {url[:200]!r}: {exc}") from None
        for root in self._roots:
            expanded = tuple(segment.replace(OWNER, owner) for segment in root.segments)
            if ((location.scheme, location.netloc) == (root.scheme, root.netloc)
                    and len(location.segments) > len(expanded)
                    and location.segments[:len(expanded)] == expanded):  # fmt: skip
                return location
        if not self._roots:
            raise SourceRefused("this broker reads no payloads by URL (INFERBOX_PAYLOAD_SOURCES)")
        raise SourceRefused(f"{url} is not under a payload source this token may read "
                            "(INFERBOX_PAYLOAD_SOURCES)")  # fmt: skip

    def _store(self, scheme: str, netloc: str) -> BlobStore:
        with self._lock:
            store = self._stores.get((scheme, netloc))
            if store is None:
                try:
                    store = open_store(f"{scheme}://{netloc}")
                except StorageError as exc:
                    raise SourceRefused(f"the broker cannot open {scheme}://{netloc}: {exc}") \
                        from None
                self._stores[(scheme, netloc)] = store
            return store


def _fields(reference: Mapping[str, Any]) -> tuple[str, str]:
    url, content_type = reference.get("url"), reference.get("content_type", "")
    if not isinstance(url, str) or not 0 < len(url) <= _MAX_URL:
        raise SourceRefused(f'a payload reference is {{"url": "<storage URL>"}}, the URL at most '
                            f"{_MAX_URL} characters")  # fmt: skip
    if not isinstance(content_type, str):
        raise SourceRefused("content_type of a payload reference must be a string")
    return url, content_type


def _content_type(stored: str, key: str) -> str:
    """The blob's own type, unless it is a generic one and the name says better."""
    if stored.split(";")[0].strip().lower() not in _GENERIC_TYPES:
        return stored
    return mimetypes.guess_type(key)[0] or "application/octet-stream"
