"""Batching and pipelining: tasks/s and model busy time of one worker, against a real broker.

    .venv/bin/python benchmarks/worker_batching.py [--tasks 1000] [--redis-url redis://...]

(``python -m benchmarks.run`` calls ``run_all`` for its section 3.)

The model is a stand-in for a GPU: each call costs 20 ms whatever the batch size. For each
configuration the queue is filled with the same ``--tasks`` small JSON tasks first, then one
worker (in this process) drains it; the broker is a separate gunicorn process on a loopback
port (``memory://`` storage, so the numbers measure the worker and the HTTP path, not disk
fsyncs; ``--storage file`` to include them). Printed: tasks/s, the ratio to the baseline of the
same run (batch size 1, pipelining on), and the model's busy share of wall time as the worker
itself reports it (``Worker.stats.busy_fraction``).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import procs  # noqa: E402
from benchmarks.config import BATCHING_THREADS  # noqa: E402
from client_sdk import Client  # noqa: E402
from worker import Worker, handler  # noqa: E402

MODEL_SECONDS = 0.020
CONFIGS = [(1, False), (1, True), (16, False), (16, True)]  # (batch size, pipelining)


@handler(batched=True)
def gpu_like(batch: list) -> list:
    """20 ms per call, whatever the batch size."""
    time.sleep(MODEL_SECONDS)
    return [{"echo": item["i"]} for item in batch]


def fill(url: str, queue: str, count: int) -> None:
    with Client(url) as client, ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: client.submit({"i": i}, queue=queue), range(count)))


def measure(url: str, batch_size: int, pipeline: bool, count: int) -> tuple[float, float]:
    queue = f"bench-{batch_size}-{int(pipeline)}-{time.monotonic_ns()}"
    fill(url, queue, count)
    worker = Worker(url, queue=queue, batch_size=batch_size, pipeline=pipeline, wait=1,
                    model_version="bench")  # fmt: skip
    started = time.monotonic()
    stats = worker.run(gpu_like, max_tasks=count, progress=False)
    elapsed = time.monotonic() - started
    assert stats.succeeded == count, stats.summary()
    return count / elapsed, stats.busy_fraction


def run_all(
    redis_url: str | None, storage: str, tasks: int
) -> list[tuple[int, bool, float, float]]:
    """Start a broker (``storage``: ``memory`` or ``file``; a ``redis_url`` is flushed), measure
    every configuration of ``CONFIGS`` with ``tasks`` tasks, stop the broker. Rows of (batch
    size, pipelining, tasks/s, model busy fraction)."""
    with tempfile.TemporaryDirectory() as data:
        storage_url = "memory://" if storage == "memory" else Path(data).as_uri()
        if redis_url:
            import redis

            redis.Redis.from_url(redis_url).flushdb()
        with procs.Processes() as group:
            url, _ = procs.start_broker(group, redis_url, storage_url, workers=1,
                                        threads=BATCHING_THREADS)  # fmt: skip
            return [(b, p, *measure(url, b, p, tasks)) for b, p in CONFIGS]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--redis-url", default=os.environ.get("INFERBOX_TEST_REDIS_URL"),
                        help="a Redis to use (flushed!); default: the embedded one")
    parser.add_argument("--storage", choices=["memory", "file"], default="memory")
    args = parser.parse_args()
    rows = run_all(args.redis_url, args.storage, args.tasks)
    baseline = next(rate for b, p, rate, _ in rows if (b, p) == (1, True))
    print(f"{args.tasks} tasks per run, model {MODEL_SECONDS * 1000:.0f} ms per call, "
          f"storage {args.storage}, redis {'real' if args.redis_url else 'embedded'}")
    print(f"{'batch':>5} {'pipeline':>8} {'tasks/s':>9} {'x baseline':>10} {'model busy':>10}")
    for batch_size, pipeline, rate, busy in rows:
        print(f"{batch_size:>5} {'on' if pipeline else 'off':>8} {rate:>9.1f} "
              f"{rate / baseline:>10.2f} {busy:>10.1%}")


if __name__ == "__main__":
    main()
