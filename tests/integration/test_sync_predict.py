"""The synchronous API on the same queue, as users meet it: ``POST /predict?wait=N`` against a
broker over real HTTP, with a worker process serving the queue."""

from __future__ import annotations

import time

import pytest
import requests

from client_sdk import Client
from tests.integration.conftest import CLIENT_TOKEN, Broker

pytestmark = pytest.mark.redis

AUTH = {"Authorization": f"Bearer {CLIENT_TOKEN}"}


def test_quick_answers_come_in_the_same_response_slow_ones_as_202(broker: Broker):
    broker.spawn_worker("slow", "--queue", "sync", worker_id="w-sync",
                        env={"INFERBOX_TEST_SLOW": "1"})  # fmt: skip
    predict = f"{broker.url}/predict"
    quick = requests.post(predict, params={"queue": "sync", "wait": 30}, headers=AUTH,
                          json={"value": 1, "sleep": 0}, timeout=60)  # fmt: skip
    assert quick.status_code == 200, quick.text
    assert quick.json()["value"] == 1
    task_id = quick.headers["X-Inferbox-Task-Id"]
    assert quick.headers["Location"] == f"/tasks/{task_id}"

    started = time.monotonic()
    slow = requests.post(predict, params={"queue": "sync", "wait": 1}, headers=AUTH,
                         json={"value": 2, "sleep": 4}, timeout=60)  # fmt: skip
    assert slow.status_code == 202 and time.monotonic() - started < 4
    assert slow.json()["status"] == "running"
    late = requests.get(f"{broker.url}/getresult/{slow.json()['task_id']}",
                        params={"wait": 30}, headers=AUTH, timeout=60)  # fmt: skip
    assert late.status_code == 200 and late.json()["value"] == 2

    with Client(broker.url, token=CLIENT_TOKEN) as client:  # Client.predict uses the same form
        assert client.predict({"value": 3, "sleep": 0}, queue="sync", timeout=30)["value"] == 3
        assert client.predict({"value": 4, "sleep": 2}, queue="sync", timeout=30)["value"] == 4
