"""``file:///abs/path`` or ``file:relative/path``: one file per blob under a root directory.

Layout: the blob under key ``a/b/c`` is the file ``<root>/a/b/c``. It holds one JSON header line
(format version, content type, metadata), a newline, then the blob's bytes unchanged.
Directories are created as needed and removed again when a delete leaves them empty.

Guarantees:

- ``put`` is atomic and durable. It writes a temp file in the target's directory, fsyncs it,
  renames it over the target with ``os.replace``, then fsyncs the directory and, when the put
  created that directory, the directories above it up to the first one that was already there
  (so a new ``outbox/<task_id>/`` survives a crash too: POSIX keeps a directory's entry in its
  parent, and only ext4's journal happens to cover it without that fsync). Readers in any
  thread or process see the old blob or the new one. Concurrent writers: the last rename wins.
  A failed put removes its temp file. Temp files are named ``.inferbox-tmp-*`` and ``list``
  never shows them.
- ``put_many`` of two or more blobs, on Linux, makes them durable together with two
  ``syncfs(2)`` calls of the store's file system instead of two to four fsyncs a blob: it
  writes every temp file, syncs (the bytes are on disk), renames each into place, syncs again
  (the names are on disk), then returns. A crash leaves each blob whole or absent, as for
  ``put``. The price: a sync also writes out the other dirty data of that file system, so a
  store sharing its disk with a heavy writer waits for that writer's data too; with
  ``?sync=fsync`` in its URL (as PostgreSQL's ``recovery_init_sync_method``), and elsewhere
  than Linux, and for a single blob, ``put_many`` is ``put`` in turn.
- ``get`` streams from the open file. On POSIX, a blob being read is unaffected by later
  overwrites or deletes.
- ``list`` walks the tree lazily in key order, one directory listing in memory at a time. It
  skips files whose names are not valid keys.

Limits of a file system: a key cannot be a blob and also a prefix of other blobs (``a`` and
``a/b``); the second put raises :class:`~storage.errors.InvalidKey`, and so does a segment
longer than the file system allows (usually 255 bytes). Segments starting with
``.inferbox-tmp-`` are reserved for temp files. A file under the root without a valid header
raises :class:`~storage.errors.StorageError` when read.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import secrets
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import parse_qsl, urlsplit
from urllib.request import url2pathname

from .base import BlobStore, CheckedPut, Mapper
from .blob import Blob, BlobInfo
from .errors import BlobNotFound, InvalidKey, StorageError, StorageUnavailable
from .keys import is_valid_key
from .source import Source

TEMP_PREFIX = ".inferbox-tmp-"
HEADER_VERSION = 1
_HEADER_LIMIT = 64 * 1024  # far above the largest header valid metadata can produce
_CREATE_ATTEMPTS = 20  # a concurrent delete may prune the directory we are about to write in
# How put_many makes a batch durable: one file-system sync before and one after the renames
# (Linux), or each file's and directory's own fsyncs, as ``put`` does
SYNC_METHODS = ("syncfs", "fsync")
_TEMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)


class FileStore(BlobStore):
    """Blobs as files under ``root``. See the module docstring for what it guarantees."""

    def __init__(self, root: str | os.PathLike[str], *, sync: str = "syncfs") -> None:
        if sync not in SYNC_METHODS:
            raise StorageError(f"sync={sync!r}: use one of {', '.join(SYNC_METHODS)}")
        self.root = os.path.abspath(os.fspath(root))
        self.sync = sync
        self.url = Path(self.root).as_uri() + ("" if sync == "syncfs" else f"?sync={sync}")
        try:
            os.makedirs(self.root, exist_ok=True)
        except OSError as exc:
            raise StorageUnavailable(
                f"cannot create the store directory {self.root}: {exc}"
            ) from exc

    @classmethod
    def from_url(cls, url: str) -> FileStore:
        """``file:///abs/path``, ``file://localhost/abs/path`` or ``file:relative/path``, with
        an optional ``?sync=fsync`` (how a batch is made durable; ``syncfs`` by default).

        A relative path is resolved against the current directory now.
        """
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost") or parts.fragment:
            raise StorageError(
                f"bad file URL {url!r}: use file:///absolute/path or file:relative/path"
            )
        try:
            options = dict(parse_qsl(parts.query, keep_blank_values=True, strict_parsing=True)
                           if parts.query else [])  # fmt: skip
        except ValueError as exc:
            raise StorageError(f"bad file URL {url!r}: {exc}") from exc
        if set(options) - {"sync"}:
            raise StorageError(f"bad file URL {url!r}: the only option is sync=")
        path = url2pathname(parts.path)
        if not path:
            raise StorageError(f"file URL {url!r} names no directory")
        return cls(path, sync=options.get("sync", "syncfs"))

    # -- put ------------------------------------------------------------------------------------

    def _put(
        self, key: str, source: Source, content_type: str, metadata: dict[str, str]
    ) -> BlobInfo:
        path = self._path(key)
        header = _encode_header(content_type, metadata)
        with self._os_errors("store", key, source):
            self._write_atomically(path, key, header, source)
        return BlobInfo(key, source.size, content_type, dict(metadata))

    def _write_atomically(self, path: str, key: str, header: bytes, source: Source) -> None:
        parent = os.path.dirname(path)
        temp_path, temp, existing = self._create_temp(parent, key)
        try:
            with temp:
                _fill(temp, header, source)
                temp.flush()
                os.fsync(temp.fileno())
            _replace(temp_path, path, key)
        except BaseException:
            _remove_quietly(temp_path)
            self._prune(parent)
            raise
        _fsync_directory(parent)
        directory = parent
        while directory != existing:  # the entries of the directories this put created
            directory = os.path.dirname(directory)
            _fsync_directory(directory)

    def _put_many(self, puts: Sequence[CheckedPut], map: Mapper[Any, Any]) -> list[BlobInfo]:
        if len(puts) < 2 or _syncfs is None or self.sync == "fsync":
            return super()._put_many(puts, map)
        staged: list[tuple[str, str, str]] = []  # (temp path, path, key), in order
        renamed, parents = 0, set()
        # opened first: syncfs reports the file system's write-back errors since this open
        with self._os_errors("store", puts[0].key):
            root = os.open(self.root, os.O_RDONLY)
        try:
            for put in puts:
                with self._os_errors("store", put.key, put.source):
                    path = self._path(put.key)
                    parent = os.path.dirname(path)
                    parents.add(parent)  # pruned if the batch fails
                    temp_path, temp, _ = self._create_temp(parent, put.key)
                    staged.append((temp_path, path, put.key))
                    with temp:
                        _fill(temp, _encode_header(put.content_type, put.metadata), put.source)
            with self._os_errors("store", puts[0].key):
                _syncfs(root)  # every temp file's bytes and every new directory
            for temp_path, path, key in staged:
                with self._os_errors("store", key):
                    _replace(temp_path, path, key)
                renamed += 1
            with self._os_errors("store", puts[-1].key):
                _syncfs(root)  # every rename
        except BaseException:
            for index, (temp_path, path, _) in enumerate(staged):
                _remove_quietly(path if index < renamed else temp_path)
            for parent in sorted(parents, reverse=True):  # the deepest first
                self._prune(parent)
            raise
        finally:
            os.close(root)
        return [BlobInfo(put.key, put.source.size, put.content_type, dict(put.metadata))
                for put in puts]

    def _create_temp(self, parent: str, key: str) -> tuple[str, BinaryIO, str]:
        """A new temp file in ``parent`` (its path and the open file), and the deepest
        directory on the way to ``parent`` that was there before: ``parent`` itself unless the
        put had to create it."""
        for attempt in range(_CREATE_ATTEMPTS):
            try:
                existing = parent
                if not os.path.isdir(parent):  # the usual case costs one stat, no mkdir
                    existing = self._make_directories(parent, key)
                temp_path = os.path.join(parent, TEMP_PREFIX + secrets.token_hex(8))
                temp = os.fdopen(os.open(temp_path, _TEMP_FLAGS, 0o666), "wb")
                return temp_path, temp, existing
            except FileNotFoundError:
                if attempt == _CREATE_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    # -- get, head, delete ----------------------------------------------------------------------

    def _get(self, key: str) -> Blob:
        with self._os_errors("open", key):
            stream = self._open_blob(key)
            try:
                info = self._read_header(stream, key)
            except BaseException:
                stream.close()
                raise
        return Blob(info, stream, where=f"{key!r} in {self.url}")

    def _head(self, key: str) -> BlobInfo:
        with self._os_errors("read", key), self._open_blob(key) as stream:
            return self._read_header(stream, key)

    def _delete(self, key: str) -> None:
        path = self._path(key)
        with self._os_errors("delete", key):
            try:
                os.unlink(path)
            except (FileNotFoundError, NotADirectoryError):
                return
            except OSError:
                if os.path.isdir(path):  # a prefix of other keys, not a blob
                    return
                raise
            self._prune(os.path.dirname(path))

    def _open_blob(self, key: str) -> BinaryIO:
        try:
            return open(self._path(key), "rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise BlobNotFound(key, self.url) from exc

    def _read_header(self, stream: BinaryIO, key: str) -> BlobInfo:
        line = stream.readline(_HEADER_LIMIT)
        content_type, metadata = _decode_header(line)
        if content_type is None:
            raise StorageError(f"{key!r} in {self.url} is not a blob file: its header is invalid")
        size = os.fstat(stream.fileno()).st_size - stream.tell()
        return BlobInfo(key, size, content_type, metadata)

    # -- list, ping -----------------------------------------------------------------------------

    def _list(self, prefix: str) -> Iterator[str]:
        directory, _, partial = prefix.rpartition("/")
        start = os.path.join(self.root, *directory.split("/")) if directory else self.root
        yield from self._walk(start, directory + "/" if directory else "", partial)

    def _walk(self, directory: str, key_prefix: str, name_prefix: str = "") -> Iterator[str]:
        for name, is_directory in self._scan(directory, key_prefix):
            if not name.startswith(name_prefix) or name.startswith(TEMP_PREFIX):
                continue
            key = key_prefix + name
            if is_directory:
                yield from self._walk(os.path.join(directory, name), key + "/")
            elif is_valid_key(key):
                yield key

    def _scan(self, directory: str, key_prefix: str) -> list[tuple[str, bool]]:
        """(name, is_directory) of the directory's entries, in the order their keys sort."""
        found = []
        with self._os_errors("list", key_prefix or "/"):
            try:
                with os.scandir(directory) as entries:
                    for entry in entries:
                        if entry.is_dir(follow_symlinks=False):
                            found.append((entry.name + "/", entry.name, True))
                        elif entry.is_file():
                            found.append((entry.name, entry.name, False))
            except (FileNotFoundError, NotADirectoryError):
                return []
        # A directory's keys all start with "name/", so it sorts as that among its siblings.
        return [(name, is_directory) for _, name, is_directory in sorted(found)]

    def _ping(self) -> None:
        if not os.path.isdir(self.root) or not os.access(self.root, os.W_OK | os.X_OK):
            raise StorageUnavailable(f"{self.url}: the directory is missing or not writable")

    # -- helpers --------------------------------------------------------------------------------

    def _path(self, key: str) -> str:
        segments = key.split("/")
        if any(segment.startswith(TEMP_PREFIX) for segment in segments):
            raise InvalidKey(key, f"segments starting with {TEMP_PREFIX!r} are reserved")
        if os.name == "nt" and ":" in key:
            raise InvalidKey(key, "':' is not allowed in file names on Windows")
        return os.path.join(self.root, *segments)

    def _make_directories(self, directory: str, key: str) -> str:
        """Create ``directory`` and the missing directories above it, top down; the deepest
        one that was there already. A directory pruned meanwhile by another writer's delete
        makes ``mkdir`` raise ``FileNotFoundError``: the caller tries again."""
        missing = []
        while not os.path.isdir(directory):
            missing.append(directory)
            directory = os.path.dirname(directory)
        for path in reversed(missing):
            try:
                os.mkdir(path)
            except (FileExistsError, NotADirectoryError) as exc:
                if os.path.isdir(path):
                    continue  # another writer made it first
                if not os.path.isdir(self.root):
                    raise  # the store itself is gone: StorageUnavailable, not the key's fault
                if self._blocked_by_file(path):
                    raise _conflict(key) from exc
                raise FileNotFoundError(errno.ENOENT, "a directory vanished; try again") from exc
        return directory

    def _blocked_by_file(self, directory: str) -> bool:
        """Whether a blob (a regular file) stands where ``directory`` or an ancestor should be."""
        while directory.startswith(self.root) and len(directory) > len(self.root):
            if os.path.isfile(directory):
                return True
            directory = os.path.dirname(directory)
        return False

    def _prune(self, directory: str) -> None:
        """Remove ``directory`` and its ancestors below the root while they are empty."""
        while directory.startswith(self.root) and len(directory) > len(self.root):
            try:
                os.rmdir(directory)
            except OSError:
                return
            directory = os.path.dirname(directory)

    @contextmanager
    def _os_errors(self, action: str, key: str, source: Source | None = None) -> Iterator[None]:
        try:
            yield
        except OSError as exc:
            if source is not None and source.raised(exc):
                raise
            if exc.errno == errno.ENAMETOOLONG:
                raise InvalidKey(key, "a segment is too long for this file system") from exc
            raise StorageUnavailable(f"could not {action} {key!r} in {self.url}: {exc}") from exc


