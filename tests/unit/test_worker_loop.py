"""Worker.run against a broker mocked as docs/api.md describes the worker endpoints."""

from __future__ import annotations

import io
import json
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import requests
import responses
from responses import matchers

from client_sdk import AuthError
from worker import Worker
from worker.api import BrokerAPI
from worker.heartbeat import LeaseKeeper
from worker.task import TakenTask, taken_tasks
from worker.worker import ERROR_CONTENT_TYPE, error_document

BROKER = "http://broker.test"
TAKE = f"{BROKER}/getnexttask"
ERROR_TYPE = "application/vnd.inferbox.error+json"


def put_url(task_id: str) -> str:
    return f"{BROKER}/puttaskresult/{task_id}"


def lease_headers(task_id: str, lease_id: str | None = None, attempt: int = 1) -> dict:
    return {
        "X-Inferbox-Task-Id": task_id,
        "X-Inferbox-Lease-Id": lease_id or f"L-{task_id}",
        "X-Inferbox-Lease-Deadline": "2026-11-21T17:05:52.123Z",
        "X-Inferbox-Queue": "default",
        "X-Inferbox-Attempt": str(attempt),
    }


def add_task(
    broker: responses.RequestsMock,
    task_id: str = "T1",
    body: bytes = b'{"x": 1}',
    content_type: str = "application/json",
) -> None:
    """One 200 take answer (max_tasks=1 framing) and a 200 for its result."""
    broker.add(
        responses.POST, TAKE, body=body, content_type=content_type, headers=lease_headers(task_id)
    )
    broker.add(responses.POST, put_url(task_id), json={"task_id": task_id, "status": "succeeded"})


def puts(broker: responses.RequestsMock) -> list[requests.PreparedRequest]:
    return [call.request for call in broker.calls if "/puttaskresult/" in call.request.url]


def takes(broker: responses.RequestsMock) -> list[requests.PreparedRequest]:
    return [call.request for call in broker.calls if call.request.url.startswith(TAKE)]


@pytest.fixture
def broker() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield rsps


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Record the worker's backoff pauses instead of waiting them out."""
    recorded: list[float] = []
    monkeypatch.setattr(Worker, "_sleep", lambda self, seconds: recorded.append(seconds))
    return recorded


def make_worker(**options: Any) -> Worker:
    options.setdefault("worker_id", "w-1")
    return Worker(BROKER, "wtok", **options)


def test_take_run_handler_post_result(broker, sleeps) -> None:
    add_task(broker, "T1", b'{"pixels": [1, 2]}')
    seen = []

    def handler(payload):
        seen.append(payload)
        return {"digit": 3, "confidence": 0.9}

    make_worker(queue="digits", lease=30, wait=5, model_version="v2").run(handler, max_tasks=1)
    assert seen == [{"pixels": [1, 2]}]
    [take] = takes(broker)
    assert take.params == {
        "queue": "digits",
        "max_tasks": "1",
        "wait": "5",
        "lease": "30",
        "worker_id": "w-1",
    }
    assert take.headers["Authorization"] == "Bearer wtok"
    [put] = puts(broker)
    assert json.loads(put.body) == {"digit": 3, "confidence": 0.9}
    assert put.headers["Content-Type"] == "application/json"
    assert put.headers["X-Inferbox-Lease-Id"] == "L-T1"
    assert put.headers["X-Inferbox-Model-Version"] == "v2"
    assert sleeps == []


@pytest.mark.parametrize(
    ("body", "content_type", "payload"),
    [
        (b"hello", "text/plain; charset=utf-8", "hello"),
        (b"\x00\r\n\xff", "application/octet-stream", b"\x00\r\n\xff"),
        (b"[1, 2]", "application/json", [1, 2]),
    ],
)
def test_payload_is_decoded_by_content_type(broker, body, content_type, payload) -> None:
    add_task(broker, "T1", body, content_type)
    seen = []
    make_worker().run(seen.append, max_tasks=1)
    assert seen == [payload]


