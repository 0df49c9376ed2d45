"""``inferbox-broker import-v0``: an original ``inboxv0`` container (on Azurite) adopted as queued
tasks that the clients' existing ids reach; idempotent; ``--move`` empties the old inbox."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest

from tests.azurite import Azurite
from tests.compat.conftest import StartBroker, V0Broker
from tests.compat.v0_clients import CSharpClient, memory_stream_buffer, perform_next_task, png
from tests.compat.v0_clients import segmentation_model as model
from tests.conftest import REDIS_URL
from tests.integration.conftest import ROOT, child_env

pytestmark = pytest.mark.redis


@pytest.fixture
def inboxv0(azure_env: Azurite) -> Iterator[dict[str, bytes]]:
    """The original's inbox: three pending ``<guid>.payload`` blobs and one stray file."""
    pending = {f"{uuid.uuid4()}.payload": memory_stream_buffer(png(20 + n, 10, lambda x, y: x))
               for n in range(3)}  # fmt: skip
    with azure_env.service() as service:
        container = service.create_container("inboxv0")
        try:
            for name, data in pending.items():
                container.upload_blob(name, data)  # as UploadFromByteArrayAsync stored them
            container.upload_blob("notes.txt", b"not a task")
            yield pending
        finally:
            container.delete_container()


def import_v0(broker: V0Broker, *args: str, **env: str) -> subprocess.CompletedProcess:
    settings = {"INFERBOX_REDIS_URL": REDIS_URL, "INFERBOX_STORAGE_URL": broker.data.as_uri(),
                **env}  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "broker.cli", "import-v0", *args], cwd=ROOT,
        env=child_env(**settings), capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def inbox_names(azurite: Azurite) -> list[str]:
    with azurite.service() as service:
        return list(service.get_container_client("inboxv0").list_blob_names())


def test_import_adopts_the_pending_payloads_under_their_old_ids(
    inboxv0: dict[str, bytes], azure_env: Azurite, v0_broker: V0Broker
):
    first = import_v0(v0_broker, "--from", "az://inboxv0")
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines() == [
        "queued 3 task(s) from az://inboxv0 into queue 'default'; 0 already imported",
        "left alone 1 blob(s) not <guid>.payload: notes.txt",
    ]
    again = import_v0(v0_broker, "--from", "az://inboxv0")
    assert again.stdout.splitlines()[0].startswith("queued 0 task(s) from az://inboxv0")
    assert "3 already imported" in again.stdout

    csharp = CSharpClient()
    try:
        for legacy_id in inboxv0:  # the ids the clients already hold
            assert csharp.get_results(v0_broker.getresult_url, legacy_id) is None
        lines: list[str] = []
        while perform_next_task(v0_broker.getnexttask_url, v0_broker.puttaskresult_url, model,
                                lines.append):  # fmt: skip
            pass
        taken = [line.split()[-1].split(".")[0] for line in lines[:-1]]
        assert taken == sorted(name.split(".")[0] for name in inboxv0), "the original's order"
        for legacy_id, image in inboxv0.items():
            assert csharp.get_results(v0_broker.getresult_url, legacy_id) == model(image)
    finally:
        csharp.close()
    assert sorted(inbox_names(azure_env)) == sorted([*inboxv0, "notes.txt"]), "left as it was"


def test_import_with_move_empties_the_old_inbox(
    inboxv0: dict[str, bytes], azure_env: Azurite, v0_broker: V0Broker
):
    moved = import_v0(v0_broker, "--from", "az://inboxv0", "--move")
    assert moved.returncode == 0, moved.stderr
    assert "queued 3 task(s)" in moved.stdout
    assert inbox_names(azure_env) == ["notes.txt"]
    again = import_v0(v0_broker, "--from", "az://inboxv0", "--move")
    assert "queued 0 task(s)" in again.stdout and "0 already imported" in again.stdout
    csharp = CSharpClient()
    try:
        assert csharp.get_results(v0_broker.getresult_url, next(iter(inboxv0))) is None
    finally:
        csharp.close()


def test_import_refuses_without_a_shared_redis_or_a_source(start_v0_broker: StartBroker):
    broker = start_v0_broker()
    embedded = import_v0(broker, "--from", "az://inboxv0", INFERBOX_REDIS_URL="")
    assert embedded.returncode == 2 and "INFERBOX_REDIS_URL" in embedded.stderr
    no_source = import_v0(broker)
    assert no_source.returncode == 2 and "--from" in no_source.stderr
    missing = import_v0(broker, "--from", "memory://")
    assert missing.returncode == 0 and "queued 0 task(s)" in missing.stdout
