"""``inferbox batch`` over storage prefixes (named memory:// stores here; S3 on moto's server in
tests/integration/test_batch_storage.py), against a fake broker that resolves payload references
the way docs/api.md describes."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import responses

from client_sdk import Client
from client_sdk.batch import run_batch
from client_sdk.cli import main
from client_sdk.codec import REFERENCE
from client_sdk.locations import is_storage_url, local_path
from storage import open_store
from storage.memory import forget_named_stores

BROKER = "http://broker.test"


class FakeBroker:
    """POST /predict (bytes or a reference it reads from a memory store), GET /getresult: the
    payload's SHA-256, for the tasks in ``finished`` (all when None)."""

    def __init__(self, *, refuse: bool = False) -> None:
        self.refuse = refuse
        self.tasks: dict[str, tuple[bytes, str]] = {}
        self.keys: dict[str, str] = {}
        self.references = 0
        self.uploads = 0
        self.finished: set[str] | None = None
        self.lock = threading.Lock()

    def predict(self, request: requests.PreparedRequest):
        content_type = request.headers["Content-Type"]
        body = request.body if isinstance(request.body, bytes) else b""
        with self.lock:
            key = request.headers["Idempotency-Key"]
            if key in self.keys:
                return 202, {}, json.dumps({"task_id": self.keys[key], "status": "queued"})
            if content_type == REFERENCE:
                if self.refuse:
                    return 400, {}, json.dumps({"error": "source_refused",
                                                "message": "not under a payload source"})
                url = json.loads(body)["url"]
                name, key_in_store = url.removeprefix("memory://").split("/", 1)
                with open_store(f"memory://{name}").get(key_in_store) as blob:
                    body, content_type = blob.read(), blob.info.content_type
                self.references += 1
            else:
                self.uploads += 1
            task_id = f"T{len(self.tasks)}"
            self.tasks[task_id] = (body, content_type)
            self.keys[key] = task_id
        return 202, {}, json.dumps({"task_id": task_id, "status": "queued"})

    def result(self, request: requests.PreparedRequest):
        task_id = request.path_url.split("/")[2].split("?")[0]
        if self.finished is not None and task_id not in self.finished:
            return 202, {}, json.dumps({"task_id": task_id, "status": "queued"})
        body, content_type = self.tasks[task_id]
        answer = {"sha256": hashlib.sha256(body).hexdigest(), "type": content_type}
        return 200, {"Content-Type": "application/json"}, json.dumps(answer)


@pytest.fixture
def fake() -> Iterator[FakeBroker]:
    broker = FakeBroker()
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.add_callback(responses.POST, f"{BROKER}/predict", callback=broker.predict)
        rsps.add_callback(responses.GET, re.compile(rf"{BROKER}/getresult/.*"),
                          callback=broker.result)  # fmt: skip
        yield broker


@pytest.fixture
def stores() -> Iterator[tuple[str, str]]:
    """A named memory store of 30 inputs, and the name of an empty one for the outputs."""
    source, target = f"in-{uuid.uuid4().hex[:8]}", f"out-{uuid.uuid4().hex[:8]}"
    store = open_store(f"memory://{source}")
    for i in range(30):
        store.put(f"scans/{i:02d}.png", f"image {i}".encode(), content_type="binary/octet-stream")
    store.put(".hidden/skip.png", b"never an input")
    yield source, target
    forget_named_stores()


def expected_outputs(source: str) -> dict[str, str]:
    store = open_store(f"memory://{source}")
    return {f"scans/{i:02d}.json": hashlib.sha256(store.read_bytes(f"scans/{i:02d}.png"))
            .hexdigest() for i in range(30)}  # fmt: skip


def outputs(target: str) -> dict[str, str]:
    store = open_store(f"memory://{target}")
    return {key: json.loads(store.read_bytes(key))["sha256"] for key in store.list()
            if not key.startswith(".")}  # fmt: skip


def batch(source: str, target: str, **options):
    with Client(BROKER) as client:
        return run_batch(client, f"memory://{source}/", f"memory://{target}/", queue="q",
                         progress=False, **options)  # fmt: skip


