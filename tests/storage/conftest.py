"""Fixtures for the storage suite: one store per backend, each starting empty, and test streams.

Backends: ``memory://``, ``file://`` under ``tmp_path``, S3 through moto in-process
(``mock_aws``), S3 through moto's real HTTP server (boto3 talks HTTP to it), and Azure Blob
storage through a real Azurite emulator (``tests/azurite.py``).
"""

from __future__ import annotations

import hashlib
import random
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from storage import BlobStore, open_store
from tests.azurite import azure_container, azure_env, azurite  # noqa: F401 - fixtures

S3_ENV_TO_CLEAR = (
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_PROFILE",
    "AWS_REGION",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
)


class SourceFailed(Exception):
    """What a caller's stream raises in the failing-stream tests (not a storage error)."""


class SourceIOFailed(OSError):
    """A caller's stream failure that is also an OSError, which must not look like a disk error."""


class GeneratedStream:
    """``size`` pseudo-random bytes served by ``read(n)``, hashing what it serves.

    With ``fail_after``, the first read after that many bytes calls ``on_fail`` (if given) and
    raises ``error``. Records the largest read request and any read-everything call.
    """

    def __init__(
        self,
        size: int,
        *,
        seed: int = 0,
        fail_after: int | None = None,
        error: BaseException | None = None,
        on_fail: Callable[[], None] | None = None,
    ) -> None:
        self.remaining = size
        self.served = 0
        self.largest_read = 0
        self.read_all_calls = 0
        self.sha256 = hashlib.sha256()
        self._random = random.Random(seed)
        self._fail_after = fail_after
        self._error = error or SourceFailed("the client went away")
        self._on_fail = on_fail

    def read(self, n: int | None = -1) -> bytes:
        if n is None or n < 0:
            self.read_all_calls += 1
            n = self.remaining
        self.largest_read = max(self.largest_read, n)
        if self._fail_after is not None and self.served >= self._fail_after:
            if self._on_fail:
                self._on_fail()
            raise self._error
        chunk = self._random.randbytes(min(n, self.remaining))
        self.remaining -= len(chunk)
        self.served += len(chunk)
        self.sha256.update(chunk)
        return chunk


@pytest.fixture
def generated_stream() -> type[GeneratedStream]:
    return GeneratedStream


@pytest.fixture
def source_errors() -> tuple[type[Exception], type[Exception]]:
    return SourceFailed, SourceIOFailed


# -- stores -----------------------------------------------------------------------------------


@pytest.fixture
def memory_store() -> Iterator[BlobStore]:
    with open_store("memory://") as store:
        yield store


@pytest.fixture
def file_store(tmp_path: Path) -> Iterator[BlobStore]:
    with open_store((tmp_path / "blobs").as_uri()) as store:
        yield store


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Fake credentials and no user AWS config, so no test can reach a real account."""
    for name in S3_ENV_TO_CLEAR:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))


@pytest.fixture
def s3_moto_store(aws_env: None) -> Iterator[BlobStore]:
    """S3 via moto in-process, under a URL prefix."""
    import boto3
    from moto import mock_aws

    with mock_aws():
        boto3.client("s3").create_bucket(Bucket="inferbox-test")
        with open_store("s3://inferbox-test/some/prefix") as store:
            yield store


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """moto's HTTP server on a free port, for the whole session; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_server_env(
    aws_env: None, moto_server: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """Point boto3 at the moto server; wipe the server's state after the test."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    yield moto_server
    reset = urllib.request.Request(f"{moto_server}/moto-api/reset", method="POST")
    urllib.request.urlopen(reset, timeout=10).close()


@pytest.fixture
def s3_server_store(s3_server_env: str) -> Iterator[BlobStore]:
    """S3 over HTTP to moto's server, bucket root (no prefix)."""
    import boto3

    bucket = f"inferbox-{uuid.uuid4().hex[:12]}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    with open_store(f"s3://{bucket}") as store:
        yield store


@pytest.fixture
def azure_store(azure_container: str) -> Iterator[BlobStore]:  # noqa: F811
    """Azure Blob storage on Azurite, container root (no prefix)."""
    with open_store(f"az://{azure_container}") as store:
        yield store


@pytest.fixture
def azure_prefix_store(azure_container: str) -> Iterator[BlobStore]:  # noqa: F811
    """Azure Blob storage on Azurite, under a URL prefix."""
    with open_store(f"az://{azure_container}/some/prefix") as store:
        yield store
