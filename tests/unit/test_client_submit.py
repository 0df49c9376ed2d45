"""Client.submit against a broker mocked exactly as docs/api.md describes POST /predict."""

from __future__ import annotations

import json
from collections.abc import Iterator
from unittest import mock

import pytest
import requests
import responses
from responses import matchers

from client_sdk import (
    AuthError,
    BadRequest,
    BrokerUnavailable,
    Client,
    PayloadTooLarge,
    ProtocolError,
    Task,
    TooManyRequests,
)
from client_sdk.http import parse_multipart

BROKER = "http://broker.test"
PREDICT = f"{BROKER}/predict"


def status_doc(task_id: str = "T1", queue: str = "default", status: str = "queued") -> dict:
    return {"task_id": task_id, "status": status, "queue": queue, "priority": 0, "attempts": 0}


def accepted(task_id: str = "T1", queue: str = "default") -> dict:
    return {
        "json": status_doc(task_id, queue),
        "status": 202,
        "headers": {"Location": f"/tasks/{task_id}"},
    }


@pytest.fixture
def broker() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock() as rsps:
        yield rsps


@pytest.fixture
def client() -> Iterator[Client]:
    with Client(BROKER + "/", token="tok") as client:
        yield client


@pytest.fixture
def no_sleep() -> Iterator[mock.MagicMock]:
    with mock.patch("client_sdk.client.time.sleep") as sleep:
        yield sleep


def test_submit_json_returns_a_task_with_id_and_queue(broker, client) -> None:
    broker.add(responses.POST, PREDICT, **accepted("T1", "digits"))
    task = client.submit({"pixels": [0, 16]}, queue="digits")
    assert isinstance(task, Task)
    assert (task.id, task.queue) == ("T1", "digits")
    request = broker.calls[0].request
    assert request.headers["Content-Type"] == "application/json"
    assert json.loads(request.body) == {"pixels": [0, 16]}
    assert request.params == {"queue": "digits"}
    assert request.headers["Authorization"] == "Bearer tok"
    assert request.headers["User-Agent"].startswith("inferbox/")


@pytest.mark.parametrize(
    ("payload", "body", "content_type"),
    [
        (b"\x00\r\n--\xff", b"\x00\r\n--\xff", "application/octet-stream"),
        ("naïve", "naïve".encode(), "text/plain; charset=utf-8"),
        ([1, 2, 3], b"[1,2,3]", "application/json"),
        (b"", b"", "application/octet-stream"),
    ],
)
def test_submit_picks_the_content_type_from_the_payload_type(
    broker, client, payload, body, content_type
) -> None:
    broker.add(responses.POST, PREDICT, **accepted())
    client.submit(payload)
    request = broker.calls[0].request
    assert (request.body or b"") == body
    assert request.headers["Content-Type"] == content_type


def test_an_explicit_content_type_wins(broker, client) -> None:
    broker.add(responses.POST, PREDICT, **accepted())
    broker.add(responses.POST, PREDICT, **accepted())
    client.submit(b"\x89PNG\r\n", content_type="image/png")
    client.submit({"a": 1}, content_type="application/vnd.acme+json")
    png, doc = (call.request for call in broker.calls)
    assert (png.headers["Content-Type"], png.body) == ("image/png", b"\x89PNG\r\n")
    assert (doc.headers["Content-Type"], doc.body) == ("application/vnd.acme+json", b'{"a":1}')


def test_options_travel_as_query_parameters(broker, client) -> None:
    expected = {"queue": "q-1", "priority": "7", "max_attempts": "2", "ttl": "600"}
    broker.add(
        responses.POST, PREDICT, match=[matchers.query_param_matcher(expected)], **accepted()
    )
    client.submit(b"x", queue="q-1", priority=7, max_attempts=2, ttl=600)


def test_an_explicit_idempotency_key_is_sent(broker, client) -> None:
    broker.add(
        responses.POST,
        PREDICT,
        match=[matchers.header_matcher({"Idempotency-Key": "order-42"})],
        **accepted(),
    )
    client.submit(b"x", idempotency_key="order-42")


def test_each_submit_gets_its_own_generated_idempotency_key(broker, client) -> None:
    broker.add(responses.POST, PREDICT, **accepted("T1"))
    broker.add(responses.POST, PREDICT, **accepted("T2"))
    client.submit(b"x")
    client.submit(b"x")
    keys = [call.request.headers["Idempotency-Key"] for call in broker.calls]
    assert len(set(keys)) == 2
    assert all(len(key) == 32 for key in keys)


def test_a_connection_error_is_retried_with_the_same_key(broker, client, no_sleep) -> None:
    broker.add(responses.POST, PREDICT, body=requests.ConnectionError("reset"))
    broker.add(responses.POST, PREDICT, json={"error": "unavailable"}, status=503)
    broker.add(responses.POST, PREDICT, **accepted("T9"))
    assert client.submit({"a": 1}).id == "T9"
    keys = {call.request.headers["Idempotency-Key"] for call in broker.calls}
    assert len(broker.calls) == 3
    assert len(keys) == 1
    assert no_sleep.call_count == 2


def test_retries_run_out_into_broker_unavailable(broker, no_sleep) -> None:
    broker.add(responses.POST, PREDICT, body=requests.ConnectionError("refused"))
    with Client(BROKER, retries=2) as client, pytest.raises(BrokerUnavailable) as caught:
        client.submit(b"x")
    assert caught.value.status_code is None
    assert len(broker.calls) == 3
    assert no_sleep.call_count == 2