def test_images_and_npy_payloads_arrive_as_numpy_arrays(broker) -> None:
    from PIL import Image

    picture = np.arange(48, dtype=np.uint8).reshape(4, 4, 3)
    png = io.BytesIO()
    Image.fromarray(picture).save(png, format="PNG")
    npy = io.BytesIO()
    np.save(npy, np.eye(3, dtype=np.float32))
    add_task(broker, "T1", png.getvalue(), "image/png")
    add_task(broker, "T2", npy.getvalue(), "application/x-npy")
    seen = []
    make_worker().run(seen.append, max_tasks=2)
    np.testing.assert_array_equal(seen[0], picture)
    assert seen[1].dtype == np.float32 and seen[1].shape == (3, 3)


def test_a_handler_may_ask_for_raw_bytes_and_answer_with_its_own_type(broker) -> None:
    from worker import Encoded, handler

    add_task(broker, "T1", b"\x89PNG not really", "image/png")

    @handler(raw=True)
    def passthrough(body, ctx):
        return Encoded(body[::-1], f"application/x-reversed+{ctx.content_type.split('/')[1]}")

    make_worker().run(passthrough, max_tasks=1)
    [put] = puts(broker)
    assert put.body == b"yllaer ton GNP\x89"
    assert put.headers["Content-Type"] == "application/x-reversed+png"


def test_a_broken_image_fails_its_task_for_good(broker) -> None:
    add_task(broker, "T1", b"\x89PNG broken", "image/png")
    called = []
    make_worker().run(called.append, max_tasks=1)
    assert called == []
    document = json.loads(puts(broker)[0].body)
    assert document["error"].startswith("ValueError: not a readable image")
    assert document["retryable"] is False


@pytest.mark.parametrize(
    ("result", "content_type"),
    [
        ("seven", "text/plain; charset=utf-8"),
        (b"\x01\x02", "application/octet-stream"),
        (None, "application/json"),
        (7, "application/json"),
        (np.eye(2), "application/x-npy"),
    ],
)
def test_result_is_encoded_by_type(broker, result, content_type) -> None:
    add_task(broker)
    make_worker().run(lambda payload: result, max_tasks=1)
    [put] = puts(broker)
    assert put.headers["Content-Type"] == content_type
    if isinstance(result, np.ndarray):
        np.testing.assert_array_equal(np.load(io.BytesIO(put.body)), result)
    # no model_version given: a hash of the handler's module stands for it
    assert put.headers["X-Inferbox-Model-Version"].startswith("tests.unit.test_worker_loop@")


def test_a_handler_exception_posts_an_error_document_and_the_loop_goes_on(broker) -> None:
    add_task(broker, "T1", b'{"x": 1}')
    add_task(broker, "T2", b'{"x": 2}')

    def handler(payload):
        if payload["x"] == 1:
            raise ValueError("pixel 3 is not a number")
        return "ok"

    make_worker().run(handler, max_tasks=2)
    failure, success = puts(broker)
    assert failure.url == put_url("T1")
    assert failure.headers["Content-Type"] == ERROR_TYPE
    assert failure.headers["X-Inferbox-Lease-Id"] == "L-T1"
    document = json.loads(failure.body)
    assert document["error"] == "ValueError: pixel 3 is not a number"
    assert document["retryable"] is True
    assert "in handler" in document["traceback"]
    assert success.url == put_url("T2")
    assert success.body == b"ok"


def test_an_undecodable_payload_fails_the_task_for_good(broker) -> None:
    add_task(broker, "T1", b"{not json", "application/json")
    called = []
    make_worker().run(called.append, max_tasks=1)
    assert called == []
    document = json.loads(puts(broker)[0].body)
    assert document["error"].startswith("JSONDecodeError")
    assert document["retryable"] is False


