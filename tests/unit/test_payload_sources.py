"""Payloads named by URL (``INFERBOX_PAYLOAD_SOURCES``): what may be named, by whom, and what the
broker then stores, through Flask's test client on fakeredis and named memory:// stores."""

from __future__ import annotations

import hashlib
import json
import uuid

import fakeredis
import pytest

from broker import Settings, create_app
from broker.errors import SettingsError
from broker.queue import TaskQueue
from broker.sources import REFERENCE_TYPE, PayloadSources
from storage import open_store
from storage.memory import forget_named_stores

ALICE, BOB = "alice-token", "bob-token"
WORKER = {"Authorization": "Bearer worker-token"}


def owner_of(token: str) -> str:
    return "t-" + hashlib.sha256(token.encode()).hexdigest()[:16]


@pytest.fixture
def names():
    """Two fresh named memory stores: per-tenant uploads and a shared folder."""
    yield f"uploads-{uuid.uuid4().hex[:8]}", f"shared-{uuid.uuid4().hex[:8]}"
    forget_named_stores()


@pytest.fixture
def own_store():
    return open_store("memory://")


@pytest.fixture
def app(names, own_store):
    uploads, shared = names
    settings = Settings(client_tokens=(ALICE, BOB), worker_tokens=("worker-token",),
                        storage_url="memory://", max_payload_bytes=1000,
                        payload_sources=(f"memory://{uploads}/{{owner}}",
                                         f"memory://{shared}/in"))  # fmt: skip
    queue = TaskQueue(fakeredis.FakeRedis(server=fakeredis.FakeServer()))
    return create_app(settings, queue=queue, store=own_store)


def refer(app, url: str, token: str = ALICE, **extra):
    body = json.dumps({"url": url, **extra})
    return app.test_client().post("/predict?queue=q", data=body, content_type=REFERENCE_TYPE,
                                  headers={"Authorization": f"Bearer {token}"})  # fmt: skip


def take(app):
    return app.test_client().post("/getnexttask?queue=q", headers=WORKER)


def test_a_referenced_blob_is_copied_server_side_into_the_task(app, names, own_store):
    uploads, _ = names
    photo = bytes(range(256)) * 2
    open_store(f"memory://{uploads}").put(f"{owner_of(ALICE)}/scans/cat.png", photo,
                                          content_type="binary/octet-stream")  # fmt: skip
    response = refer(app, f"memory://{uploads}/{owner_of(ALICE)}/scans/cat.png")
    assert response.status_code == 202, response.json
    doc = response.json
    assert doc["content_type"] == "image/png" and doc["size"] == len(photo)  # named by its key
    assert own_store.read_bytes(f"inbox/{doc['task_id']}") == photo  # whole in the inbox
    taken = take(app)
    assert taken.data == photo and taken.mimetype == "image/png"


def test_the_reference_may_say_the_content_type(app, names):
    _, shared = names
    open_store(f"memory://{shared}").put("in/a", b'{"x": 1}', content_type="text/plain")
    response = refer(app, f"memory://{shared}/in/a", content_type="application/json")
    assert response.status_code == 202 and response.json["content_type"] == "application/json"
    assert take(app).json == {"x": 1}


@pytest.mark.parametrize("path", [
    "{uploads}/{bob}/secret.bin",  # another tenant's prefix
    "{uploads}/{alice}/../{bob}/secret.bin",  # climbing out
    "{uploads}/{alice}/./x",
    "{uploads}/{alice}//x",
    "{uploads}/{alice}",  # the prefix itself, not a blob under it
    "{shared}/inside/x",  # a sibling that merely starts like the source
    "{shared}/x",
    "other/in/x",
])  # fmt: skip
def test_urls_outside_the_callers_sources_are_refused_before_any_read(app, names, own_store,
                                                                        path):  # fmt: skip
    uploads, shared = names
    open_store(f"memory://{uploads}").put(f"{owner_of(BOB)}/secret.bin", b"bob's")
    url = "memory://" + path.format(uploads=uploads, shared=shared, alice=owner_of(ALICE),
                                    bob=owner_of(BOB))  # fmt: skip
    response = refer(app, url)
    assert response.status_code == 400 and response.json["error"] == "source_refused"
    assert "bob's" not in response.json["message"]
    assert list(own_store.list()) == []  # nothing stored


