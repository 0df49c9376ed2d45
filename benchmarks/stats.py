"""Measuring helpers: percentiles, CPU seconds of a group of processes, peak RSS sampling.

psutil (the ``bench`` extra) is imported where it is used, so the pure helpers import
without it.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

import redis

if TYPE_CHECKING:
    import psutil


def percentile(values: Sequence[float], fraction: float) -> float:
    """The ``fraction`` (0-1) percentile of ``values``, nearest-rank; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def tree(pid: int) -> list[psutil.Process]:
    """The process and its live descendants (empty when it is gone)."""
    import psutil

    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def cpu_seconds(pids: Iterable[int]) -> float:
    """User + system CPU seconds of the processes, their live descendants and their reaped
    children (forked RQ work-horses and Celery pool processes included)."""
    import psutil

    total = 0.0
    for pid in pids:
        for process in tree(pid):
            try:
                times = process.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system + times.children_user + times.children_system
    return total


def own_cpu_seconds() -> float:
    """User + system CPU seconds of this process alone: not its children (the systems under
    test are this process's children and are counted as servers)."""
    times = os.times()
    return times.user + times.system


def redis_cpu_seconds(client: redis.Redis) -> float:
    """CPU seconds the Redis server has used since it started (all databases, all clients)."""
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


class CpuMeter:
    """CPU seconds spent by one system between ``start`` and ``stop``: this process (the
    client), the system's processes (``pids`` and their descendants) and the Redis server."""

    def __init__(self, pids: Callable[[], list[int]], client: redis.Redis) -> None:
        self._pids = pids
        self._redis = client
        self._start = (0.0, 0.0, 0.0)

    def _sample(self) -> tuple[float, float, float]:
        return (own_cpu_seconds(), cpu_seconds(self._pids()),
                redis_cpu_seconds(self._redis))  # fmt: skip

    def start(self) -> None:
        self._start = self._sample()

    def stop(self) -> dict[str, float]:
        """CPU seconds per part since ``start``: client, servers, redis."""
        end = self._sample()
        pairs = zip(end, self._start, strict=True)
        client, servers, store = (after - before for after, before in pairs)
        return {"client": client, "servers": servers, "redis": store}


class Peak:
    """Samples ``measure()`` every ``interval`` seconds in a background thread while the
    ``with`` block runs; ``baseline`` is the value before it, ``peak`` the highest seen."""

    def __init__(self, measure: Callable[[], int], interval: float = 0.05) -> None:
        self._measure = measure
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.baseline = measure()
        self.peak = self.baseline

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.peak = max(self.peak, self._measure())

    def __enter__(self) -> Peak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._measure())

    @property
    def growth(self) -> int:
        return self.peak - self.baseline


def rss(pids: Iterable[int]) -> int:
    """Summed resident set size of the processes, in bytes (gone ones count 0)."""
    import psutil

    total = 0
    for pid in pids:
        try:
            total += psutil.Process(pid).memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total


def PeakRss(pids: Callable[[], list[int]], interval: float = 0.05) -> Peak:  # noqa: N802
    """A ``Peak`` of the summed RSS of the processes ``pids()`` names, in bytes."""
    return Peak(lambda: rss(pids()), interval)
