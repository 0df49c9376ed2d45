"""Many long-polls on one broker process share a few Redis connections, and all get answered.

Behaviour, not timing: 300 clients wait on ``/getresult?wait=`` at once on a process whose Redis
pool is capped at 8 connections; none is refused, every one gets its result once a worker runs,
and the process never holds more than its 8 connections (the pub/sub listener included).
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import requests

from tests.integration.conftest import CLIENT_TOKEN, launch_broker, stop_broker

WAITERS = 300
POOL = 8


def broker_connections(redis_client) -> int:
    clients = redis_client.client_list()
    return sum(1 for client in clients if client.get("name") == "inferbox-broker")


def test_hundreds_of_waiters_share_a_bounded_pool(real_redis, tmp_path) -> None:
    server = launch_broker(tmp_path / "data", WORKERS="1", THREADS=str(WAITERS + 40),
                           REDIS_CONNECTIONS=str(POOL), MAX_WAIT="60")  # fmt: skip
    headers = {"Authorization": f"Bearer {CLIENT_TOKEN}"}
    peak, stop = [0], threading.Event()

    def watch() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], broker_connections(real_redis))
            time.sleep(0.05)

    try:
        with requests.Session() as session:
            ids = [session.post(f"{server.url}/predict", json={"i": i}, headers=headers)
                   .json()["task_id"] for i in range(WAITERS)]  # fmt: skip
        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()

        def wait_for(task_id: str) -> tuple[int, object]:
            answer = requests.get(f"{server.url}/getresult/{task_id}?wait=60", headers=headers,
                                  timeout=90)  # fmt: skip
            return answer.status_code, answer.json()

        with ThreadPoolExecutor(WAITERS) as pool:
            futures = [pool.submit(wait_for, task_id) for task_id in ids]
            time.sleep(3)  # every waiter is now held by the broker
            assert not any(future.done() for future in futures)
            server.spawn_worker("describe", worker_id="w-scale")
            answers = [future.result(timeout=120) for future in futures]
        stop.set()
        watcher.join()
        assert [status for status, _ in answers] == [200] * WAITERS
        assert sorted(body["echo"]["i"] for _, body in answers) == list(range(WAITERS))  # type: ignore[index]
        assert 1 <= peak[0] <= POOL
    finally:
        stop.set()
        stop_broker(server)
