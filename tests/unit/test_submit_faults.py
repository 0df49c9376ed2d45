"""Submit is all or nothing: a storage or Redis failure answers 503 and leaves no half task."""

from __future__ import annotations

import io

from werkzeug.exceptions import ClientDisconnected

from broker import keys as K
from broker.errors import Unavailable
from storage import StorageUnavailable
from tests.unit.brokerkit import CLIENT, box, status


def index_keys(app):
    return sorted(k.decode() for k in box(app).mailbox.queue.redis.keys("inferbox:*"))


def unavailable(response):
    assert response.status_code == 503, (response.status_code, response.json)
    assert response.json["error"] == "unavailable"


def test_storage_failure_indexes_nothing(app, store, monkeypatch):
    def broken(*args, **kwargs):
        raise StorageUnavailable("bucket unreachable")

    monkeypatch.setattr(store, "_put", broken)
    unavailable(app.test_client().post("/predict", data=b"x", headers=CLIENT))
    assert [k for k in index_keys(app) if ":task:" in k or ":queue:" in k] == []


def test_redis_failure_before_indexing_deletes_the_payload(app, store, monkeypatch):
    queue = box(app).mailbox.queue
    run = queue._run

    def failing(name, *args, **options):
        if name == "submit":
            raise Unavailable("Redis failed during submit: connection reset")
        return run(name, *args, **options)

    monkeypatch.setattr(queue, "_run", failing)
    unavailable(app.test_client().post("/predict", data=b"x", headers=CLIENT))
    assert list(store.list("")) == []


def test_redis_failure_after_indexing_keeps_the_payload(app, store, monkeypatch):
    """The script ran but its answer was lost: the task is whole, and the client's retry with
    the same Idempotency-Key finds it."""
    queue = box(app).mailbox.queue
    run = queue._run

    def answer_lost(name, *args, **options):
        result = run(name, *args, **options)
        if name == "submit":
            raise Unavailable("Redis failed during submit: connection reset")
        return result

    monkeypatch.setattr(queue, "_run", answer_lost)
    http = app.test_client()
    headers = {**CLIENT, "Idempotency-Key": "order-1"}
    unavailable(http.post("/predict", data=b"x", headers=headers))
    monkeypatch.undo()
    retried = http.post("/predict", data=b"x", headers=headers)
    assert retried.status_code == 202 and retried.headers["Idempotent-Replayed"] == "true"
    task_id = retried.json["task_id"]
    assert store.read_bytes(K.payload_key(task_id)) == b"x"


def test_when_redis_cannot_tell_the_janitor_restores_the_task(app, store, clock, monkeypatch):
    queue = box(app).mailbox.queue
    run = queue._run

    def failing(name, *args, **options):
        if name == "submit":
            raise Unavailable("Redis failed during submit: connection reset")
        return run(name, *args, **options)

    def blind(task_ids):
        raise Unavailable("Redis is down")

    monkeypatch.setattr(queue, "_run", failing)
    monkeypatch.setattr(queue, "missing", blind)
    unavailable(app.test_client().post("/predict", data=b"x", headers=CLIENT))
    monkeypatch.undo()
    (key,) = store.list("inbox/")  # kept: it may be indexed, and an index without it is worse
    clock.advance(K.DEFAULT_RECONCILE_GRACE + 1)
    report = box(app).janitor.run_once(reconcile=True).reconciled
    assert report is not None and report.restored == {"queued": 1}
    assert status(app.test_client(), key.split("/")[1])["status"] == "queued"


def test_a_client_that_goes_away_mid_upload_leaves_nothing(app, store):
    class Vanishing(io.RawIOBase):
        def readinto(self, buffer):
            raise ClientDisconnected()

    chunked = {"wsgi.input": Vanishing(), "wsgi.input_terminated": True}  # as gunicorn passes it
    response = app.test_client().post("/predict", headers=CLIENT, environ_overrides=chunked)
    assert response.status_code == 400
    assert list(store.list("")) == []
    assert [k for k in index_keys(app) if ":task:" in k] == []