def test_an_unencodable_result_fails_the_task(broker) -> None:
    add_task(broker)
    make_worker().run(lambda payload: {1, 2}, max_tasks=1)
    [put] = puts(broker)
    assert put.headers["Content-Type"] == ERROR_TYPE
    assert json.loads(put.body)["error"].startswith("TypeError: cannot encode a set")


def test_a_409_on_posting_is_logged_and_the_loop_goes_on(broker, caplog) -> None:
    broker.add(responses.POST, TAKE, body=b"{}", content_type="application/json",
               headers=lease_headers("T1"))  # fmt: skip
    broker.add(
        responses.POST,
        put_url("T1"),
        json={"error": "lease_lost", "message": "lease expired"},
        status=409,
    )
    add_task(broker, "T2")
    with caplog.at_level(logging.WARNING, logger="inferbox.worker"):
        make_worker().run(lambda payload: "done", max_tasks=2)
    assert [put.url for put in puts(broker)] == [put_url("T1"), put_url("T2")]
    assert "lease lost" in caplog.text


def test_no_content_means_poll_again_at_once(broker, sleeps) -> None:
    broker.add(responses.POST, TAKE, status=204)
    broker.add(responses.POST, TAKE, status=204)
    add_task(broker, "T1")
    handled = []
    make_worker().run(handled.append, max_tasks=1)
    assert len(handled) == 1
    assert len(takes(broker)) == 3
    assert sleeps == []


def test_an_unreachable_broker_means_backoff_with_jitter_then_reset(broker, sleeps) -> None:
    for _ in range(3):
        broker.add(responses.POST, TAKE, body=requests.ConnectionError("refused"))
    broker.add(responses.POST, TAKE, json={"error": "unavailable"}, status=503)
    add_task(broker, "T1")
    broker.add(responses.POST, TAKE, body=requests.ConnectionError("refused"))
    broker.add(responses.POST, TAKE, status=204)
    broker.add(responses.POST, TAKE, body=b"x", content_type="text/plain",
               headers=lease_headers("T2"))  # fmt: skip
    broker.add(responses.POST, put_url("T2"), json={"task_id": "T2", "status": "succeeded"})
    make_worker().run(lambda payload: "ok", max_tasks=2)
    ceilings = [0.5, 1.0, 2.0, 4.0, 0.5]  # doubling, and back to the start after a success
    assert len(sleeps) == len(ceilings)
    assert all(c / 2 <= s <= c for s, c in zip(sleeps, ceilings, strict=True))
    assert len(puts(broker)) == 2


def test_backoff_is_capped_at_thirty_seconds(broker, sleeps) -> None:
    for _ in range(12):
        broker.add(responses.POST, TAKE, body=requests.ConnectionError("refused"))
    add_task(broker)
    make_worker().run(lambda payload: "ok", max_tasks=1)
    assert len(sleeps) == 12
    assert max(sleeps) <= 30.0
    assert sleeps[-1] >= 15.0


def test_a_result_that_cannot_be_posted_yet_is_retried(broker, sleeps) -> None:
    broker.add(responses.POST, TAKE, body=b"{}", content_type="application/json",
               headers=lease_headers("T1"))  # fmt: skip
    broker.add(responses.POST, put_url("T1"), body=requests.ConnectionError("reset"))
    broker.add(responses.POST, put_url("T1"), json={"error": "unavailable"}, status=503)
    broker.add(responses.POST, put_url("T1"), json={"task_id": "T1", "status": "succeeded"})
    make_worker().run(lambda payload: [1], max_tasks=1)
    bodies = [put.body for put in puts(broker)]
    assert bodies == [b"[1]"] * 3
    assert len(sleeps) == 2


