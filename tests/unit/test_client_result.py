"""Task.result long-polling GET /getresult/<id>, and the other per-task calls."""

from __future__ import annotations

import json
from collections.abc import Iterator
from unittest import mock

import pytest
import responses
from responses import matchers

from client_sdk import (
    BrokerUnavailable,
    Client,
    Conflict,
    NotFound,
    ProtocolError,
    TaskCanceled,
    TaskExpired,
    TaskFailed,
    TaskTimeout,
)

BROKER = "http://broker.test"
RESULT = f"{BROKER}/getresult/T1"


def doc(status: str, **extra: object) -> dict:
    return {"task_id": "T1", "status": status, "queue": "digits", **extra}


class FakeClock:
    """time.monotonic and time.sleep for the client module; each long poll 'takes' its wait."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def held_poll(self, status: str = "running"):
        """A responses callback that holds for ?wait= seconds, then answers 202."""

        def answer(request):
            self.now += float(request.params["wait"])
            return 202, {"Content-Type": "application/json"}, json.dumps(doc(status))

        return answer


@pytest.fixture
def broker() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock() as rsps:
        yield rsps


@pytest.fixture
def client() -> Iterator[Client]:
    with Client(BROKER, token="tok") as client:
        yield client


@pytest.fixture
def clock() -> Iterator[FakeClock]:
    fake = FakeClock()
    with (
        mock.patch("client_sdk.client.time.monotonic", fake.monotonic),
        mock.patch("client_sdk.client.time.sleep", fake.sleep),
    ):
        yield fake


@pytest.mark.parametrize(
    ("body", "content_type", "expected"),
    [
        (b'{"digit": 7, "confidence": 0.98}', "application/json", {"digit": 7, "confidence": 0.98}),
        ("très bien".encode(), "text/plain; charset=utf-8", "très bien"),
        (b"\x89PNG\r\n", "image/png", b"\x89PNG\r\n"),
    ],
)
def test_a_succeeded_task_returns_its_decoded_result(broker, client, body, content_type, expected):
    broker.add(
        responses.GET,
        RESULT,
        body=body,
        content_type=content_type,
        headers={"X-Inferbox-Task-Id": "T1", "X-Inferbox-Model-Version": "v1"},
    )
    assert client.task("T1").result() == expected


def test_without_timeout_it_asks_for_the_longest_wait(broker, client) -> None:
    broker.add(
        responses.GET,
        RESULT,
        match=[matchers.query_param_matcher({"wait": 60})],
        json={"ok": True},
    )
    assert client.task("T1").result() == {"ok": True}


def test_it_polls_again_until_the_task_finishes(broker, client, clock) -> None:
    broker.add_callback(responses.GET, RESULT, callback=clock.held_poll("queued"))
    broker.add_callback(responses.GET, RESULT, callback=clock.held_poll("running"))
    broker.add(responses.GET, RESULT, json=[1, 2])
    assert client.task("T1").result(timeout=300) == [1, 2]
    assert [call.request.params["wait"] for call in broker.calls] == ["60", "60", "60"]
    assert clock.sleeps == []  # a held long poll needs no pause between polls


def test_the_wait_shrinks_to_what_is_left_then_times_out(broker, client, clock) -> None:
    broker.add_callback(responses.GET, RESULT, callback=clock.held_poll("running"))
    with pytest.raises(TaskTimeout) as caught:
        client.task("T1").result(timeout=90)
    assert [call.request.params["wait"] for call in broker.calls] == ["60", "30"]
    assert caught.value.task_id == "T1"
    assert caught.value.doc["status"] == "running"


def test_timeout_zero_looks_once(broker, client, clock) -> None:
    broker.add(responses.GET, RESULT, json=doc("queued"), status=202)
    with pytest.raises(TaskTimeout):
        client.task("T1").result(timeout=0)
    assert [call.request.params["wait"] for call in broker.calls] == ["0"]


def test_a_broker_that_does_not_hold_the_poll_is_not_hammered(broker, client, clock) -> None:
    broker.add(responses.GET, RESULT, json=doc("running"), status=202)
    with pytest.raises(TaskTimeout):
        client.task("T1").result(timeout=3)
    assert len(broker.calls) <= 4
    assert clock.sleeps and all(pause <= 1.0 for pause in clock.sleeps)


def test_a_failed_task_raises_task_failed_with_the_worker_error(broker, client) -> None:
    broker.add(responses.GET, RESULT, json=doc("failed", error="ValueError: bad"), status=424)
    with pytest.raises(TaskFailed) as caught:
        client.task("T1").result()
    assert caught.value.error == "ValueError: bad"
    assert caught.value.task_id == "T1"
    assert caught.value.doc["status"] == "failed"
    assert "ValueError: bad" in str(caught.value)


@pytest.mark.parametrize(
    ("status_code", "status", "expected"),
    [(409, "canceled", TaskCanceled), (410, "expired", TaskExpired)],
)
def test_canceled_and_expired_tasks_raise(broker, client, status_code, status, expected) -> None:
    broker.add(responses.GET, RESULT, json=doc(status), status=status_code)
    with pytest.raises(expected) as caught:
        client.task("T1").result(timeout=5)
    assert caught.value.doc["status"] == status


def test_an_unknown_task_raises_not_found(broker, client) -> None:
    broker.add(responses.GET, RESULT, json={"error": "not_found", "message": "no task"}, status=404)
    with pytest.raises(NotFound):
        client.task("T1").result()


def test_a_broker_fault_raises_broker_unavailable(broker, client) -> None:
    broker.add(responses.GET, RESULT, json={"error": "unavailable"}, status=503)
    with pytest.raises(BrokerUnavailable):
        client.task("T1").result()


def test_a_result_that_contradicts_its_type_is_a_protocol_error(broker, client) -> None:
    broker.add(responses.GET, RESULT, body=b"{not json", content_type="application/json")
    with pytest.raises(ProtocolError):
        client.task("T1").result()


def test_status_info_and_lazy_queue(broker, client) -> None:
    broker.add(responses.GET, f"{BROKER}/tasks/T1", json=doc("running"))
    task = client.task("T1")
    assert len(broker.calls) == 0  # a handle costs no request
    assert task.status() == "running"
    assert task.info()["queue"] == "digits"
    assert task.queue == "digits"
    assert len(broker.calls) == 2
    assert client.status("T1") == doc("running")


def test_cancel_returns_the_status_document(broker, client) -> None:
    broker.add(responses.POST, f"{BROKER}/tasks/T1/cancel", json=doc("canceled"))
    assert client.task("T1").cancel()["status"] == "canceled"


def test_cancelling_a_finished_task_raises_conflict(broker, client) -> None:
    broker.add(
        responses.POST,
        f"{BROKER}/tasks/T1/cancel",
        json={"error": "task_finished", "message": "already succeeded"},
        status=409,
    )
    with pytest.raises(Conflict) as caught:
        client.cancel("T1")
    assert caught.value.error == "task_finished"


def test_task_ids_are_escaped_into_the_path(broker, client) -> None:
    broker.add(responses.GET, f"{BROKER}/tasks/a%2Fb", json=doc("queued"))
    assert client.status("a/b")["status"] == "queued"


def test_an_empty_task_id_is_refused(client) -> None:
    with pytest.raises(ValueError):
        client.task("")