def test_an_internal_server_error_is_not_retried(broker, client, no_sleep) -> None:
    broker.add(responses.POST, PREDICT, json={"error": "internal", "message": "boom"}, status=500)
    with pytest.raises(BrokerUnavailable) as caught:
        client.submit(b"x")
    assert caught.value.status_code == 500
    assert len(broker.calls) == 1
    no_sleep.assert_not_called()


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (400, "invalid_option", BadRequest),
        (400, "invalid_queue", BadRequest),
        (401, "unauthorized", AuthError),
        (403, "forbidden", AuthError),
        (413, "payload_too_large", PayloadTooLarge),
    ],
)
def test_refusals_raise_at_once(broker, client, no_sleep, status, code, expected) -> None:
    broker.add(responses.POST, PREDICT, json={"error": code, "message": "no"}, status=status)
    with pytest.raises(expected) as caught:
        client.submit(b"x", priority=12)
    assert (caught.value.status_code, caught.value.error) == (status, code)
    assert len(broker.calls) == 1


def test_an_accepted_answer_without_task_id_is_a_protocol_error(broker, client) -> None:
    broker.add(responses.POST, PREDICT, json={"status": "queued"}, status=202)
    with pytest.raises(ProtocolError):
        client.submit(b"x")


def test_unencodable_payload_raises_before_any_request(broker, client) -> None:
    with pytest.raises(TypeError):
        client.submit(object())
    assert len(broker.calls) == 0


def test_the_broker_url_must_be_http() -> None:
    with pytest.raises(ValueError, match="http"):
        Client("broker.test:8000")


def test_a_429_is_retried_after_its_retry_after(broker, client, no_sleep) -> None:
    refused = {"json": {"error": "rate_limited", "message": "slow down", "retry_after": 7},
               "status": 429, "headers": {"Retry-After": "7"}}  # fmt: skip
    broker.add(responses.POST, PREDICT, **refused)
    broker.add(responses.POST, PREDICT, **accepted("T9"))
    assert client.submit(b"x").id == "T9"
    no_sleep.assert_called_once_with(7.0)
    keys = {call.request.headers["Idempotency-Key"] for call in broker.calls}
    assert len(keys) == 1  # the retry is the same submit


def test_a_full_queue_that_stays_full_raises_too_many_requests(broker, no_sleep) -> None:
    full = {"json": {"error": "queue_full", "message": "queue q is full"}, "status": 429,
            "headers": {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}}  # a date long past
    for _ in range(3):
        broker.add(responses.POST, PREDICT, **full)
    with Client(BROKER, retries=2) as client, pytest.raises(TooManyRequests) as refused:
        client.submit(b"x")
    assert (refused.value.status_code, refused.value.error) == (429, "queue_full")
    assert refused.value.retry_after == 0.0
    assert no_sleep.call_count == 2  # a date in the past: the jittered backoff instead
    assert all(0 < call.args[0] <= 8 for call in no_sleep.call_args_list)


def test_a_503_with_retry_after_is_honoured(broker, client, no_sleep) -> None:
    broker.add(responses.POST, PREDICT, json={"error": "unavailable", "message": "stopping"},
               status=503, headers={"Retry-After": "2"})
    broker.add(responses.POST, PREDICT, **accepted("T3"))
    assert client.submit(b"x").id == "T3"
    no_sleep.assert_called_once_with(2.0)


# -- submit_many: POST /predictbatch ------------------------------------------------------------

PREDICTBATCH = f"{BROKER}/predictbatch"


def part_keys(call) -> list[str]:
    parts = parse_multipart(call.request.headers["Content-Type"], call.request.body)
    return [part.headers["Idempotency-Key"] for part in parts]


def test_a_retried_batch_sends_the_same_key_per_payload(broker, client, no_sleep) -> None:
    refused = {"json": {"error": "queue_full", "message": "full", "retry_after": 5},
               "status": 429, "headers": {"Retry-After": "5"}}  # fmt: skip
    broker.add(responses.POST, PREDICTBATCH, body=requests.ConnectionError("reset"))
    broker.add(responses.POST, PREDICTBATCH, **refused)
    broker.add(responses.POST, PREDICTBATCH, json={"tasks": [status_doc("A"), status_doc("B")]},
               status=202)  # fmt: skip
    tasks = client.submit_many([{"a": 1}, b"\x00"], queue="q", priority=3)
    assert [task.id for task in tasks] == ["A", "B"]
    first, *retries = (part_keys(call) for call in broker.calls)
    assert len(set(first)) == 2 and all(keys == first for keys in retries)
    assert no_sleep.call_args_list[-1] == mock.call(5.0)
    assert broker.calls[-1].request.url == f"{PREDICTBATCH}?queue=q&priority=3"


def test_a_batch_answer_that_does_not_match_is_a_protocol_error(broker, client) -> None:
    broker.add(responses.POST, PREDICTBATCH, json={"tasks": [status_doc("A")]}, status=202)
    with pytest.raises(ProtocolError):
        client.submit_many([1, 2])


def test_a_refused_batch_raises_at_once(broker, client, no_sleep) -> None:
    broker.add(responses.POST, PREDICTBATCH, json={"error": "invalid_option", "message": "no"},
               status=400)  # fmt: skip
    with pytest.raises(BadRequest):
        client.submit_many([1], priority=10)
    no_sleep.assert_not_called()
