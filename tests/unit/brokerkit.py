"""A broker in-process for unit tests: fakeredis, memory storage, a clock the test moves, and
small helpers that speak the HTTP API through Flask's test client."""

from __future__ import annotations

import json
import threading
from dataclasses import replace
from typing import Any

import fakeredis
from flask import Flask
from flask.testing import FlaskClient

from broker import Settings, create_app
from broker.app import Inferbox
from broker.queue import TaskQueue
from storage import BlobStore

CLIENT_TOKEN, OTHER_TOKEN, WORKER_TOKEN, ADMIN_TOKEN = "alice-token", "bob-token", "w-token", "root"
CLIENT = {"Authorization": f"Bearer {CLIENT_TOKEN}"}
OTHER_CLIENT = {"Authorization": f"Bearer {OTHER_TOKEN}"}
WORKER = {"Authorization": f"Bearer {WORKER_TOKEN}"}
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

SETTINGS = Settings(
    client_tokens=(CLIENT_TOKEN, OTHER_TOKEN), worker_tokens=(WORKER_TOKEN,),
    admin_tokens=(ADMIN_TOKEN,), storage_url="memory://", max_payload_bytes=10_000,
)  # fmt: skip


def make_app(
    store: BlobStore, clock: Any, *, redis: Any = None, **settings: Any
) -> Flask:
    """A broker on ``store``; a fresh fakeredis (an empty index) unless ``redis`` is given."""
    client = redis if redis is not None else fakeredis.FakeRedis(server=fakeredis.FakeServer())
    queue = TaskQueue(client, clock=clock)
    app = create_app(replace(SETTINGS, **settings), queue=queue, store=store)
    recheck_every(app, 0.05)
    return app


def box(app: Flask) -> Inferbox:
    return app.extensions["inferbox"]  # type: ignore[no-any-return]


def recheck_every(app: Flask, seconds: float) -> None:
    """Make the app's waiting takes and clients re-read their state every ``seconds`` without a
    notice: small to keep a test quick, large so that only a notice can wake a wait."""
    notifier = box(app).mailbox.notifier
    notifier.recheck = notifier.watch_recheck = seconds


def submit(http: FlaskClient, body: bytes = b'{"x": 1}', headers: dict | None = None,
           content_type: str = "application/json", **query: Any) -> str:  # fmt: skip
    response = http.post("/predict", data=body, content_type=content_type,
                         headers=headers or CLIENT, query_string=query)  # fmt: skip
    assert response.status_code == 202, response.json
    return str(response.json["task_id"])


def take(http: FlaskClient, **query: Any) -> tuple[str, str]:
    """(task id, lease id) of the next task; fails the test when there is none."""
    response = http.post("/getnexttask", headers=WORKER, query_string=query)
    assert response.status_code == 200, response.status_code
    return response.headers["X-Inferbox-Task-Id"], response.headers["X-Inferbox-Lease-Id"]


def put(http: FlaskClient, task_id: str, lease_id: str, body: bytes = b"ok",
        content_type: str = "text/plain") -> Any:  # fmt: skip
    return http.post(f"/puttaskresult/{task_id}", data=body, content_type=content_type,
                     headers={**WORKER, "X-Inferbox-Lease-Id": lease_id})  # fmt: skip


def put_error(http: FlaskClient, task_id: str, lease_id: str, error: str = "ValueError: no",
              retryable: bool = True) -> Any:  # fmt: skip
    body = json.dumps({"error": error, "retryable": retryable}).encode()
    return put(http, task_id, lease_id, body, "application/vnd.inferbox.error+json")


def status(http: FlaskClient, task_id: str, headers: dict | None = None) -> dict[str, Any]:
    response = http.get(f"/tasks/{task_id}", headers=headers or CLIENT)
    assert response.status_code == 200, (response.status_code, response.json)
    return dict(response.json)


def count_reads(queue: TaskQueue) -> list[str]:
    """The task ids ``queue.get`` reads from here on, in the calling thread only."""
    caller, reads, read = threading.get_ident(), [], queue.get

    def counted(task_id: str) -> Any:
        if threading.get_ident() == caller:
            reads.append(task_id)
        return read(task_id)

    queue.get = counted  # type: ignore[method-assign]
    return reads
