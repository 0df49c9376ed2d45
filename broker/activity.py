"""What operators watch: per-queue counters, histograms and throughput, the workers seen recently
and the recent failures.

Read-only. The state machine's scripts write all of it in the same atomic step as the transition
it counts (``broker/keys.py`` draws the keys), so every broker process, on every host, reads the
same cluster-wide numbers: a multi-process server needs no shared metrics directory.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import redis

from . import keys as K
from .errors import Unavailable
from .queue import TaskQueue
from .task import QueueStats


@dataclass(frozen=True)
class Histogram:
    """Observations in seconds: ``buckets[i]`` counts those in bucket i of
    ``K.HISTOGRAM_BUCKETS`` (the last one is +Inf), not cumulated."""

    buckets: tuple[int, ...]
    count: int
    sum: float

    def cumulative(self) -> list[tuple[str, int]]:
        """Prometheus buckets: (upper bound, observations at or below it), +Inf last."""
        bounds = [repr(float(bound)) for bound in K.HISTOGRAM_BUCKETS] + ["+Inf"]
        running, out = 0, []
        for bound, count in zip(bounds, self.buckets, strict=True):
            running += count
            out.append((bound, running))
        return out


@dataclass(frozen=True)
class QueueActivity:
    stats: QueueStats
    counters: dict[str, int]
    histograms: dict[str, Histogram]
    finished_per_minute: float

    def to_doc(self) -> dict[str, Any]:
        return {"name": self.stats.name, "depth": self.stats.depth,
                "in_flight": self.stats.in_flight,
                "oldest_age_seconds": self.stats.oldest_age_seconds,
                "finished_per_minute": self.finished_per_minute, **self.counters}  # fmt: skip


@dataclass(frozen=True)
class WorkerSeen:
    worker_id: str
    queues: list[str]
    last_seen: float
    alive: bool
    tasks_done: int
    tasks_failed: int
    model_version: str


@dataclass(frozen=True)
class Failure:
    task_id: str
    queue: str
    worker_id: str
    attempt: int
    error: str
    final: bool
    at: float


class Activity:
    """Reads of the activity the scripts record, for one :class:`TaskQueue`."""

    def __init__(self, queue: TaskQueue) -> None:
        self.queue = queue
        self.redis = queue.redis
        self.keys = queue.keys

    def queues(self) -> list[QueueActivity]:
        """Every queue used so far, by name."""
        stats = self.queue.stats()
        now = self.queue.clock()
        minute = math.floor(now / 60)
        minutes = range(minute - K.THROUGHPUT_MINUTES + 1, minute + 1)
        with _redis_errors():
            pipe = self.redis.pipeline(transaction=False)
            for queue in stats:
                pipe.hgetall(self.keys.stats(queue.name))
                for name in K.HISTOGRAMS:
                    pipe.hgetall(self.keys.histogram(queue.name, name))
                pipe.mget([self.keys.finished_in_minute(queue.name, m) for m in minutes])
            replies = iter(pipe.execute())
        # The current minute has only partly run: average over the time the window covers.
        window = (K.THROUGHPUT_MINUTES - 1) + (now % 60) / 60
        out = []
        for queue in stats:
            counters = _ints(next(replies))
            histograms = {name: _histogram(next(replies)) for name in K.HISTOGRAMS}
            finished = sum(int(value) for value in next(replies) if value)
            out.append(QueueActivity(
                stats=queue, counters={name: counters.get(name, 0) for name in K.COUNTERS},
                histograms=histograms, finished_per_minute=round(finished / max(window, 1), 2),
            ))  # fmt: skip
        return out

    def workers(self) -> list[WorkerSeen]:
        """Workers seen within ``WORKER_FORGET`` seconds, the most recently alive first."""
        now = self.queue.clock()
        with _redis_errors():
            seen: list[tuple[bytes, float]] = self.redis.zrevrangebyscore(  # type: ignore[assignment]
                self.keys.workers, "+inf", now - K.WORKER_FORGET, withscores=True
            )
            pipe = self.redis.pipeline(transaction=False)
            for worker_id, _ in seen:
                pipe.hgetall(self.keys.worker(worker_id.decode()))
            details = pipe.execute()
        out = []
        for (worker_id, alive_until), raw in zip(seen, details, strict=True):
            if not raw:  # its hash expired before the set was trimmed
                continue
            f = {k.decode(): v.decode() for k, v in raw.items()}
            out.append(WorkerSeen(
                worker_id=worker_id.decode(),
                queues=[q for q in f.get("queues", "").split(",") if q],
                last_seen=float(f.get("last_seen", 0)), alive=alive_until >= now,
                tasks_done=int(f.get("tasks_done", 0)), tasks_failed=int(f.get("tasks_failed", 0)),
                model_version=f.get("model_version", ""),
            ))  # fmt: skip
        return out

    def workers_alive(self) -> int:
        with _redis_errors():
            return int(self.redis.zcount(self.keys.workers, self.queue.clock(), "+inf"))

    def failures(self, limit: int = K.RECENT_FAILURES) -> list[Failure]:
        """The most recent failed attempts, newest first."""
        with _redis_errors():
            raw = self.redis.lrange(self.keys.failures, 0, limit - 1)
        out = []
        for item in raw:
            doc = json.loads(item)
            out.append(Failure(
                task_id=doc["task_id"], queue=doc["queue"], worker_id=doc.get("worker_id") or "",
                attempt=int(doc.get("attempt", 0)), error=doc.get("error", ""),
                final=bool(doc.get("final")), at=float(doc["at"]),
            ))  # fmt: skip
        return out

    def webhook_backlog(self) -> int:
        """Webhook events not yet handed to the delivery queue."""
        with _redis_errors():
            pipe = self.redis.pipeline(transaction=False)
            pipe.llen(self.keys.webhook_outbox)
            pipe.zcard(self.keys.webhook_relaying)
            return sum(int(n) for n in pipe.execute())


@contextmanager
def _redis_errors() -> Iterator[None]:
    try:
        yield
    except redis.RedisError as exc:
        raise Unavailable(f"Redis failed: {exc}") from exc


def _ints(raw: dict[bytes, bytes]) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in raw.items()}


def _histogram(raw: dict[bytes, bytes]) -> Histogram:
    f = {k.decode(): v.decode() for k, v in raw.items()}
    buckets = tuple(int(f.get(str(i), 0)) for i in range(1, len(K.HISTOGRAM_BUCKETS) + 2))
    return Histogram(buckets=buckets, count=int(f.get("count", 0)), sum=float(f.get("sum", 0)))
