"""Scale to zero, as docs/scaling.md tells it: tasks submitted while no worker runs wait in their
queue for up to their ttl; the first worker to come takes them oldest first."""

from __future__ import annotations

import time

import pytest
import requests

from client_sdk import Client, TaskExpired
from tests.integration.conftest import ADMIN_TOKEN, CLIENT_TOKEN, Broker

pytestmark = pytest.mark.redis


def depth(broker: Broker, queue: str) -> tuple[int, int]:
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    answer = requests.get(f"{broker.url}/queues", headers=admin, timeout=10).json()["queues"]
    row = next((q for q in answer if q["name"] == queue), {"depth": 0, "in_flight": 0})
    return row["depth"], row["in_flight"]


def test_tasks_wait_for_the_first_worker_within_their_ttl(broker: Broker):
    with Client(broker.url, token=CLIENT_TOKEN) as client:
        waiting = [client.submit({"value": i}, queue="cold") for i in range(5)]
        short = [client.submit({"value": 100 + i}, queue="cold", ttl=2) for i in range(2)]
        assert depth(broker, "cold") == (7, 0)  # nobody serves the queue: all of them wait
        time.sleep(3)
        for task in short:  # their ttl ran out before any worker came
            with pytest.raises(TaskExpired):
                task.result(timeout=0)
        assert all(task.status() == "queued" for task in waiting)

        came = time.monotonic()
        broker.spawn_worker("slow", "--queue", "cold", worker_id="first")
        first = waiting[0].result(timeout=60)
        print(f"first task answered {time.monotonic() - came:.2f} s after the worker started")
        results = [task.result(timeout=60) for task in waiting]
        docs = [task.info() for task in waiting]
    assert first["value"] == 0 and [r["value"] for r in results] == list(range(5))
    started = [doc["started_at"] for doc in docs]
    assert started == sorted(started)  # taken oldest first
    assert {doc["worker_id"] for doc in docs} == {"first"}
    assert depth(broker, "cold") == (0, 0)
