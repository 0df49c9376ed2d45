"""``POST /predict?wait=N``: one request per task when the worker is quick, 202 when it is not."""

from __future__ import annotations

import io
import json
import threading
import time

import fakeredis
import pytest

from broker import Settings, create_app
from broker.queue import TaskQueue
from tests.unit.brokerkit import count_reads, recheck_every

CLIENT = {"Authorization": "Bearer alice-token"}
OTHER_CLIENT = {"Authorization": "Bearer bob-token"}
WORKER = {"Authorization": "Bearer worker-token"}


@pytest.fixture
def app(store):
    settings = Settings(client_tokens=("alice-token", "bob-token"),
                        worker_tokens=("worker-token",), storage_url="memory://",
                        max_wait=3)  # fmt: skip
    queue = TaskQueue(fakeredis.FakeRedis(server=fakeredis.FakeServer()))
    app = create_app(settings, queue=queue, store=store)
    recheck_every(app, 0.05)
    return app


def serve_one(app, *, body=b'{"label": 7}', content_type="application/json", error=None,
              delay=0.0, model_version="v7") -> threading.Thread:  # fmt: skip
    """A worker thread: take one task (waiting for it), then post ``body`` or ``error``."""

    def work() -> None:
        http = app.test_client()
        taken = http.post("/getnexttask", headers=WORKER,
                          query_string={"wait": 10, "queue": "default,q"})  # fmt: skip
        assert taken.status_code == 200
        time.sleep(delay)
        task_id = taken.headers["X-Inferbox-Task-Id"]
        lease_id = taken.headers["X-Inferbox-Lease-Id"]
        headers = {**WORKER, "X-Inferbox-Lease-Id": lease_id,
                   "X-Inferbox-Model-Version": model_version}  # fmt: skip
        if error is None:
            http.post(f"/puttaskresult/{task_id}", data=body, content_type=content_type,
                      headers=headers)  # fmt: skip
        else:
            http.post(f"/puttaskresult/{task_id}", headers=headers,
                      data=json.dumps({"error": error, "retryable": False}),
                      content_type="application/vnd.inferbox.error+json")  # fmt: skip

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread


def test_a_quick_worker_answers_in_the_same_response(app):
    worker = serve_one(app, body=b'{"label": 7}')
    started = time.monotonic()
    response = app.test_client().post("/predict?queue=q&wait=10", json={"pixels": [1, 2]},
                                      headers=CLIENT)  # fmt: skip
    assert time.monotonic() - started < 5  # woken by the result, not by the wait running out
    worker.join(5)
    assert response.status_code == 200
    assert response.json == {"label": 7} and response.mimetype == "application/json"
    task_id = response.headers["X-Inferbox-Task-Id"]
    assert response.headers["Location"] == f"/tasks/{task_id}"
    assert response.headers["X-Inferbox-Model-Version"] == "v7"
    status = app.test_client().get(f"/tasks/{task_id}", headers=CLIENT).json
    assert status["status"] == "succeeded" and status["queue"] == "q"


def test_without_a_worker_it_answers_202_when_the_wait_runs_out(app):
    started = time.monotonic()
    response = app.test_client().post("/predict?wait=1", data=b"x", headers=CLIENT)
    elapsed = time.monotonic() - started
    assert response.status_code == 202 and 0.9 <= elapsed < 4
    doc = response.json
    assert doc["status"] == "queued"
    assert response.headers["Location"] == f"/tasks/{doc['task_id']}"
    assert response.headers["X-Inferbox-Task-Id"] == doc["task_id"]
    # the task goes on: a worker that comes later serves it, and /getresult has the answer
    serve_one(app, body=b"late").join(5)
    late = app.test_client().get(f"/getresult/{doc['task_id']}?wait=5", headers=CLIENT)
    assert late.status_code == 200 and late.data == b"late"


def test_a_slow_worker_gets_202_then_the_result_by_id(app):
    worker = serve_one(app, body=b"slow answer", content_type="text/plain", delay=1.5)
    response = app.test_client().post("/predict?wait=0.5", data=b"x", headers=CLIENT)
    assert response.status_code == 202 and response.json["status"] == "running"
    worker.join(5)
    task_id = response.json["task_id"]
    assert app.test_client().get(f"/getresult/{task_id}", headers=CLIENT).data == b"slow answer"


def test_a_failed_task_answers_424_with_the_error(app):
    serve_one(app, error="ValueError: bad pixel")
    response = app.test_client().post("/predict?wait=10", data=b"x", headers=CLIENT)
    assert response.status_code == 424
    assert response.json["status"] == "failed" and "bad pixel" in response.json["error"]
    assert response.headers["Location"] == f"/tasks/{response.json['task_id']}"


def test_the_wait_is_capped_by_max_wait(app):
    started = time.monotonic()
    response = app.test_client().post("/predict?wait=3600", data=b"x", headers=CLIENT)
    assert response.status_code == 202 and time.monotonic() - started < 6  # max_wait is 3


def test_without_wait_it_answers_at_once(app):
    started = time.monotonic()
    response = app.test_client().post("/predict", data=b"x", headers=CLIENT)
    assert response.status_code == 202 and time.monotonic() - started < 1


@pytest.mark.parametrize("wait", ["-1", "soon", "nan"])
def test_a_bad_wait_is_refused_before_anything_is_stored(app, store, wait):
    response = app.test_client().post("/predict", query_string={"wait": wait}, data=b"x",
                                      headers=CLIENT)  # fmt: skip
    assert response.status_code == 400 and response.json["error"] == "invalid_option"
    assert list(store.list()) == []


def test_a_replayed_submit_waits_on_the_original_task(app):
    serve_one(app, body=b"first")
    headers = {**CLIENT, "Idempotency-Key": "k-1"}
    first = app.test_client().post("/predict?wait=10", data=b"x", headers=headers)
    again = app.test_client().post("/predict?wait=10", data=b"x", headers=headers)
    assert first.status_code == again.status_code == 200
    assert again.data == b"first" and again.headers["Idempotent-Replayed"] == "true"
    assert again.headers["X-Inferbox-Task-Id"] == first.headers["X-Inferbox-Task-Id"]


def test_the_answer_costs_no_read_of_the_task(app):
    recheck_every(app, 60)  # only the done notice wakes it
    serve_one(app, body=b"quick", delay=0.2)
    reads = count_reads(app.extensions["inferbox"].mailbox.queue)
    response = app.test_client().post("/predict?wait=30", data=b"x", headers=CLIENT)
    assert response.status_code == 200 and response.data == b"quick"
    # the submit's own answer was the first look, the done notice the last
    assert reads == []


def test_a_task_that_ends_during_its_submit_is_answered_by_its_notice(app):
    """The wait listens before the task exists: a worker quicker than the submit's return
    still wakes it (else it would sleep until the wait runs out)."""
    mailbox = app.extensions["inferbox"].mailbox
    recheck_every(app, 60)
    submit = mailbox.submit

    def submit_then_finish(*args, **kwargs):
        task, created = submit(*args, **kwargs)
        (lease,) = mailbox.queue.take(["default"], max_tasks=1, lease_seconds=10, worker_id="w")
        mailbox.complete(task.id, lease.lease_id, io.BytesIO(b"early"), content_type="text/plain")
        return task, created

    mailbox.submit = submit_then_finish
    started = time.monotonic()
    response = app.test_client().post("/predict?wait=30", data=b"x", headers=CLIENT)
    assert response.status_code == 200 and response.data == b"early"
    assert time.monotonic() - started < 2  # the notice woke it, not the end of the wait (3 s)
