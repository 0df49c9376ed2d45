"""Keeping every lease a worker holds alive, from one background thread.

The keeper beats (``POST /tasks/<id>/heartbeat``) for each task in hand: every ``lease / 3``
seconds for tasks waiting their turn or their upload, every ``poll`` seconds for tasks the
handler is working on (so a cancel reaches it soon), and within half a second of a handler
reporting progress. The broker's answer tells it when a task was canceled or its lease lost;
the task is then marked ``lost`` and its result will be dropped.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from client_sdk.errors import Conflict, InferboxError, NotFound
from worker.api import BrokerAPI
from worker.task import TakenTask

__all__ = ["LeaseKeeper"]

logger = logging.getLogger("inferbox.worker")

_PROGRESS_INTERVAL = 0.5  # seconds between two progress reports of one task, at least
_RETRY_INTERVAL = 1.0  # after a failed beat (broker away)
_TICK = 0.25


@dataclass
class _Held:
    task: TakenTask
    last_beat: float
    deadline: float  # monotonic time the lease is believed to end
    active: bool = False  # the handler is working on it
    progress: tuple[float, str] | None = None  # to report with the next beat
    asked: bool = False  # someone asked for news (ctx.canceled): beat soon
    lost: str | None = None
    retry_at: float = field(default=0.0)


class LeaseKeeper:
    """Heartbeats for all tasks in hand. Thread-safe; ``start()`` it, ``close()`` it."""

    def __init__(self, api: BrokerAPI, *, lease: float, poll: float = 2.0) -> None:
        self._api = api
        self._lease = lease
        self._poll = min(poll, lease / 3)
        self._held: dict[str, _Held] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="inferbox-heartbeat", daemon=True)

    def start(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def close(self) -> None:
        self._closed.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self._api.timeout)
        self._api.close()

    # -- what the worker tells it -----------------------------------------------------------------

    def add(self, tasks: Iterable[TakenTask]) -> None:
        now = time.monotonic()
        with self._lock:
            for task in tasks:
                self._held[task.id] = _Held(task, last_beat=now, deadline=now + self._lease)

    def remove(self, tasks: Iterable[TakenTask]) -> None:
        with self._lock:
            for task in tasks:
                self._held.pop(task.id, None)

    def set_active(self, tasks: Iterable[TakenTask], active: bool) -> None:
        with self._lock:
            for task in tasks:
                if task.id in self._held:
                    self._held[task.id].active = active

    def report(self, task: TakenTask, fraction: float, message: str) -> None:
        with self._lock:
            held = self._held.get(task.id)
            if held is not None:
                held.progress = (min(1.0, max(0.0, float(fraction))), message[:500])
        self._wake.set()

    def ask(self, task: TakenTask) -> None:
        """Someone wants to know whether the task was canceled: check soon."""
        with self._lock:
            held = self._held.get(task.id)
            if held is not None and not held.asked:
                held.asked = True
                self._wake.set()

    # -- what it tells the worker -----------------------------------------------------------------

    def lost(self, task: TakenTask) -> str | None:
        """Why the task's result must be dropped (canceled, lease lost), or None."""
        with self._lock:
            held = self._held.get(task.id)
            return held.lost if held is not None else None

    def deadline(self, tasks: Iterable[TakenTask]) -> float:
        """The monotonic time the first of these leases is believed to end."""
        with self._lock:
            ends = [self._held[t.id].deadline for t in tasks if t.id in self._held]
        return min(ends, default=time.monotonic())

    def held(self) -> list[TakenTask]:
        with self._lock:
            return [held.task for held in self._held.values()]

    # -- the thread -------------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._closed.is_set():
            self._wake.wait(_TICK)
            self._wake.clear()
            for held in self._due(time.monotonic()):
                if self._closed.is_set():
                    return
                self.beat(held.task)

    def _due(self, now: float) -> list[_Held]:
        with self._lock:
            return [held for held in self._held.values() if self._is_due(held, now)]

    def _is_due(self, held: _Held, now: float) -> bool:
        if held.lost or now < held.retry_at:
            return False
        since = now - held.last_beat
        if held.progress is not None and since >= _PROGRESS_INTERVAL:
            return True
        if held.asked and since >= _PROGRESS_INTERVAL:
            return True
        return since >= (self._poll if held.active else self._lease / 3)

    def beat(self, task: TakenTask) -> None:
        """Post one heartbeat for ``task`` now and record what the broker answered."""
        with self._lock:
            held = self._held.get(task.id)
            if held is None:
                return
            progress, held.progress, held.asked = held.progress, None, False
        sent_at = time.monotonic()
        try:
            answer = self._api.heartbeat(task, progress)
        except (Conflict, NotFound) as exc:
            self._mark(task, f"lease lost ({exc})", sent_at)
        except InferboxError as exc:
            logger.warning("heartbeat for task %s failed, will try again: %s", task.id, exc)
            with self._lock:
                if progress is not None and held.progress is None:
                    held.progress = progress
                held.retry_at = sent_at + _RETRY_INTERVAL
        else:
            self._mark(task, "canceled by a client" if answer.get("canceled") else None, sent_at)

    def _mark(self, task: TakenTask, lost: str | None, sent_at: float) -> None:
        with self._lock:
            held = self._held.get(task.id)
            if held is None:
                return
            held.last_beat = sent_at
            if lost:
                held.lost = lost
            else:
                held.deadline = sent_at + self._lease
