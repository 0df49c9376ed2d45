"""Many long-polls on one broker process share a few Redis connections, and all get answered;
many idle workers do not each look at the queue for every task.

Behaviour, not timing: 300 clients wait on ``/getresult?wait=`` at once on a process whose Redis
pool is capped at 8 connections; none is refused, every one gets its result once a worker runs,
and the process never holds more than its 8 connections (the pub/sub listener included). And 40
workers long-polling one queue: each task submitted goes to one of them for a handful of Redis
scripts, not one take script per idle worker; and while no task comes, the process rechecks the
queue once a second for all of them, not once a second for each.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import requests

from tests.integration.conftest import CLIENT_TOKEN, WORKER_TOKEN, launch_broker, stop_broker

WAITERS = 300
POOL = 8
IDLE_WORKERS = 40
TASKS = 5
IDLE_SECONDS = 3


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


def scripts_run(redis_client) -> int:
    stats = redis_client.info("commandstats")
    return sum(int(stat["calls"]) for name, stat in stats.items()
               if name.startswith(("cmdstat_eval", "cmdstat_fcall")))  # fmt: skip


def idle_workers(url: str, queue: str, taken: list[str]) -> list[threading.Thread]:
    """``IDLE_WORKERS`` started threads, each holding one ``/getnexttask?wait=30`` on ``queue``;
    the id of a task one of them gets goes into ``taken``."""

    def idle_worker(number: int) -> None:
        answer = requests.post(f"{url}/getnexttask", timeout=60, params={
            "queue": queue, "wait": 30, "worker_id": f"idle-{number}"},
            headers={"Authorization": f"Bearer {WORKER_TOKEN}"})  # fmt: skip
        if answer.status_code == 200:
            taken.append(answer.headers["X-Inferbox-Task-Id"])

    workers = [threading.Thread(target=idle_worker, args=(n,), daemon=True)
               for n in range(IDLE_WORKERS)]  # fmt: skip
    for worker in workers:
        worker.start()
    return workers


def test_a_task_wakes_one_of_many_idle_workers_not_all(real_redis, tmp_path) -> None:
    server = launch_broker(tmp_path / "data", WORKERS="1", THREADS=str(IDLE_WORKERS + 20))
    taken: list[str] = []
    try:
        workers = idle_workers(server.url, "herd", taken)
        time.sleep(3)  # every take has looked once and waits
        submitted, scripts = [], 0
        with requests.Session() as session:
            for number in range(TASKS):
                before = scripts_run(real_redis)
                submitted.append(session.post(
                    f"{server.url}/predict?queue=herd", json={"n": number},
                    headers={"Authorization": f"Bearer {CLIENT_TOKEN}"}).json()["task_id"])
                deadline = time.monotonic() + 10
                while len(taken) <= number and time.monotonic() < deadline:
                    time.sleep(0.01)
                time.sleep(0.05)  # a take woken in vain looks within milliseconds
                scripts += scripts_run(real_redis) - before
        assert sorted(taken) == sorted(submitted)  # one worker each, the rest still waiting
        assert sum(worker.is_alive() for worker in workers) == IDLE_WORKERS - TASKS
        # Per task: the submit, the take that got it, perhaps one woken in vain or one recheck.
        # Each of the 40 waiting takes looked at every task before: over 40 a task.
        assert scripts <= 5 * TASKS, scripts
    finally:
        stop_broker(server)  # answers the waiting takes


def test_idle_workers_cost_one_recheck_per_queue_not_one_each(real_redis, tmp_path) -> None:
    server = launch_broker(tmp_path / "data", WORKERS="1", THREADS=str(IDLE_WORKERS + 20),
                           JANITOR_INTERVAL="0")  # fmt: skip  # its passes run scripts too
    taken: list[str] = []
    try:
        workers = idle_workers(server.url, "quiet", taken)
        time.sleep(2)  # every take has looked once and waits
        before = scripts_run(real_redis)
        time.sleep(IDLE_SECONDS)
        scripts = scripts_run(real_redis) - before
        assert all(worker.is_alive() for worker in workers) and not taken
        # one recheck a second for the queue; one by each waiting take would be 40 a second
        assert scripts <= 2 * IDLE_SECONDS, scripts
    finally:
        stop_broker(server)