def test_storage_inputs_go_by_reference_and_results_to_storage(fake, stores):
    source, target = stores
    report = batch(source, target)
    assert report.ok and report.done == 30 and report.referenced == 30 and report.copied == 0
    assert fake.references == 30 and fake.uploads == 0  # no input passed through the client
    assert outputs(target) == expected_outputs(source)
    journal = [key for key in open_store(f"memory://{target}").list(".inferbox-batch/")]
    assert journal  # the journal lives beside the results
    assert "30 by reference" in report.summary()


def test_a_refused_reference_falls_back_to_copying_through_the_client(stores):
    source, target = stores
    fake = FakeBroker(refuse=True)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.add_callback(responses.POST, f"{BROKER}/predict", callback=fake.predict)
        rsps.add_callback(responses.GET, re.compile(rf"{BROKER}/getresult/.*"),
                          callback=fake.result)  # fmt: skip
        report = batch(source, target)
    assert report.ok and report.copied == 30 and report.referenced == 0
    assert fake.uploads == 30 and "not under a payload source" in report.fallback
    assert outputs(target) == expected_outputs(source)
    assert {content_type for _, content_type in fake.tasks.values()} == {"image/png"}  # by name


def test_copy_sends_the_bytes_from_the_start(fake, stores):
    source, target = stores
    report = batch(source, target, copy=True)
    assert report.ok and report.copied == 30 and fake.references == 0 and not report.fallback


def test_an_interrupted_run_resumes_without_resubmitting(fake, stores):
    source, target = stores
    fake.finished = {f"T{i}" for i in range(0, 30, 2)}
    first = batch(source, target, timeout=0)
    assert first.done == 15 and len(first.pending) == 15 and first.submitted == 30
    fake.finished = None
    second = batch(source, target)
    assert second.ok and second.done_before == 15 and second.done == 15
    assert second.submitted == 0 and len(fake.tasks) == 30
    assert outputs(target) == expected_outputs(source)


def test_a_lost_journal_costs_no_duplicate_task(fake, stores):
    """Killed before the journal was flushed: the same idempotency keys name the same tasks."""
    source, target = stores
    fake.finished = set()
    batch(source, target, timeout=0)
    out = open_store(f"memory://{target}")
    for key in list(out.list(".inferbox-batch/")):
        out.delete(key)
    fake.finished = None
    report = batch(source, target)
    assert report.ok and len(fake.tasks) == 30  # replays, not new tasks
    assert outputs(target) == expected_outputs(source)


def test_outputs_inside_the_input_prefix_are_not_taken_for_inputs(fake, stores):
    source, _ = stores
    with Client(BROKER) as client:
        for _ in range(2):
            report = run_batch(client, f"memory://{source}/", f"memory://{source}/results/",
                               queue="q", progress=False)  # fmt: skip
            assert report.total == 30 and report.ok


def test_the_cli_takes_storage_urls_and_file_urls(fake, stores, tmp_path, capsys):
    source, target = stores
    code = main(["--broker", BROKER, "batch", f"memory://{source}/", "-o",
                 f"memory://{target}/", "--queue", "q", "--no-progress", "--copy"], environ={})
    assert code == 0 and "30 copied through this client" in capsys.readouterr().out
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.txt").write_text("hello")
    code = main(["--broker", BROKER, "batch", folder.as_uri(), "-o", (tmp_path / "out").as_uri(),
                 "--queue", "q", "--no-progress"], environ={})  # fmt: skip
    assert code == 0 and (tmp_path / "out" / "a.json").is_file()


def test_an_unknown_scheme_is_a_clean_error(fake, capsys):
    code = main(["--broker", BROKER, "batch", "gopher://bucket/in/", "-o", "out", "--queue", "q",
                 "--no-progress"], environ={})  # fmt: skip
    assert code == 1 and "unknown storage URL scheme 'gopher'" in capsys.readouterr().err


def test_locations():
    assert is_storage_url("s3://b/in/") and is_storage_url("az://c/x")
    assert not is_storage_url("file:///data/in") and not is_storage_url("scans/**/*.png")
    assert local_path("file:///data/in%20x") == Path("/data/in x")


def test_a_folder_batch_imports_no_storage_backend():
    code = ("import sys, client_sdk.cli, client_sdk.batch; "
            "print(','.join(m for m in ('storage', 'boto3', 'azure') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)  # fmt: skip
    assert result.stdout.strip() == ""