def test_the_owner_reads_its_own_prefix(app, names):
    uploads, _ = names
    open_store(f"memory://{uploads}").put(f"{owner_of(BOB)}/mine.bin", b"bob's")
    assert refer(app, f"memory://{uploads}/{owner_of(BOB)}/mine.bin", BOB).status_code == 202
    assert refer(app, f"memory://{uploads}/{owner_of(BOB)}/mine.bin", ALICE).status_code == 400


def test_a_missing_blob_and_a_bad_reference_are_refused(app, names, own_store):
    _, shared = names
    missing = refer(app, f"memory://{shared}/in/nothing-here")
    assert missing.status_code == 400 and "no blob" in missing.json["message"]
    for body in (b"not json", b'{"path": "x"}', b'{"url": 7}', b'["memory://x/in/a"]'):
        response = app.test_client().post("/predict", data=body, content_type=REFERENCE_TYPE,
                                          headers={"Authorization": f"Bearer {ALICE}"})
        assert response.status_code == 400, body
    assert list(own_store.list()) == []


def test_a_blob_over_the_payload_limit_is_413(app, names, own_store):
    _, shared = names
    open_store(f"memory://{shared}").put("in/big", b"x" * 1001)
    response = refer(app, f"memory://{shared}/in/big")
    assert response.status_code == 413 and list(own_store.list()) == []


def test_a_replayed_reference_names_the_same_task(app, names):
    _, shared = names
    open_store(f"memory://{shared}").put("in/a", b"a")
    first, again = (app.test_client().post(
        "/predict", data=json.dumps({"url": f"memory://{shared}/in/a"}),
        content_type=REFERENCE_TYPE,
        headers={"Authorization": f"Bearer {ALICE}", "Idempotency-Key": "k"}) for _ in "12")
    assert first.json["task_id"] == again.json["task_id"]
    assert again.headers["Idempotent-Replayed"] == "true"


def test_a_broker_without_sources_refuses_every_reference(own_store):
    queue = TaskQueue(fakeredis.FakeRedis(server=fakeredis.FakeServer()))
    app = create_app(Settings(storage_url="memory://"), queue=queue, store=own_store)
    response = app.test_client().post("/predict", data='{"url": "s3://b/in/x"}',
                                      content_type=REFERENCE_TYPE)  # fmt: skip
    assert response.status_code == 400 and response.json["error"] == "source_refused"
    assert "INFERBOX_PAYLOAD_SOURCES" in response.json["message"]


@pytest.mark.parametrize(("sources", "store"), [
    ("file:///data/in", "memory://"),
    ("s3://b/in/../x", "memory://"),
    ("gopher://b/in", "memory://"),
    ("s3://b/in?versionId=1", "memory://"),
    ("s3://{owner}/in", "memory://"),
    ("s3://b", "s3://b/inferbox"),  # covers the broker's store
    ("s3://b/inferbox", "s3://b/inferbox"),
    ("s3://b/inferbox/inbox", "s3://b/inferbox"),  # its tasks' payloads
    ("s3://b/outbox/x", "s3://b"),
    ("s3://b/{owner}", "s3://b"),  # an owner could be named like a broker folder
])  # fmt: skip
def test_sources_that_are_malformed_or_cover_the_broker_are_refused_at_start(sources, store):
    with pytest.raises(SettingsError):
        Settings.from_env({"INFERBOX_PAYLOAD_SOURCES": sources, "INFERBOX_STORAGE_URL": store})


@pytest.mark.parametrize(("sources", "store"), [
    ("s3://b/in", "s3://b"),  # beside the broker's folders in the same bucket
    ("s3://b/uploads/{owner},az://c/in", "s3://b/inferbox"),
    ("s3://other/in", "s3://b"),
])  # fmt: skip
def test_sources_beside_the_broker_are_accepted(sources, store):
    settings = Settings.from_env({"INFERBOX_PAYLOAD_SOURCES": sources,
                                  "INFERBOX_STORAGE_URL": store})  # fmt: skip
    assert PayloadSources(settings.payload_sources, own_store=store)
