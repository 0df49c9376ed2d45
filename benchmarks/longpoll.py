"""Section 6: many concurrent ``GET /getresult/<id>?wait=60`` waiters on one broker process.

Waiters are threads of this process, each with its own connection (``http.client``). Once
they are held, the tasks are completed directly through the broker's Python API (a
``Mailbox`` on the same Redis and storage, in this process), so completing them needs no
HTTP connection of its own; each waiter's wake-up latency runs from the start of its task's
``complete`` call to the moment its answer arrived.
"""

from __future__ import annotations

import collections
import http.client
import io
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil

from benchmarks import procs, systems
from benchmarks.config import LONG_POLL_THREADS, REDIS_URL, Sizes
from benchmarks.report import Check, Section, fmt
from benchmarks.stats import Peak, percentile

REDIS_PORT = int(urlsplit(REDIS_URL).port or 6379)
WAIT = 60


@dataclass
class Waiter:
    task_id: str
    status: int = 0
    error: str = ""
    answered: float = 0.0


@dataclass
class Held:
    """What the broker holds while the waiters wait."""

    accepted: int
    rss_mb: float
    redis_connections: int
    client_list: int


def wait_for(waiter: Waiter, host: str, port: int) -> None:
    connection = http.client.HTTPConnection(host, port, timeout=WAIT + 60)
    try:
        connection.request("GET", f"/getresult/{waiter.task_id}?wait={WAIT}")
        response = connection.getresponse()
        response.read()
        waiter.answered = time.perf_counter()
        waiter.status = response.status
    except OSError as exc:
        waiter.answered = time.perf_counter()
        waiter.error = type(exc).__name__
    finally:
        connection.close()


def broker_sockets(pid: int, port: int) -> tuple[int, set[int]]:
    """Connections the process has accepted on ``port``, and its local ports to Redis."""
    accepted, to_redis = 0, set()
    for conn in psutil.Process(pid).net_connections("tcp"):
        if conn.status != psutil.CONN_ESTABLISHED:
            continue
        if conn.laddr and conn.laddr.port == port:
            accepted += 1
        elif conn.raddr and conn.raddr.port == REDIS_PORT:
            to_redis.add(conn.laddr.port)
    return accepted, to_redis


def client_list_count(ports: set[int]) -> int:
    """Redis's own count of connections from those local ports (``CLIENT LIST``)."""
    clients = systems.redis_client().client_list()
    return sum(1 for client in clients if int(client["addr"].rsplit(":", 1)[1]) in ports)


def hold(waiters: list[Waiter], url: str, pid: int) -> list[threading.Thread]:
    """Start one thread per waiter; return once the broker has accepted them all or stops
    accepting more (its connection limit)."""
    parts = urlsplit(url)
    old_stack = threading.stack_size(256 * 1024)  # 1,000 threads: small stacks, then back
    threads = [threading.Thread(target=wait_for, args=(w, parts.hostname, parts.port),
                                daemon=True) for w in waiters]  # fmt: skip
    try:
        for thread in threads:
            thread.start()
    finally:
        threading.stack_size(old_stack)
    previous, deadline = -1, time.monotonic() + 30
    while time.monotonic() < deadline:
        time.sleep(1.0)
        accepted, _ = broker_sockets(pid, parts.port or 80)
        if accepted >= len(waiters) or accepted == previous:
            break
        previous = accepted
    time.sleep(1.0)  # the accepted requests reach their long-poll wait
    return threads


def complete_all(mailbox: Any, queue: str, count: int) -> dict[str, float]:
    """Take and complete every task of ``queue``; when each task's completion began."""
    leases: list[Any] = []
    while len(leases) < count:
        taken = mailbox.take([queue], max_tasks=100, lease_seconds=600, worker_id="bench",
                             wait=1)  # fmt: skip
        for lease, blob in taken:
            blob.close()
            leases.append(lease)
    started = {}
    for lease in leases:
        started[lease.task_id] = time.perf_counter()
        mailbox.complete(lease.task_id, lease.lease_id, io.BytesIO(b'{"ok": true}'),
                         content_type="application/json")  # fmt: skip
    return started


