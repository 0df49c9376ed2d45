"""A real Azurite blob emulator for the tests: one process per session, on a free loopback port.

Azurite is the npm package ``azurite``; ``.ci/run`` installs it under ``.azurite/`` (gitignored):
``npm install --prefix .azurite azurite``. The tests look for ``$AZURITE_BIN``, then
``.azurite/node_modules/.bin/azurite-blob``, then ``azurite-blob`` on the PATH. Without it the
Azure tests skip and say why, except under ``CI=true``, where they fail.

Use the ``azurite`` fixture for the emulator, ``azure_env`` to point the standard Azure variables
at it, and ``azure_container`` for a fresh, empty container that is deleted after the test.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ACCOUNT = "devstoreaccount1"
# Azurite's published development key (the same in every Azurite): not a secret.
ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
AZURE_ENV_TO_CLEAR = (
    "AZURE_STORAGE_CONNECTION_STRING",
    "AZURE_STORAGE_ACCOUNT",
    "AZURE_STORAGE_ACCOUNT_URL",
    "AZURE_STORAGE_KEY",
    "AZURE_STORAGE_SAS_TOKEN",
)


@dataclass(frozen=True)
class Azurite:
    endpoint: str  # http://127.0.0.1:<port>/devstoreaccount1

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint={self.endpoint};"
        )

    def service(self):  # noqa: ANN201 - azure.storage.blob.BlobServiceClient
        from azure.storage.blob import BlobServiceClient

        return BlobServiceClient.from_connection_string(self.connection_string, retry_total=0)


def find_binary() -> str | None:
    candidates = [
        os.environ.get("AZURITE_BIN", ""),
        str(ROOT / ".azurite" / "node_modules" / ".bin" / "azurite-blob"),
        shutil.which("azurite-blob") or "",
    ]
    return next((path for path in candidates if path and os.access(path, os.X_OK)), None)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_port(port: int, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"azurite exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"azurite did not listen on port {port} within {timeout}s")


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    binary = find_binary()
    if binary is None:
        message = "no Azurite: run `npm install --prefix .azurite azurite` or set AZURITE_BIN"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message + " — CI=true requires it", pytrace=False)
        pytest.skip(message)
    port = _free_port()
    workspace = tmp_path_factory.mktemp("azurite")
    command = [binary, "--blobHost", "127.0.0.1", "--blobPort", str(port),
               "--inMemoryPersistence", "--silent",
               "--skipApiVersionCheck", "--disableTelemetry"]  # fmt: skip
    log = workspace / "azurite.log"
    with log.open("wb") as output:
        process = subprocess.Popen(command, cwd=workspace, stdout=output, stderr=subprocess.STDOUT)
    try:
        try:
            _wait_for_port(port, process)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}; its log says: {log.read_text()[-2000:]}") from None
        yield Azurite(f"http://127.0.0.1:{port}/{ACCOUNT}")
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def azure_env(azurite: Azurite, monkeypatch: pytest.MonkeyPatch) -> Azurite:
    """The standard Azure variables pointing at Azurite (and nothing else)."""
    for name in AZURE_ENV_TO_CLEAR:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite.connection_string)
    return azurite


def new_container(azurite: Azurite) -> str:
    name = f"inferbox-{uuid.uuid4().hex[:16]}"
    with azurite.service() as service:
        service.create_container(name)
    return name


def delete_container(azurite: Azurite, name: str) -> None:
    with azurite.service() as service:
        service.delete_container(name)


@pytest.fixture
def azure_container(azure_env: Azurite) -> Iterator[str]:
    """A fresh, empty container on Azurite, deleted after the test; yields its name."""
    name = new_container(azure_env)
    yield name
    delete_container(azure_env, name)
