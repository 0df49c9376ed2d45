"""What the file backend adds to the contract: its layout, temp files, URLs, processes."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from storage import (
    BlobNotFound,
    BlobStore,
    InvalidKey,
    Put,
    StorageError,
    StorageUnavailable,
    open_store,
)
from storage.file import TEMP_PREFIX, FileStore

MiB = 1024 * 1024
REPO_ROOT = Path(__file__).resolve().parents[2]


def _root(store: BlobStore) -> Path:
    assert isinstance(store, FileStore)
    return Path(store.root)


def _temp_files(root: Path) -> list[Path]:
    return [path for path in root.rglob("*") if path.name.startswith(TEMP_PREFIX)]


def test_layout_is_one_file_per_blob_with_a_json_header(file_store: BlobStore) -> None:
    file_store.put("inbox/abc", b"\x00raw\nbytes", content_type="image/png", metadata={"k": "v"})
    path = _root(file_store) / "inbox" / "abc"
    header, _, body = path.read_bytes().partition(b"\n")
    assert json.loads(header) == {"v": 1, "content_type": "image/png", "metadata": {"k": "v"}}
    assert body == b"\x00raw\nbytes"
    assert [p.name for p in _root(file_store).rglob("*")] == ["inbox", "abc"]


def test_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    absolute = open_store((tmp_path / "abs dir").as_uri())
    assert isinstance(absolute, FileStore)
    assert absolute.root == str(tmp_path / "abs dir")
    assert absolute.url == (tmp_path / "abs dir").as_uri()
    assert (tmp_path / "abs dir").is_dir(), "the root is created on open"

    monkeypatch.chdir(tmp_path)
    relative = open_store("file:rel/data")
    assert isinstance(relative, FileStore)
    assert relative.root == str(tmp_path / "rel" / "data")
    monkeypatch.chdir("/")
    relative.put("k", b"still in the directory resolved at open time")
    assert (tmp_path / "rel" / "data" / "k").is_file()

    local = open_store(f"file://localhost{tmp_path}/local")
    assert isinstance(local, FileStore) and local.root == str(tmp_path / "local")


@pytest.mark.parametrize(
    "url", ["file://relative/path", "file://host/share", "file:", "file:///x?q=1",
            "file:///x?sync=sometimes", "file:///x?sync=fsync&q=1", "file:///x?sync",
            "file:///x#frag"],
)  # fmt: skip
def test_bad_file_urls(url: str) -> None:
    with pytest.raises(StorageError):
        open_store(url)


def test_sync_fsync_in_the_url_makes_a_batch_durable_file_by_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import storage.file

    syncs: list[int] = []
    monkeypatch.setattr(storage.file, "_syncfs", syncs.append)
    store = open_store(f"{tmp_path.as_uri()}?sync=fsync")
    assert isinstance(store, FileStore) and store.sync == "fsync"
    assert store.url == f"{tmp_path.as_uri()}?sync=fsync"
    store.put_many([Put(key, b"x") for key in BATCH])
    assert syncs == [] and _blob_files(tmp_path) == BATCH
    default = open_store(f"{tmp_path.as_uri()}?sync=syncfs")
    assert isinstance(default, FileStore) and default.url == tmp_path.as_uri()
    default.put_many([Put(f"more/{i}", b"y") for i in range(3)])
    assert len(syncs) == 2


def test_no_temp_file_is_listed_during_or_after_a_failed_write(
    file_store: BlobStore, generated_stream: type, source_errors: tuple
) -> None:
    root = _root(file_store)
    file_store.put("inbox/old", b"old")
    during: dict[str, object] = {}

    def look() -> None:
        during["temps"] = _temp_files(root)
        during["listed"] = list(file_store.list())
        during["exists"] = file_store.exists("inbox/new")

    source = generated_stream(4 * MiB, fail_after=MiB, on_fail=look)
    with pytest.raises(source_errors[0]):
        file_store.put("inbox/new", source)
    assert len(during["temps"]) == 1, "the write was in progress, in a temp file"  # type: ignore[arg-type]
    assert during["listed"] == ["inbox/old"]
    assert during["exists"] is False
    assert _temp_files(root) == []
    assert list(file_store.list()) == ["inbox/old"]


def test_failed_write_to_a_new_directory_leaves_no_directories(
    file_store: BlobStore, generated_stream: type, source_errors: tuple
) -> None:
    with pytest.raises(source_errors[0]):
        file_store.put("new/deep/dir/key", generated_stream(2 * MiB, fail_after=MiB))
    assert list(_root(file_store).iterdir()) == []


def test_a_put_makes_the_directories_it_created_durable_too(
    file_store: BlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new directory's own entry lives in its parent: each parent up to the first directory
    that was there already is fsynced as well, and no further."""
    import storage.file

    synced: list[str] = []
    monkeypatch.setattr(storage.file, "_fsync_directory", synced.append)
    root = str(_root(file_store))
    file_store.put("outbox/t1/lease-1", b"first")  # creates outbox/ and outbox/t1/
    assert synced == [f"{root}/outbox/t1", f"{root}/outbox", root]
    synced.clear()
    file_store.put("outbox/t2/lease-1", b"second")  # creates outbox/t2/ only
    assert synced == [f"{root}/outbox/t2", f"{root}/outbox"]
    synced.clear()
    file_store.put("outbox/t1/lease-2", b"third")  # its directory was there already
    assert synced == [f"{root}/outbox/t1"]