def longpoll_section(sizes: Sizes) -> Section:
    from broker.app import create_app
    from broker.settings import Settings
    from client_sdk import Client

    count = sizes.waiters
    section = Section("longpoll", f"6. Long-poll scale: {count:,} waiters on one broker process",
                      ["waiters", "accepted", "broker RSS MB", "Redis connections",
                       "wake p50 ms", "wake p99 ms", "wake max ms", "answers"])  # fmt: skip
    systems.flush()
    with tempfile.TemporaryDirectory(prefix="inferbox-bench-") as scratch, \
            procs.Processes() as group:  # fmt: skip
        storage = Path(scratch).as_uri()
        url, broker = procs.start_broker(group, REDIS_URL, storage, workers=1,
                                         threads=LONG_POLL_THREADS)  # fmt: skip
        (pid,) = procs.server_pids(broker)
        with Client(url) as client:
            tasks = systems.run_threads(lambda: lambda i: client.submit({"i": i}, queue="lp"),
                                        list(range(count)), 8)  # fmt: skip
        waiters = [Waiter(task.id) for task in tasks]
        port = urlsplit(url).port or 80
        with Peak(lambda: len(broker_sockets(pid, port)[1]), interval=0.1) as peak:
            threads = hold(waiters, url, pid)
            accepted, ports = broker_sockets(pid, port)
            held = Held(accepted, psutil.Process(pid).memory_info().rss / 2**20, len(ports),
                        client_list_count(ports))  # fmt: skip
            box = create_app(Settings(redis_url=REDIS_URL, storage_url=storage))
            mailbox = box.extensions["inferbox"].mailbox
            try:
                started = complete_all(mailbox, "lp", count)
            finally:
                mailbox.close()
            for thread in threads:
                thread.join(timeout=WAIT + 90)
    answers = collections.Counter(str(w.status) if w.status else w.error for w in waiters)
    wake = [1000 * (w.answered - started[w.task_id]) for w in waiters if w.status == 200]
    section.rows.append([f"{count:,}", f"{held.accepted:,}", fmt(held.rss_mb, 1),
                         f"{held.redis_connections} held ({held.client_list} in CLIENT "
                         f"LIST), {peak.peak} peak",
                         fmt(percentile(wake, 0.5)), fmt(percentile(wake, 0.99)),
                         fmt(max(wake, default=float("nan"))),
                         ", ".join(f"{n} x {k}" for k, n in sorted(answers.items()))])
    section.checks.append(Check(f"{count:,} waiters: Redis connections of the broker process "
                                "(peak)", float(peak.peak), 64, False, "", digits=0))
    section.notes += [
        f"Broker: `inferbox-broker serve`, 1 gunicorn process (gthread) x {LONG_POLL_THREADS} "
        "threads (`INFERBOX_THREADS`; one thread per held long-poll plus spare), file:// "
        f"storage. `broker.cli.gunicorn_options` sets `worker_connections` to "
        f"{procs.server_option('worker_connections', threads=LONG_POLL_THREADS):,} for that "
        "many threads.",
        f"Waiters: {count:,} threads of the benchmark process, one `http.client` connection "
        f"each, `GET /getresult/<id>?wait={WAIT}`. accepted = client connections the broker "
        "process had accepted once they stopped growing; RSS and Redis connections (the "
        "broker process's TCP connections to Redis, cross-checked by `CLIENT LIST`) are read "
        "then, with the waiters held; peak = the most connections to Redis the broker "
        "process had at any 100 ms sample while the waiters arrived, were held, and were "
        "answered (the target is checked against it: redis-py pools grow with the number of "
        "Redis calls in flight at once).",
        "Wake-up: from the start of each task's `Mailbox.complete` (in this process, on the "
        "same Redis and storage; tasks completed one after another) to its waiter's answer. "
        "answers: the HTTP statuses (or errors) the waiters got.",
    ]
    return section
