"""Operating several processes as users do: /metrics under a multi-process server after a known
workload, webhooks delivered by `inferbox-broker jobs` (rq) to a real receiver that is down and
then up, two brokers sharing one Redis and one store, and keep-alive connections recycled so
the server processes share the clients."""

from __future__ import annotations

import base64
import hashlib
import http.client
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from broker.keys import KEEPALIVE_REQUESTS
from client_sdk import Client, TaskFailed
from client_sdk.webhooks import verify
from tests.conftest import REDIS_URL
from tests.integration.conftest import (
    ADMIN_TOKEN,
    CLIENT_TOKEN,
    ROOT,
    WORKER_TOKEN,
    Broker,
    child_env,
    free_port,
    wait_until_healthy,
)
from tests.receiver import Receiver

pytestmark = pytest.mark.redis

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
SECRET = "whsec_" + base64.b64encode(b"integration-test-secret").decode()


def broker_env(data: Path, **extra: str) -> dict[str, str]:
    return child_env(
        INFERBOX_REDIS_URL=REDIS_URL, INFERBOX_STORAGE_URL=f"file://{data}",
        INFERBOX_CLIENT_TOKENS=CLIENT_TOKEN, INFERBOX_WORKER_TOKENS=WORKER_TOKEN,
        INFERBOX_ADMIN_TOKENS=ADMIN_TOKEN, INFERBOX_THREADS="16", **extra,
    )  # fmt: skip


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextmanager
def brokers(data: Path, count: int, processes: int, **extra: str) -> Iterator[list[Broker]]:
    started = []
    try:
        for _ in range(count):
            port = free_port()
            process = subprocess.Popen(
                [sys.executable, "-m", "broker.cli", "--port", str(port), "--workers",
                 str(processes), "--log-level", "WARNING"],
                cwd=ROOT, env=broker_env(data, **extra),
            )  # fmt: skip
            started.append(Broker(f"http://127.0.0.1:{port}", process, data))
        for broker in started:
            wait_until_healthy(broker.url, broker.process)
        yield started
    finally:
        for broker in started:
            broker.stop_workers()
            stop(broker.process)


def scrape(url: str) -> dict[tuple[str, str | None], float]:
    # A fresh connection each time, so the scrapes land on different server processes.
    response = requests.get(f"{url}/metrics", headers={**ADMIN, "Connection": "close"}, timeout=10)
    assert response.status_code == 200
    return {(s.name, s.labels.get("queue")): s.value
            for family in text_string_to_metric_families(response.text)
            for s in family.samples if "le" not in s.labels}  # fmt: skip


def test_metrics_under_a_multi_process_server_after_a_known_workload(real_redis, tmp_path):
    with brokers(tmp_path / "data", count=1, processes=3) as (broker,), \
            Client(broker.url, token=CLIENT_TOKEN) as client:  # fmt: skip
        sums = [client.submit(bytes([i]) * 10, queue="m-sums") for i in range(20)]
        for i in range(5):
            client.submit({"value": i}, queue="m-idle")  # no worker serves it
        poison = [client.submit({"poison": True}, queue="m-poison", max_attempts=2)
                  for _ in range(3)]  # fmt: skip
        broker.spawn_worker("checksum", "--queue", "m-sums", worker_id="m-w1")
        broker.spawn_worker("poison", "--queue", "m-poison", worker_id="m-w2")
        for i, task in enumerate(sums):
            digest = hashlib.sha256(bytes([i]) * 10).hexdigest()
            assert task.result(timeout=60) == {"sha256": digest}
        for task in poison:
            with pytest.raises(TaskFailed):
                task.result(timeout=60)
        scrapes = [scrape(broker.url) for _ in range(12)]
        server_processes = len(subprocess.run(["pgrep", "-P", str(broker.process.pid)],
                                              capture_output=True, text=True).stdout.split())
    assert server_processes == 3
    expected = {
        ("inferbox_queue_depth", "m-idle"): 5, ("inferbox_queue_depth", "m-sums"): 0,
        ("inferbox_queue_in_flight", "m-sums"): 0,
        ("inferbox_tasks_submitted_total", "m-sums"): 20,
        ("inferbox_tasks_succeeded_total", "m-sums"): 20,
        ("inferbox_tasks_submitted_total", "m-idle"): 5,
        ("inferbox_tasks_submitted_total", "m-poison"): 3,
        ("inferbox_tasks_failed_total", "m-poison"): 3,
        ("inferbox_tasks_redelivered_total", "m-poison"): 3,
        ("inferbox_tasks_canceled_total", "m-sums"): 0,
        ("inferbox_task_end_to_end_seconds_count", "m-sums"): 20,
        ("inferbox_task_processing_seconds_count", "m-sums"): 20,
        ("inferbox_task_processing_seconds_count", "m-poison"): 6,
        ("inferbox_task_queue_wait_seconds_count", "m-poison"): 6,
        ("inferbox_workers_alive", None): 2,
    }  # fmt: skip
    for samples in scrapes:  # whichever process answered, the same cluster-wide numbers
        assert {key: samples.get(key) for key in expected} == expected
    assert scrapes[0][("inferbox_queue_oldest_age_seconds", "m-idle")] > 0


