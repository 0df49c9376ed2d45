"""``Client.map`` over the batch endpoints against one request per task, end to end.

    .venv/bin/python benchmarks/batched_map.py [--tasks 5000] [--redis-url redis://...]

A broker (gunicorn, ``INFERBOX_WORKERS`` 2 x 64 threads, real Redis, ``file://`` storage in a
temporary folder) and two worker processes (a no-op handler, ``--batch-size 16``) run on this
machine. The same small JSON payloads go through:

- ``per-task``: what ``Client.map`` did before the batch endpoints: a thread per task in flight,
  each ``Client.predict`` (one ``POST /predict?wait=`` per task when the worker is quick);
- ``batched``: ``Client.map`` (``POST /predictbatch`` up to 64 payloads, ``POST /getresults``
  long-polls).

Prints tasks/s, requests per task and the ratio to the per-task figure of the same run. The
Redis database given is flushed before and after. Timings only; nothing here is a test.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import redis
import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from client_sdk import Client  # noqa: E402

QUEUE = "map-bench"


def noop(payloads: list[Any]) -> list[Any]:
    """The workers' batch handler: no model time at all."""
    return payloads


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(redis_url: str, data: str) -> tuple[str, list[subprocess.Popen]]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "INFERBOX_STORAGE_URL": f"file://{data}",
           "INFERBOX_REDIS_URL": redis_url, "INFERBOX_WORKERS": "2",
           "INFERBOX_THREADS": "64"}  # fmt: skip
    broker = subprocess.Popen([sys.executable, "-m", "broker.cli", "--port", str(port),
                               "--log-level", "WARNING"], env=env,
                              stderr=subprocess.DEVNULL)  # fmt: skip
    for _ in range(300):
        try:
            if requests.get(f"{url}/healthz", timeout=1).status_code == 200:
                break
        except requests.ConnectionError:
            time.sleep(0.1)
    workers = [subprocess.Popen([sys.executable, "-m", "worker.cli", "--broker", url, "--queue",
                                 QUEUE, "--handler", "benchmarks.batched_map:noop",
                                 "--batch-size", "16", "--wait", "5", "--log-level", "WARNING",
                                 "--progress", "off"], env=env)
               for _ in range(2)]  # fmt: skip
    return url, [*workers, broker]


def per_task_map(client: Client, payloads: list[Any], concurrency: int) -> Iterator[Any]:
    """The former ``Client.map``: one thread per task in flight, each a ``predict``."""
    pending: deque[Future[Any]] = deque()
    with ThreadPoolExecutor(concurrency) as pool:
        for payload in payloads:
            pending.append(pool.submit(client.predict, payload, queue=QUEUE))
            if len(pending) >= concurrency:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def run(url: str, mode: str, tasks: int, concurrency: int) -> tuple[float, float]:
    """(tasks/s, requests per task) of one pass."""
    payloads = [{"i": i} for i in range(tasks)]
    sent = [0]
    with Client(url, timeout=60) as client:
        client._session.hooks["response"].append(lambda *a, **k: sent.__setitem__(0, sent[0] + 1))
        client.predict({"warm": 1}, queue=QUEUE)
        sent[0] = 0
        started = time.perf_counter()
        if mode == "per-task":
            results = list(per_task_map(client, payloads, concurrency))
        else:
            results = list(client.map(payloads, queue=QUEUE, concurrency=concurrency))
        elapsed = time.perf_counter() - started
    assert results == payloads, "results out of order or wrong"
    return tasks / elapsed, sent[0] / tasks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/14")
    args = parser.parse_args()
    db = redis.Redis.from_url(args.redis_url)
    db.flushdb()
    with tempfile.TemporaryDirectory() as data:
        url, processes = start(args.redis_url, data)
        try:
            rows = [(mode, concurrency, *run(url, mode, args.tasks, concurrency))
                    for mode, concurrency in (("per-task", 16), ("per-task", 64),
                                              ("batched", 64), ("batched", 256))]  # fmt: skip
        finally:
            for process in processes:
                process.send_signal(signal.SIGTERM)
            for process in processes:
                process.wait(30)
            db.flushdb()
    base = max(rate for mode, _, rate, _ in rows if mode == "per-task")
    print(f"{args.tasks} tasks, 2 workers x batch 16, no-op handler")
    print(f"{'mode':<10}{'in flight':>10}{'tasks/s':>10}{'req/task':>10}{'ratio':>8}")
    for mode, concurrency, rate, per_task in rows:
        print(f"{mode:<10}{concurrency:>10}{rate:>10.0f}{per_task:>10.3f}{rate / base:>8.2f}")


if __name__ == "__main__":
    main()
