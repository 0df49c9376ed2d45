"""The synchronous form from the client: ``submit(wait=)`` and ``predict`` over
``POST /predict?wait=``, against a broker mocked as docs/api.md describes it."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator

import pytest
import responses

from client_sdk import Client, NotFound, TaskFailed, TaskTimeout

BROKER = "http://broker.test"
PREDICT = f"{BROKER}/predict"
RESULT = re.compile(rf"{BROKER}/getresult/T1.*")


def doc(status: str, **extra: object) -> dict:
    return {"task_id": "T1", "status": status, "queue": "q", **extra}


def result_headers(version: str = "v2") -> dict[str, str]:
    return {"X-Inferbox-Task-Id": "T1", "X-Inferbox-Model-Version": version,
            "Location": "/tasks/T1"}  # fmt: skip


@pytest.fixture
def broker() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock() as rsps:
        yield rsps


@pytest.fixture
def client() -> Iterator[Client]:
    with Client(BROKER, token="tok") as client:
        yield client


def test_predict_is_one_request_when_the_worker_is_quick(broker, client) -> None:
    broker.add(responses.POST, PREDICT, json={"status": "ok", "digit": 7}, status=200,
               headers=result_headers())  # fmt: skip
    assert client.predict({"pixels": [1]}, queue="q", timeout=10) == {"status": "ok", "digit": 7}
    (call,) = broker.calls
    assert call.request.params == {"queue": "q", "wait": "10"}


def test_without_timeout_predict_asks_for_the_longest_wait(broker, client) -> None:
    broker.add(responses.POST, PREDICT, body="seven", status=200, content_type="text/plain",
               headers=result_headers())  # fmt: skip
    assert client.predict(b"x") == "seven"
    assert broker.calls[0].request.params["wait"] == "60"


def test_predict_goes_on_by_id_when_the_wait_runs_out(broker, client) -> None:
    broker.add(responses.POST, PREDICT, json=doc("running"), status=202)
    broker.add(responses.GET, RESULT, json={"late": True}, status=200)
    assert client.predict(b"x", queue="q") == {"late": True}
    assert [call.request.method for call in broker.calls] == ["POST", "GET"]


def test_predict_times_out_without_another_request(broker, client) -> None:
    def held(request):  # the broker holds the request for the wait it was asked
        time.sleep(float(request.params["wait"]))
        return 202, {}, json.dumps(doc("queued"))

    broker.add_callback(responses.POST, PREDICT, callback=held)
    with pytest.raises(TaskTimeout) as caught:
        client.predict(b"x", queue="q", timeout=0.2)
    assert caught.value.task_id == "T1" and caught.value.doc["status"] == "queued"
    assert len(broker.calls) == 1


def test_a_task_that_failed_within_the_wait_raises_at_once(broker, client) -> None:
    broker.add(responses.POST, PREDICT, json=doc("failed", error="ValueError: bad pixel"),
               status=424, headers={"X-Inferbox-Task-Id": "T1"})  # fmt: skip
    task = client.submit(b"x", queue="q", wait=5)
    assert task.id == "T1" and task.finished
    with pytest.raises(TaskFailed, match="bad pixel"):
        task.result()
    with pytest.raises(TaskFailed):
        client.predict(b"x", queue="q")
    assert len(broker.calls) == 2  # two submits, no /getresult


def test_submit_with_wait_holds_the_outcome_and_the_model_version(broker, client) -> None:
    broker.add(responses.POST, PREDICT, json={"status": "spam"}, status=200,
               headers=result_headers("digits-v2"))  # fmt: skip
    task = client.submit(b"x", queue="q", wait=5)
    assert task.finished and task.model_version == "digits-v2"
    assert task.result() == {"status": "spam"} == task.result()  # a result with "status" in it
    assert len(broker.calls) == 1


def test_the_result_is_kept_once_fetched_by_id(broker, client) -> None:
    broker.add(responses.POST, PREDICT, json=doc("queued"), status=202)
    broker.add(responses.GET, RESULT, json={"ok": 1}, status=200,
               headers={"X-Inferbox-Model-Version": "v3"})  # fmt: skip
    task = client.submit(b"x", queue="q")
    assert not task.finished and task.model_version is None
    assert task.result(timeout=5) == {"ok": 1} == task.result(timeout=5)
    assert task.model_version == "v3" and len(broker.calls) == 2


def test_errors_are_not_kept_as_outcomes(broker, client) -> None:
    broker.add(responses.POST, PREDICT, json=doc("queued"), status=202)
    broker.add(responses.GET, RESULT, json={"error": "not_found", "message": "no"}, status=404)
    broker.add(responses.GET, RESULT, json={"ok": 1}, status=200)
    task = client.submit(b"x", queue="q")
    with pytest.raises(NotFound):
        task.result(timeout=5)
    assert task.result(timeout=5) == {"ok": 1}


def test_a_submit_with_wait_keeps_one_idempotency_key_across_retries(broker, client) -> None:
    import requests

    broker.add(responses.POST, PREDICT, body=requests.ConnectionError("reset"))
    broker.add(responses.POST, PREDICT, json={"v": 1}, status=200, headers=result_headers())
    assert client.predict(b"x", timeout=30) == {"v": 1}
    keys = {call.request.headers["Idempotency-Key"] for call in broker.calls}
    assert len(keys) == 1 and json.loads(broker.calls[-1].response.text) == {"v": 1}
