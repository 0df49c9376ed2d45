"""The foundation's promises, checked as a user meets them: real Redis, the broker served over
HTTP by gunicorn, workers as separate processes, clients through client_sdk."""

from __future__ import annotations

import hashlib
import os
import random
import time

import pytest
import requests

from client_sdk import Client, NotFound, TaskFailed
from tests.integration.conftest import (
    ADMIN_TOKEN,
    CLIENT_TOKEN,
    OTHER_CLIENT_TOKEN,
    WORKER_TOKEN,
    Broker,
)

pytestmark = pytest.mark.redis


def wait_for(predicate, timeout: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_two_workers_drain_a_thousand_tasks(broker: Broker):
    rng = random.Random(7)
    payloads = [rng.randbytes(rng.randint(0, 4096)) for _ in range(1000)]
    broker.spawn_worker("checksum", "--queue", "sums", worker_id="w-a")
    broker.spawn_worker("checksum", "--queue", "sums", worker_id="w-b")
    with Client(broker.url, token=CLIENT_TOKEN) as client:
        tasks = [client.submit(payload, queue="sums") for payload in payloads]
        for task, payload in zip(tasks, payloads, strict=True):
            assert task.result(timeout=180) == {"sha256": hashlib.sha256(payload).hexdigest()}
        docs = [task.info() for task in tasks]
    assert {doc["status"] for doc in docs} == {"succeeded"}
    assert {doc["worker_id"] for doc in docs} == {"w-a", "w-b"}  # both took part
    stats = requests.get(f"{broker.url}/queues", timeout=5,
                         headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).json()
    assert stats["queues"] == [{"name": "sums", "depth": 0, "in_flight": 0,
                                "oldest_age_seconds": None}]


def test_killed_worker_task_is_taken_again_and_succeeds(broker: Broker):
    with Client(broker.url, token=CLIENT_TOKEN) as client:
        task = client.submit({"sleep": 60, "value": 1}, queue="slow")
        victim = broker.spawn_worker("slow", "--queue", "slow", "--lease", "3",
                                     worker_id="victim", env={"INFERBOX_TEST_SLOW": "1"})
        wait_for(lambda: task.info()["status"] == "running", what="the victim to take the task")
        victim.kill()  # SIGKILL: no goodbye, no release, no heartbeat
        victim.wait()
        broker.spawn_worker("slow", "--queue", "slow", "--lease", "3", worker_id="rescuer")
        result = task.result(timeout=60)
        doc = task.info()
    assert result["value"] == 1
    assert (doc["status"], doc["attempts"], doc["worker_id"]) == ("succeeded", 2, "rescuer")


def test_a_lost_lease_cannot_replace_the_live_result(broker: Broker):
    worker_auth = {"Authorization": f"Bearer {WORKER_TOKEN}"}
    with Client(broker.url, token=CLIENT_TOKEN) as client:
        task = client.submit({"value": 21}, queue="zombie")
        taken = requests.post(f"{broker.url}/getnexttask", params={"queue": "zombie", "lease": 1},
                              headers=worker_auth, timeout=10)  # fmt: skip
        assert taken.status_code == 200
        stale_lease = taken.headers["X-Inferbox-Lease-Id"]
        time.sleep(1.5)  # the zombie's lease runs out; a healthy worker takes over
        broker.spawn_worker("slow", "--queue", "zombie", worker_id="healthy")
        live = task.result(timeout=60)
        late = requests.post(f"{broker.url}/puttaskresult/{task.id}", data=b"late",
                             headers={**worker_auth, "X-Inferbox-Lease-Id": stale_lease},
                             timeout=10)  # fmt: skip
        assert late.status_code == 409 and late.json()["error"] == "lease_lost"
        assert task.result(timeout=5) == live
        assert live["value"] == 21
    results = sorted(p.name for p in (broker.data / "outbox" / task.id).iterdir())
    assert len(results) == 1  # the refused late result left no blob behind


def test_poison_task_fails_after_max_attempts_and_the_queue_flows(broker: Broker):
    with Client(broker.url, token=CLIENT_TOKEN) as client:
        poison = client.submit({"poison": True}, queue="p", max_attempts=3)
        healthy = [client.submit({"value": i}, queue="p") for i in range(20)]
        broker.spawn_worker("poison", "--queue", "p", worker_id="w-p")
        for i, task in enumerate(healthy):
            assert task.result(timeout=60) == {"value": 2 * i}
        with pytest.raises(TaskFailed) as failure:
            poison.result(timeout=60)
        doc = poison.info()
    assert "poison pill" in failure.value.error
    assert (doc["status"], doc["attempts"]) == ("failed", 3)


def test_clients_see_only_their_own_tasks(broker: Broker):
    with Client(broker.url, token=CLIENT_TOKEN) as mine, \
            Client(broker.url, token=OTHER_CLIENT_TOKEN) as theirs:  # fmt: skip
        task = mine.submit(os.urandom(16), queue="private")
        with pytest.raises(NotFound):
            theirs.status(task.id)
        with pytest.raises(NotFound):
            theirs.cancel(task.id)
        assert mine.status(task.id)["status"] == "queued"