def test_a_result_over_the_payload_limit_fails_the_task_instead(broker) -> None:
    broker.add(responses.POST, TAKE, body=b"{}", content_type="application/json",
               headers=lease_headers("T1"))  # fmt: skip
    broker.add(responses.POST, put_url("T1"), json={"error": "payload_too_large"}, status=413)
    broker.add(responses.POST, put_url("T1"), json={"task_id": "T1", "status": "failed"})
    make_worker().run(lambda payload: b"x" * 1000, max_tasks=1)
    first, second = puts(broker)
    assert second.headers["Content-Type"] == ERROR_TYPE
    document = json.loads(second.body)
    assert document["error"].startswith("PayloadTooLarge")
    assert document["retryable"] is False


def test_a_bad_token_stops_the_loop_with_auth_error(broker) -> None:
    broker.add(responses.POST, TAKE, json={"error": "unauthorized", "message": "bad"}, status=401)
    with pytest.raises(AuthError):
        make_worker().run(lambda payload: None)


def test_stop_from_the_handler_returns_after_the_task_in_hand(broker) -> None:
    add_task(broker, "T1")
    add_task(broker, "T2")
    worker = make_worker()

    def handler(payload):
        deadline = time.monotonic() + 5
        while len(takes(broker)) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)  # the fetcher takes T2 ahead while the model works on T1
        worker.stop()
        return "last"

    broker.add(responses.POST, f"{BROKER}/tasks/T2/release", json={"status": "queued"})
    worker.run(handler)
    assert len(puts(broker)) == 1
    # T2 was fetched ahead while the handler worked on T1: it goes back, unstarted
    released = [c.request for c in broker.calls if c.request.url.endswith("/release")]
    assert len(takes(broker)) == 2 and len(released) == 1
    assert json.loads(released[0].body) == {"lease_id": "L-T2"}
    assert not worker.stopping  # a stopped worker can run again


def test_without_pipelining_stop_takes_nothing_more(broker) -> None:
    add_task(broker, "T1")
    add_task(broker, "T2")
    worker = make_worker(pipeline=False)

    def handler(payload):
        worker.stop()
        return "last"

    worker.run(handler)
    assert len(takes(broker)) == 1
    assert len(puts(broker)) == 1


def test_stop_from_another_thread_ends_an_idle_loop(broker) -> None:
    broker.add(responses.POST, TAKE, status=204)
    worker = make_worker(wait=0)
    thread = threading.Thread(target=worker.run, args=(lambda payload: None,))
    thread.start()
    time.sleep(0.05)
    worker.stop()
    thread.join(timeout=5)
    assert not thread.is_alive()


def test_a_task_canceled_while_running_is_not_posted(broker, caplog) -> None:
    broker.add(responses.POST, TAKE, body=b"{}", content_type="application/json",
               headers=lease_headers("T1"))  # fmt: skip
    heartbeat_seen = threading.Event()

    def slow_handler(payload):
        heartbeat_seen.wait(timeout=5)
        time.sleep(0.05)
        return "too late"

    def heartbeat(request: requests.PreparedRequest) -> tuple[int, dict, str]:
        heartbeat_seen.set()
        return 200, {}, '{"lease_deadline": null, "canceled": true}'

    broker.add_callback(responses.POST, f"{BROKER}/tasks/T1/heartbeat", callback=heartbeat)
    with caplog.at_level(logging.WARNING, logger="inferbox.worker"):
        make_worker(lease=1).run(slow_handler, max_tasks=1)
    assert heartbeat_seen.is_set()
    assert puts(broker) == []
    assert "canceled" in caplog.text


def test_one_debug_line_per_task_and_info_at_start_and_stop(broker, caplog) -> None:
    add_task(broker, "T1")
    add_task(broker, "T2")
    with caplog.at_level(logging.DEBUG, logger="inferbox.worker"):
        make_worker().run(lambda payload: "ok", max_tasks=2)
    records = [r for r in caplog.records if r.name == "inferbox.worker"]
    assert [r.levelname for r in records] == ["INFO", "DEBUG", "DEBUG", "INFO"]
    assert "T1" in records[1].getMessage()