def _blob_files(root: Path) -> list[str]:
    return sorted(path.relative_to(root).as_posix() for path in root.rglob("*")
                  if path.is_file() and not path.name.startswith(TEMP_PREFIX))  # fmt: skip


BATCH = ["inbox/a", "outbox/t1/l1", "outbox/t2/l1"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="syncfs(2) is Linux's")
def test_put_many_syncs_the_file_system_twice_bytes_first_then_names(
    file_store: BlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No fsync a blob: one sync once every temp file is written (no blob has its name yet,
    so a crash leaves none torn), one once all are renamed (before put_many returns)."""
    import storage.file

    assert storage.file._syncfs is not None, "the C library's syncfs was found"
    root, seen = _root(file_store), []
    real_syncfs, fsyncs = storage.file._syncfs, []

    def syncfs(fd: int) -> None:
        seen.append((len(_temp_files(root)), _blob_files(root)))
        real_syncfs(fd)

    monkeypatch.setattr(storage.file, "_syncfs", syncfs)
    monkeypatch.setattr(storage.file.os, "fsync", fsyncs.append)
    file_store.put_many([Put(key, key.encode(), metadata={"k": key}) for key in BATCH])
    assert seen == [(3, []), (0, BATCH)]
    assert fsyncs == []
    assert [file_store.get(key).read() for key in BATCH] == [key.encode() for key in BATCH]
    assert file_store.head("outbox/t1/l1").metadata == {"k": "outbox/t1/l1"}


@pytest.mark.parametrize("failing_call", [1, 2])
def test_a_failed_sync_fails_the_batch_and_leaves_nothing(
    file_store: BlobStore, monkeypatch: pytest.MonkeyPatch, failing_call: int
) -> None:
    import storage.file

    calls: list[int] = []

    def syncfs(fd: int) -> None:
        calls.append(fd)
        if len(calls) == failing_call:
            raise OSError(errno.EIO, "syncfs: Input/output error")

    monkeypatch.setattr(storage.file, "_syncfs", syncfs)
    file_store.put("kept", b"k")
    with pytest.raises(StorageUnavailable, match="Input/output error"):
        file_store.put_many([Put(key, b"x") for key in BATCH])
    root = _root(file_store)
    assert _blob_files(root) == ["kept"]
    assert _temp_files(root) == []
    assert sorted(path.name for path in root.iterdir()) == ["kept"], "new directories pruned"


def test_a_batch_into_a_vanished_root_is_storage_unavailable(file_store: BlobStore) -> None:
    _root(file_store).rmdir()
    with pytest.raises(StorageUnavailable):
        file_store.put_many([Put(key, b"x") for key in BATCH])


def test_a_batch_holding_a_key_and_a_key_below_it_is_refused_whole(
    file_store: BlobStore,
) -> None:
    with pytest.raises(InvalidKey, match="also a prefix"):
        file_store.put_many([Put("a/b", b"1"), Put("a/b/c", b"2")])
    assert list(_root(file_store).iterdir()) == []


def test_a_conflicting_key_fails_the_batch_and_leaves_nothing_new(file_store: BlobStore) -> None:
    file_store.put("a/b", b"a blob")
    with pytest.raises(InvalidKey, match="also a prefix"):
        file_store.put_many([Put("x/1", b"1"), Put("a/b/c/d", b"2"), Put("y/2", b"3")])
    assert _blob_files(_root(file_store)) == ["a/b"]
    assert sorted(path.name for path in _root(file_store).iterdir()) == ["a"], "x/ pruned"
    assert _temp_files(_root(file_store)) == []
    assert list(file_store.list()) == ["a/b"]


def test_without_syncfs_put_many_fsyncs_each_blob(
    file_store: BlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Elsewhere than Linux (or one blob alone) each blob is a ``put``: its own fsyncs."""
    import storage.file

    synced: list[str] = []
    monkeypatch.setattr(storage.file, "_fsync_directory", synced.append)
    monkeypatch.setattr(storage.file, "_syncfs", None)
    file_store.put_many([Put(key, b"x") for key in BATCH])
    root = str(_root(file_store))
    assert synced == [f"{root}/inbox", root, f"{root}/outbox/t1", f"{root}/outbox", root,
                      f"{root}/outbox/t2", f"{root}/outbox"]  # fmt: skip
    assert _blob_files(_root(file_store)) == BATCH


def test_temp_files_from_a_crashed_writer_are_not_listed(file_store: BlobStore) -> None:
    file_store.put("dir/real", b"x")
    (_root(file_store) / "dir" / f"{TEMP_PREFIX}0123456789abcdef").write_bytes(b"half a blob")
    assert list(file_store.list()) == ["dir/real"]
    assert list(file_store.list("dir/")) == ["dir/real"]


def test_reserved_temp_names_are_invalid_keys(file_store: BlobStore) -> None:
    for key in (f"{TEMP_PREFIX}x", f"a/{TEMP_PREFIX}x/b"):
        with pytest.raises(InvalidKey):
            file_store.put(key, b"x")
        with pytest.raises(InvalidKey):
            file_store.get(key)


def test_delete_prunes_empty_directories_but_keeps_the_root(file_store: BlobStore) -> None:
    root = _root(file_store)
    file_store.put("a/b/c/d", b"1")
    file_store.put("a/x", b"2")
    file_store.delete("a/b/c/d")
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*")) == ["a", "a/x"]
    file_store.delete("a/x")
    assert root.is_dir() and list(root.iterdir()) == []


def test_a_key_cannot_be_both_a_blob_and_a_prefix(file_store: BlobStore) -> None:
    file_store.put("a/b", b"nested")
    with pytest.raises(InvalidKey):
        file_store.put("a", b"would replace the directory")
    file_store.put("c", b"blob")
    with pytest.raises(InvalidKey):
        file_store.put("c/d", b"would need c to be a directory")
    with pytest.raises(InvalidKey):
        file_store.put("c/d/e", b"would need c and c/d to be directories")
    assert file_store.read_bytes("a/b") == b"nested"
    assert file_store.read_bytes("c") == b"blob"
    with pytest.raises(BlobNotFound):
        file_store.get("a")
    file_store.delete("a")  # a prefix, not a blob: nothing to delete
    assert list(file_store.list()) == ["a/b", "c"]
    assert _temp_files(_root(file_store)) == []


def test_a_segment_too_long_for_the_file_system_is_an_invalid_key(file_store: BlobStore) -> None:
    with pytest.raises(InvalidKey):
        file_store.put("x" * 300, b"data")
    assert _temp_files(_root(file_store)) == []


def test_foreign_files_are_not_blobs(file_store: BlobStore) -> None:
    root = _root(file_store)
    (root / "notes.txt").write_bytes(b"no header here")
    (root / "bad\\name").write_bytes(b"")
    assert list(file_store.list()) == ["notes.txt"], "names that are not valid keys are skipped"
    with pytest.raises(StorageError) as caught:
        file_store.get("notes.txt")
    assert not isinstance(caught.value, BlobNotFound)


def test_backend_failures_are_storage_unavailable_with_the_cause(file_store: BlobStore) -> None:
    root = _root(file_store)
    file_store.ping()
    root.rmdir()
    root.write_bytes(b"the store directory was replaced by a file")
    with pytest.raises(StorageUnavailable):
        file_store.ping()
    with pytest.raises(StorageUnavailable) as caught:
        file_store.put("inbox/1", b"x")
    assert isinstance(caught.value.__cause__, OSError)
    assert "inbox/1" in str(caught.value)


def test_open_fails_when_the_root_cannot_be_a_directory(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(StorageUnavailable):
        open_store((tmp_path / "file" / "store").as_uri())


WRITER = textwrap.dedent(
    """
    import sys
    from storage import open_store

    store = open_store(sys.argv[1])
    name = sys.argv[2]
    for i in range(40):
        store.put("hot", bytes([ord(name)]) * 200_000, metadata={"writer": name})
        store.put(f"shared/dir/{name}{i}", b"x")
        store.delete(f"shared/dir/{name}{i}")
    """
)


def test_processes_overwriting_and_pruning_concurrently(file_store: BlobStore) -> None:
    file_store.put("hot", b"a" * 200_000, metadata={"writer": "a"})
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, file_store.url, name], env=env, stderr=subprocess.PIPE
        )
        for name in "bc"
    ]
    reads = 0
    while any(writer.poll() is None for writer in writers) or reads == 0:
        with file_store.get("hot") as blob:
            writer_name = blob.info.metadata["writer"]
            assert blob.read() == writer_name.encode() * 200_000
        reads += 1
    for writer in writers:
        _, errors = writer.communicate(timeout=60)
        assert writer.returncode == 0, errors.decode()
    assert list(file_store.list()) == ["hot"]
    assert _temp_files(_root(file_store)) == []
    assert not (_root(file_store) / "shared").exists()
