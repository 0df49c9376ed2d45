"""Where a batch job reads its inputs and writes its results: local folders or storage prefixes.

A location is a folder (``scans/``, ``file:///data/scans``), a glob (``'scans/**/*.png'``, inputs
only) or a storage prefix (``s3://bucket/in/``, ``az://container/in/``). Storage goes through the
``storage`` package, imported only when a storage URL is used, so ``import client_sdk`` stays
light (boto3 comes with ``inferbox[s3]``, the Azure SDK with ``inferbox[azure]``).

Each output location also keeps the job's journal: a ``.inferbox-batch.jsonl`` file in a folder;
under a storage prefix, small JSON-lines objects in ``.inferbox-batch/``, one per flush (written
at most every second and at the end), since objects cannot be appended to.
"""

from __future__ import annotations

import glob
import hashlib
import json
import mimetypes
import os
import re
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from urllib.request import url2pathname

from client_sdk.codec import Encoded, PayloadRef

__all__ = ["JOURNAL", "Folder", "FolderOutput", "Prefix", "PrefixOutput", "find_inputs",
           "open_inputs", "open_output"]  # fmt: skip

JOURNAL = ".inferbox-batch.jsonl"
JOURNAL_FOLDER = ".inferbox-batch/"
FLUSH_EVERY = 1.0  # seconds between journal flushes to a storage prefix
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_GENERIC_TYPES = frozenset({"", "application/octet-stream", "binary/octet-stream"})


def is_storage_url(location: str) -> bool:
    """Whether ``location`` names a storage prefix (any URL but ``file://``)."""
    return bool(_URL.match(location)) and not location.lower().startswith("file://")


def local_path(location: str | Path) -> Path:
    """A folder or glob as a path; ``file://`` URLs included."""
    text = str(location)
    if text.lower().startswith("file://"):
        return Path(url2pathname(urlsplit(text).path))
    return Path(text)


def _hidden(relative: str) -> bool:
    return any(part.startswith(".") for part in relative.split("/"))


class _Place:
    """A storage prefix: the store of its container, opened once, and the prefix in it."""

    def __init__(self, url: str) -> None:
        from storage import open_store  # only here: batches over folders never import storage

        parts = urlsplit(url)
        if not parts.netloc or parts.query or parts.fragment:
            raise OSError(f"bad storage URL {url!r}: use scheme://container/prefix/")
        self.root = f"{parts.scheme}://{parts.netloc}"
        self.prefix = parts.path.strip("/") + "/" if parts.path.strip("/") else ""
        with storage_errors():
            self.store = open_store(self.root)

    def names(self, under: str = "") -> list[str]:
        """The names (keys without the prefix) under the prefix, or under ``under`` in it."""
        with storage_errors():
            return [key[len(self.prefix):] for key in self.store.list(self.prefix + under)]

    def key(self, name: str) -> str:
        return self.prefix + name

    def url(self, name: str) -> str:
        return f"{self.root}/{self.key(name)}"


@contextmanager
def storage_errors() -> Iterator[None]:
    """Storage failures as ``OSError``, like those of files: one kind of I/O error to handle."""
    from storage import StorageError

    try:
        yield
    except StorageError as exc:
        raise OSError(str(exc)) from exc


# -- inputs -----------------------------------------------------------------------------------


def find_inputs(source: str) -> tuple[Path, list[Path]]:
    """(base folder, input files): every file under a folder, or the files a glob matches."""
    root = local_path(source)
    if root.is_dir():
        files = [p for p in root.rglob("*")
                 if p.is_file() and not _hidden(p.relative_to(root).as_posix())]  # fmt: skip
        return root, sorted(files)
    files = sorted(Path(p) for p in glob.glob(str(root), recursive=True) if Path(p).is_file())
    if not files:
        return root.parent, []
    base = Path(os.path.commonpath([str(p.parent) for p in files]))
    return base, files


class Folder:
    """Input files on this machine; their bytes go to the broker with each submit."""

    remote = False

    def __init__(self, source: str) -> None:
        self.base, files = find_inputs(source)
        self.names = [p.relative_to(self.base).as_posix() for p in files]

    def payload(self, name: str, *, by_reference: bool = False) -> Any:
        return self.base / name  # submit reads it and types it by its extension

    def identity(self, name: str) -> str:
        """What names this input in its idempotency key: its path and its content."""
        digest = hashlib.sha256((self.base / name).read_bytes()).hexdigest()
        return f"{name}\n{digest}"