def test_defaults_and_queue_lists() -> None:
    worker = Worker(BROKER, queue=["a", "b"])
    assert worker.queue == "a,b"
    hostname, _, pid = worker.worker_id.rpartition("-")
    assert hostname and pid.isdigit()
    with pytest.raises(ValueError):
        Worker(BROKER, lease=0)
    with pytest.raises(ValueError):
        Worker("broker.test")


def test_take_answer_may_carry_several_tasks_as_multipart() -> None:
    boundary = "zz"
    body = (
        b"--zz\r\nContent-Type: application/json\r\nX-Inferbox-Task-Id: A\r\n"
        b"X-Inferbox-Lease-Id: LA\r\nX-Inferbox-Attempt: 2\r\n\r\n{}\r\n"
        b"--zz\r\nContent-Type: image/png\r\nX-Inferbox-Task-Id: B\r\n"
        b"X-Inferbox-Lease-Id: LB\r\n\r\n\x89PNG\r\n--\r\n"
        b"--zz--\r\n"
    )
    response = requests.Response()
    response.status_code = 200
    response.headers["Content-Type"] = f"multipart/mixed; boundary={boundary}"
    response._content = body
    first, second = taken_tasks(response)
    assert (first.id, first.lease_id, first.attempt, first.payload()) == ("A", "LA", 2, {})
    assert (second.id, second.content_type, second.body) == ("B", "image/png", b"\x89PNG\r\n--")


def test_a_single_task_whose_payload_is_multipart_is_not_split() -> None:
    response = requests.Response()
    response.status_code = 200
    response.headers.update(lease_headers("T1"))
    response.headers["Content-Type"] = "multipart/mixed; boundary=q"
    response._content = b"--q\r\n\r\nuser data\r\n--q--"
    [task] = taken_tasks(response)
    assert task.body == response._content


def held_task(task_id: str = "T1", lease_id: str = "L1") -> TakenTask:
    return TakenTask(task_id, lease_id, "", "default", 1, "application/json", b"{}")


@pytest.mark.parametrize(
    ("status", "answer", "lost"),
    [
        (200, {"lease_deadline": "2026-11-21T17:06:52.123Z", "canceled": False}, False),
        (200, {"lease_deadline": None, "canceled": True}, True),
        (409, {"error": "lease_lost", "message": "gone"}, True),
        (503, {"error": "unavailable"}, False),
    ],
)
def test_heartbeat_outcomes(broker, status, answer, lost) -> None:
    url = f"{BROKER}/tasks/T1/heartbeat"
    broker.add(responses.POST, url, json=answer, status=status,
               match=[matchers.json_params_matcher({"lease_id": "L1"})])  # fmt: skip
    keeper = LeaseKeeper(BrokerAPI(BROKER, "t", timeout=5, retries=0), lease=60)
    task = held_task()
    keeper.add([task])
    before = keeper.deadline([task])
    time.sleep(0.01)
    keeper.beat(task)
    assert (keeper.lost(task) is not None) is lost
    assert (keeper.deadline([task]) > before) is (status == 200 and not lost)


def test_heartbeat_connection_failure_is_not_a_lost_lease(broker) -> None:
    url = f"{BROKER}/tasks/T1/heartbeat"
    broker.add(responses.POST, url, body=requests.ConnectionError("refused"))
    keeper = LeaseKeeper(BrokerAPI(BROKER, "t", timeout=5, retries=0), lease=60)
    task = held_task()
    keeper.add([task])
    keeper.beat(task)
    assert keeper.lost(task) is None


def test_error_document_shape() -> None:
    try:
        raise KeyError("pixels")
    except KeyError as exc:
        body, content_type = error_document(exc)
    assert content_type == ERROR_CONTENT_TYPE == ERROR_TYPE
    document = json.loads(body)
    assert document["error"] == "KeyError: 'pixels'"
    assert document["retryable"] is True
    assert "KeyError" in document["traceback"]