def test_webhooks_through_rq_reach_a_receiver_that_was_down(real_redis, tmp_path):
    receiver = Receiver()  # its port is reserved, nothing listens there yet
    extra = {"INFERBOX_WEBHOOK_SECRET": SECRET, "INFERBOX_WEBHOOK_ALLOW": "127.0.0.1",
             "INFERBOX_WEBHOOK_RETRY_DELAYS": "1,2,2"}
    jobs = subprocess.Popen([sys.executable, "-m", "broker.cli", "jobs", "--log-level", "WARNING"],
                            cwd=ROOT, env=broker_env(tmp_path / "data", **extra))  # fmt: skip
    try:
        with brokers(tmp_path / "data", count=1, processes=2, **extra) as (broker,), \
                Client(broker.url, token=CLIENT_TOKEN) as client:  # fmt: skip
            refused = requests.post(f"{broker.url}/predict", json={}, timeout=10,
                                    params={"webhook": "http://10.0.0.1/hook"},
                                    headers={"Authorization": f"Bearer {CLIENT_TOKEN}"})
            assert (refused.status_code, refused.json()["error"]) == (400, "webhook_refused")
            response = requests.post(f"{broker.url}/predict", data=b"payload", timeout=10,
                                     params={"queue": "hooks", "webhook": receiver.url},
                                     headers={"Authorization": f"Bearer {CLIENT_TOKEN}"})
            task = client.task(response.json()["task_id"])
            broker.spawn_worker("checksum", "--queue", "hooks", worker_id="hook-worker")
            task.result(timeout=60)
            first = wait_for_deliveries(task, 1)
            assert (first[0]["outcome"], first[0]["status_code"]) == ("retrying", None)
            receiver.start()  # the receiver comes up; the next retry reaches it
            headers, body, path = receiver.wait_for(1, timeout=30)[0]
            log = wait_for_deliveries(task, 2)
    finally:
        receiver.stop()
        stop(jobs)
    event = verify(SECRET, headers, body)
    assert event["type"] == "task.completed" and event["data"]["task_id"] == task.id
    assert event["data"]["status"] == "succeeded" and path == "/hooks/inferbox?source=test"
    assert [entry["outcome"] for entry in log] == ["retrying", "delivered"]
    assert log[1]["status_code"] == 204 and log[1]["id"] == headers["webhook-id"]


def wait_for_deliveries(task, count: int, timeout: float = 30.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = task.info()["webhook"]["deliveries"]
        if len(log) >= count:
            return log
        time.sleep(0.1)
    raise AssertionError(f"fewer than {count} delivery attempts")


def test_two_brokers_share_one_redis_and_one_store(real_redis, tmp_path):
    with brokers(tmp_path / "data", count=2, processes=1) as (a, b), \
            Client(a.url, token=CLIENT_TOKEN) as on_a, \
            Client(b.url, token=CLIENT_TOKEN) as on_b:  # fmt: skip
        a.spawn_worker("checksum", "--queue", "shared", worker_id="via-a")
        b.spawn_worker("checksum", "--queue", "shared", worker_id="via-b")
        payloads = [bytes([i]) * (i + 1) for i in range(60)]
        tasks = [(on_a if i % 2 else on_b).submit(p, queue="shared")
                 for i, p in enumerate(payloads)]  # fmt: skip
        for i, (task, payload) in enumerate(zip(tasks, payloads, strict=True)):
            other = on_b if i % 2 else on_a  # fetch from the broker it was not submitted to
            assert other.task(task.id).result(timeout=60) == {
                "sha256": hashlib.sha256(payload).hexdigest()}
        docs = [on_a.status(task.id) for task in tasks]
        queued = on_a.submit({"later": True}, queue="nobody")
        canceled = on_b.cancel(queued.id)
        scrapes = [scrape(a.url), scrape(b.url)]
    assert {doc["worker_id"] for doc in docs} == {"via-a", "via-b"}
    assert canceled["status"] == "canceled"
    for samples in scrapes:
        assert samples[("inferbox_tasks_succeeded_total", "shared")] == 60
        assert samples[("inferbox_tasks_canceled_total", "nobody")] == 1


def test_a_keep_alive_connection_is_closed_after_its_last_request(broker: Broker):
    """A client keeping one connection open is told to reconnect now and then (its last
    request is answered with Connection: close), so it cannot pin one server process."""
    connection = http.client.HTTPConnection(broker.url.removeprefix("http://"), timeout=10)
    answers = []
    for _ in range(KEEPALIVE_REQUESTS):
        connection.request("GET", "/healthz")
        response = connection.getresponse()
        response.read()
        answers.append((response.status, response.getheader("Connection")))
    assert answers == [(200, "keep-alive")] * (KEEPALIVE_REQUESTS - 1) + [(200, "close")]
    assert connection.sock is None  # http.client closed it as told; the next request reconnects
    connection.request("GET", "/healthz")
    assert connection.getresponse().status == 200
    connection.close()
