"""Section 5: take latency (``POST /getnexttask``, one task) with a short and a very long queue.

The long queue is filled fast but faithfully: a few head tasks are submitted over HTTP (they
have payload blobs, and FIFO order makes them the ones taken), then the rest are created by
the broker's own ``TaskQueue.submit_many``, a thousand a script. Those tasks have index
entries identical to a real submit's but no payload blob: none of them is ever taken.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import redis
import requests

from benchmarks import procs, systems
from benchmarks.config import REDIS_URL, SMALL_BROKER_THREADS, Sizes
from benchmarks.report import Check, Section, fmt, ratio
from benchmarks.stats import percentile
from broker import keys as K
from broker.queue import NewTask, TaskQueue

KEYS = K.Keys(K.DEFAULT_PREFIX)
WARMUP_TAKES = 10
CHUNK = 1000


def populate(client: redis.Redis, queue: str, count: int, *, owner: str,
             content_type: str = "application/json", size: int = 16,
             clock: Callable[[], float] = time.time) -> None:
    """Queue ``count`` tasks in ``queue`` through the submit script, ``CHUNK`` per call (the
    index alone: no payload blobs, which a take does not read)."""
    tasks = TaskQueue(client, clock=clock)
    for start in range(0, count, CHUNK):
        tasks.submit_many([(NewTask(queue=queue, owner=owner, content_type=content_type,
                                    size=size), None)
                           for _ in range(min(CHUNK, count - start))])  # fmt: skip


def take_latencies(url: str, queues: list[str], count: int) -> dict[str, list[float]]:
    """Seconds of each of ``count`` sequential one-task takes (body read) from each queue,
    after warm-up; the takes alternate between the queues, so the machine's drift during the
    run touches each queue's figures alike."""
    timings: dict[str, list[float]] = {queue: [] for queue in queues}
    with requests.Session() as session:
        for index in range(WARMUP_TAKES + count):
            for queue in queues:
                started = time.perf_counter()
                params: dict[str, str | int] = {"queue": queue, "max_tasks": 1, "wait": 0,
                                                "lease": 600}
                response = session.post(f"{url}/getnexttask", params=params)
                response.raise_for_status()
                if response.status_code != 200 or not response.content:
                    raise AssertionError(f"take {index} from {queue} got "
                                         f"{response.status_code}")  # fmt: skip
                if index >= WARMUP_TAKES:
                    timings[queue].append(time.perf_counter() - started)
    return timings


def submit_head(url: str, queue: str, count: int) -> str:
    """Submit ``count`` real tasks over HTTP; the owner the broker recorded for them."""
    from client_sdk import Client

    with Client(url) as client:
        tasks = systems.run_threads(lambda: lambda i: client.submit({"i": i}, queue=queue),
                                    list(range(count)), 8)  # fmt: skip
    owner = systems.redis_client().hget(KEYS.task(tasks[0].id), "owner")
    return owner.decode() if isinstance(owner, bytes) else str(owner or "")


def depth_section(sizes: Sizes, log: Any = print) -> Section:
    section = Section("depth", "5. Take latency vs queue depth",
                      ["queued", "takes", "p50 ms", "p90 ms", "x short queue (p50)"])
    client = systems.flush()
    head = sizes.depth_takes + WARMUP_TAKES
    try:
        with procs.Processes() as group:
            url, _ = procs.start_broker(group, REDIS_URL, "memory://", workers=1,
                                        threads=SMALL_BROKER_THREADS)  # fmt: skip
            submit_head(url, "short", sizes.depth_small + head)
            owner = submit_head(url, "long", head)
            log(f"depth: populating {sizes.depth_large:,} tasks")
            before, started = client.info("memory")["used_memory"], time.perf_counter()
            populate(client, "long", sizes.depth_large, owner=owner)
            fill_seconds = time.perf_counter() - started
            grown = (client.info("memory")["used_memory"] - before) / 2**20
            depth = client.zcard(KEYS.queue("long"))
            timings = take_latencies(url, ["short", "long"], sizes.depth_takes)
            short, long = timings["short"], timings["long"]
    finally:
        client.flushdb()
    base = 1000 * percentile(short, 0.5)
    for queued, samples in ((sizes.depth_small, short), (sizes.depth_large, long)):
        p50 = 1000 * percentile(samples, 0.5)
        section.rows.append([f"{queued:,}", str(len(samples)), fmt(p50),
                             fmt(1000 * percentile(samples, 0.9)), fmt(ratio(p50, base))])
    p50_long = 1000 * percentile(long, 0.5)
    section.checks.append(Check(f"take p50 at {sizes.depth_large:,} vs {sizes.depth_small} "
                                "queued", ratio(p50_long, base), 1.5, False))  # fmt: skip
    section.notes += [
        f"Each queue holds its figure plus the {head} head tasks taken during the measurement "
        f"({WARMUP_TAKES} untimed warm-up takes, then {sizes.depth_takes} timed), so the depth "
        "stays at or above the figure throughout. The takes alternate between the two queues "
        "(both filled first), so a machine drifting during the run moves both figures alike. "
        "`POST /getnexttask?max_tasks=1&wait=0` over a keep-alive session, payload body read; "
        f"broker: 1 gunicorn process x {SMALL_BROKER_THREADS} threads, memory:// storage.",
        f"The long queue: {head} head tasks submitted over HTTP (with payloads), then "
        f"{sizes.depth_large:,} created by the broker's own `submit.lua` (`TaskQueue.submit_many`, "
        f"{CHUNK:,} a script call, as `/predictbatch` calls it) in "
        f"{fill_seconds:.1f} s: same task hash, queue and ttl index entries as an HTTP submit, "
        f"no idempotency key and no payload blob (never taken). {depth:,} tasks queued; Redis "
        f"memory grew {grown:,.0f} MB. DB 12 is flushed afterwards.",
    ]
    return section
