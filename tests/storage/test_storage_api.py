"""The package surface: exports, the error tree, open_store, validate_key, lazy imports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import storage
from storage import (
    BlobNotFound,
    InvalidKey,
    InvalidMetadata,
    StorageError,
    StorageUnavailable,
    UnknownScheme,
    open_store,
    validate_key,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_public_surface_is_pinned() -> None:
    assert sorted(storage.__all__) == sorted(
        [
            "BlobStore", "BlobInfo", "Blob", "open_store", "validate_key", "StorageError",
            "BlobNotFound", "InvalidKey", "InvalidMetadata", "UnknownScheme",
            "StorageUnavailable", "Put",
        ]
    )  # fmt: skip
    for name in storage.__all__:
        assert getattr(storage, name) is not None


def test_error_tree() -> None:
    for error in (BlobNotFound, InvalidKey, InvalidMetadata, UnknownScheme, StorageUnavailable):
        assert issubclass(error, StorageError)
    assert issubclass(BlobNotFound, KeyError)
    for error in (InvalidKey, InvalidMetadata, UnknownScheme):
        assert issubclass(error, ValueError)
    assert not issubclass(StorageUnavailable, ValueError | KeyError)


def test_blob_not_found_prints_its_message_not_a_repr() -> None:
    assert str(BlobNotFound("inbox/1", "memory://")) == "no blob under key 'inbox/1' in memory://"


@pytest.mark.parametrize("url", ["ftp://host/path", "MEMCACHE://x", "gs://bucket"])
def test_unknown_scheme_names_it_and_the_supported_ones(url: str) -> None:
    with pytest.raises(UnknownScheme) as caught:
        open_store(url)
    message = str(caught.value)
    assert url.split(":")[0].lower() in message
    assert "az://, file://, memory://, s3://" in message
    assert caught.value.supported == ["az", "file", "memory", "s3"]


@pytest.mark.parametrize("url", ["", "/var/lib/inferbox", "relative/dir", "inferbox-data"])
def test_missing_scheme(url: str) -> None:
    with pytest.raises(UnknownScheme, match="no scheme"):
        open_store(url)


def test_scheme_is_case_insensitive() -> None:
    assert open_store("MEMORY://").url == "MEMORY://"


def test_validate_key() -> None:
    assert validate_key("inbox/0b7e/payload.bin") == "inbox/0b7e/payload.bin"
    with pytest.raises(InvalidKey) as caught:
        validate_key("a//b")
    assert caught.value.key == "a//b"
    assert "segment" in caught.value.reason


def test_importing_storage_imports_no_cloud_sdk() -> None:
    code = (
        "import sys, tempfile, pathlib, storage\n"
        "storage.open_store('memory://')\n"
        "storage.open_store(pathlib.Path(tempfile.mkdtemp()).as_uri())\n"
        "cloud = ('boto3', 'botocore', 's3transfer', 'azure.storage.blob', 'azure.core')\n"
        "loaded = [m for m in cloud if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
