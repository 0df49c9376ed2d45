"""Every knob of ``python -m benchmarks.run`` in one place: sizes, concurrency, targets.

All systems get the same number of worker processes and client threads. Sizes come in two
sets: the full run (about 10 minutes on a 2-core machine) and ``--quick`` (a smoke run of
about 2 minutes whose figures are not the ones to quote).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import urlsplit

WORKER_PROCESSES = 2  # handler processes of every system (Celery -c 2, 2 RQ workers, 2 inferbox)
CLIENT_THREADS = 16  # client threads of every throughput run
# The batched row is inferbox tuned for throughput, as a user who opts into batching would run
# it: Client.map with this many tasks in flight (from its one thread; its default is 64) and
# workers taking and posting BATCH_SIZE tasks a request.
MAP_IN_FLIGHT = 256
BATCH_SIZE = 32
# Batches each inferbox worker may hold taken ahead of its model (`--prefetch`; its default is
# 1): 4, as Celery's default prefetch multiplier lets each of its worker processes hold 4.
PREFETCH = 4
BROKER_PROCESSES = 2  # gunicorn processes of the inferbox broker in sections 1-2
BROKER_THREADS = 64  # gunicorn threads per broker process (the production default)
LONG_POLL_THREADS = 1100  # section 6: one broker process must hold 1,000 waiters and spare
BATCHING_THREADS = 32  # section 3: threads of its one-process broker
SMALL_BROKER_THREADS = 16  # sections 4-5: threads of their one-process brokers
REDIS_URL = os.environ.get("INFERBOX_BENCH_REDIS_URL", "redis://127.0.0.1:6379/12")
REDIS_DB = urlsplit(REDIS_URL).path.strip("/") or "0"
PAYLOAD_TIMEOUT = 120.0  # seconds any single benchmark task may take before it is an error


@dataclass(frozen=True)
class Sizes:
    """How much each section does."""

    throughput_tasks: int  # per system, timed, over all rounds
    warmup_tasks: int  # per system, untimed, over all rounds
    latency_tasks: int  # sequential, per system, over all rounds
    batching_tasks: int  # per configuration of section 3
    large_payload_mb: int
    depth_small: int
    depth_large: int
    depth_takes: int
    waiters: int
    idle_workers: int  # section 7
    idle_tasks: int
    rounds: int  # sections 1-2: every system is started, measured and stopped once per round

    def per_round(self, total: int) -> int:
        """A round's share of ``total`` tasks, rounded up: the rounds together do at least
        ``total``."""
        return -(-total // self.rounds)


FULL = Sizes(throughput_tasks=5000, warmup_tasks=300, latency_tasks=500, batching_tasks=400,
             large_payload_mb=200, depth_small=100, depth_large=1_000_000, depth_takes=200,
             waiters=1000, idle_workers=200, idle_tasks=100, rounds=3)  # fmt: skip
QUICK = Sizes(throughput_tasks=600, warmup_tasks=60, latency_tasks=100, batching_tasks=100,
              large_payload_mb=50, depth_small=100, depth_large=100_000, depth_takes=100,
              waiters=300, idle_workers=50, idle_tasks=20, rounds=2)  # fmt: skip

SECTIONS = ("throughput", "latency", "utilisation", "payload", "depth", "longpoll", "idle")