class Prefix:
    """Input blobs under a storage prefix, by default named to the broker rather than sent."""

    remote = True

    def __init__(self, url: str, *, skip: str | None = None) -> None:
        self.place = _Place(url)
        names = [name for name in self.place.names() if not _hidden(name)]
        self.names = sorted(name for name in names if not (skip and name.startswith(skip)))

    def payload(self, name: str, *, by_reference: bool = True) -> Any:
        """A reference the broker resolves, or the blob's bytes read here."""
        if by_reference:
            return PayloadRef(self.place.url(name))
        with storage_errors(), self.place.store.get(self.place.key(name)) as blob:
            return Encoded(blob.read(), guess_type(blob.info.content_type, name))

    def identity(self, name: str) -> str:
        return self.place.url(name)  # named by location: blobs are not read to be fingerprinted


def guess_type(stored: str, name: str) -> str:
    """A blob's own content type, unless it is a generic one and its name says better."""
    if stored.split(";")[0].strip().lower() not in _GENERIC_TYPES:
        return stored
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


def open_inputs(source: str, out: str) -> Folder | Prefix:
    if not is_storage_url(source):
        return Folder(source)
    base, target = source.rstrip("/") + "/", out.rstrip("/") + "/"
    skip = target[len(base):] if target.startswith(base) else None  # outputs inside inputs
    return Prefix(source, skip=skip)


# -- outputs and journals ---------------------------------------------------------------------


class _FileJournal:
    """Append-only JSON lines in a file; a torn last line (killed mid-write) is ignored."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def read(self) -> list[str]:
        return self.path.read_text(encoding="utf-8").splitlines() if self.path.exists() else []

    def write(self, line: str) -> None:
        with self._lock, self.path.open("a", encoding="utf-8") as journal:
            journal.write(line + "\n")
            journal.flush()

    def close(self) -> None:
        return None


class _StoreJournal:
    """JSON lines in objects under ``.inferbox-batch/``: each flush writes the lines since the
    last one as a new object, named so that listing returns them in order."""

    def __init__(self, place: _Place) -> None:
        self.place = place
        self._pending: list[str] = []
        self._flushed_at = time.monotonic()
        self._lock = threading.Lock()

    def read(self) -> list[str]:
        lines: list[str] = []
        for name in self.place.names(JOURNAL_FOLDER):
            with storage_errors():
                lines += self.place.store.read_bytes(self.place.key(name)).decode().splitlines()
        return lines

    def write(self, line: str) -> None:
        with self._lock:
            self._pending.append(line)
            if time.monotonic() - self._flushed_at >= FLUSH_EVERY:
                self._flush()

    def close(self) -> None:
        with self._lock:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            key = f"{JOURNAL_FOLDER}{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.jsonl"
            body = ("\n".join(self._pending) + "\n").encode("utf-8")
            with storage_errors():
                self.place.store.put(self.place.key(key), body,
                                     content_type="application/x-ndjson")  # fmt: skip
            self._pending.clear()
        self._flushed_at = time.monotonic()


class FolderOutput:
    """Results as files in a folder on this machine, written atomically."""

    def __init__(self, location: str | Path) -> None:
        self.folder = local_path(location)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.journal: _FileJournal | _StoreJournal = _FileJournal(self.folder / JOURNAL)

    def exists(self, name: str) -> bool:
        return (self.folder / name).is_file()

    def write(self, name: str, body: bytes, content_type: str) -> None:
        target = self.folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        temporary.write_bytes(body)
        os.replace(temporary, target)


class PrefixOutput:
    """Results as blobs under a storage prefix (each put is atomic)."""

    def __init__(self, url: str) -> None:
        self.place = _Place(url)
        self.journal = _StoreJournal(self.place)
        self._existing = set(self.place.names())

    def exists(self, name: str) -> bool:
        return name in self._existing

    def write(self, name: str, body: bytes, content_type: str) -> None:
        with storage_errors():
            self.place.store.put(self.place.key(name), body, content_type=content_type)


def open_output(out: str | Path) -> FolderOutput | PrefixOutput:
    text = str(out)
    return PrefixOutput(text) if is_storage_url(text) else FolderOutput(text)


def parse_journal(lines: list[str]) -> dict[str, dict[str, Any]]:
    """The latest state of each input the journal names (later lines win)."""
    state: dict[str, dict[str, Any]] = {}
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and isinstance(entry.get("file"), str):
            state.setdefault(entry["file"], {}).update(entry)
    return state