def _load_syncfs() -> Callable[[int], None] | None:
    """``syncfs(2)`` from the C library (Linux only; the os module has no wrapper), or None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        call = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None
    call.argtypes, call.restype = [ctypes.c_int], ctypes.c_int

    def syncfs(fd: int) -> None:  # ctypes lets other threads run during the call
        if call(fd) != 0:
            code = ctypes.get_errno()
            raise OSError(code, f"syncfs: {os.strerror(code)}")

    return syncfs


_syncfs = _load_syncfs()


def _fill(temp: BinaryIO, header: bytes, source: Source) -> None:
    """Write a blob file's content: its header line, then the source's bytes."""
    temp.write(header)
    for chunk in source.chunks():
        temp.write(chunk)


def _replace(temp_path: str, path: str, key: str) -> None:
    try:
        os.replace(temp_path, path)
    except IsADirectoryError as exc:
        raise _conflict(key) from exc


def _conflict(key: str) -> InvalidKey:
    return InvalidKey(
        key, "the file store cannot keep a blob at a key that is also a prefix of other blobs"
    )


def _remove_quietly(path: str) -> None:
    with suppress(OSError):
        os.unlink(path)


def _fsync_directory(directory: str) -> None:
    """Make a rename in ``directory`` durable (POSIX; Windows cannot open directories)."""
    if os.name == "nt":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _encode_header(content_type: str, metadata: dict[str, str]) -> bytes:
    header = {"v": HEADER_VERSION, "content_type": content_type, "metadata": metadata}
    return json.dumps(header, separators=(",", ":"), sort_keys=True).encode("ascii") + b"\n"


def _decode_header(line: bytes) -> tuple[str | None, dict[str, str]]:
    """(content_type, metadata) from a header line; content_type is None if it is not one."""
    try:
        header = json.loads(line) if line.endswith(b"\n") else None
    except ValueError:
        header = None
    if not isinstance(header, dict) or header.get("v") != HEADER_VERSION:
        return None, {}
    content_type, metadata = header.get("content_type"), header.get("metadata")
    if not isinstance(content_type, str) or not isinstance(metadata, dict):
        return None, {}
    return content_type, {str(name): str(value) for name, value in metadata.items()}
