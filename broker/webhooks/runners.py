"""Who makes the delivery attempts, and the relay that feeds them.

The scripts queue each webhook event in Redis (the outbox) in the same atomic step as the
transition, so ``puttaskresult`` never waits on a receiver. A :class:`Relay` claims events from the
outbox and hands them to a runner:

- :class:`RqRunner` enqueues an rq job per event, with rq's retries and backoff; the
  ``inferbox-broker jobs`` process runs the relay and the rq worker (any number of them);
- :class:`ThreadRunner` makes the attempts on threads in the broker process, retrying on the same
  schedule: the embedded default, where no other process can reach the in-process Redis.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from rq import Queue, Retry, get_current_job

from ..errors import Unavailable
from ..notify import Notifier
from ..queue import TaskQueue
from .delivery import Deliverer, Event, Outcome

log = logging.getLogger("inferbox.webhooks")


class Relay:
    """Moves events from the outbox to a runner; an event is acknowledged once handed over."""

    def __init__(
        self, queue: TaskQueue, notifier: Notifier, hand_over: Callable[[Event], None]
    ) -> None:
        self.queue = queue
        self.notifier = notifier
        self.hand_over = hand_over
        self._stop = threading.Event()

    def pump(self) -> int:
        """Relay what is waiting now; returns how many events were handed over."""
        handed = 0
        while True:
            claimed = self.queue.claim_webhook_events()
            for raw in claimed:
                try:
                    event = Event.from_json(raw)
                except (ValueError, KeyError, TypeError):
                    log.error("webhook relay: dropping a malformed event %r", raw[:200])
                else:
                    self.hand_over(event)  # raises: the event stays claimed, relayed again later
                    handed += 1
                self.queue.ack_webhook_event(raw)
            if not claimed:
                return handed

    def run(self) -> None:
        """Relay until :meth:`stop`, woken by the scripts' ``webhook`` notification (and at least
        once a second, so a lost notification costs a second, never an event)."""
        with self.notifier.listen(["webhook"]) as woken:
            while not self._stop.is_set():
                woken.clear()
                try:
                    self.pump()
                except Unavailable as exc:
                    log.warning("webhook relay: %s; retrying", exc)
                except Exception:  # e.g. rq could not enqueue: the events stay claimed
                    log.exception("webhook relay: handing over failed; retrying")
                woken.wait(1.0)

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, name="inferbox-webhook-relay", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()


# -- rq --------------------------------------------------------------------------------------------

_deliverer: Deliverer | None = None


def install(deliverer: Deliverer) -> None:
    """Give this process's rq jobs their :class:`Deliverer` (``inferbox-broker jobs`` does)."""
    global _deliverer
    _deliverer = deliverer


class RetryLater(Exception):
    """Raised by a job whose attempt failed so that rq schedules the next one."""


def deliver(event_json: str, retries: int) -> str:
    """The rq job: one attempt at ``event_json``; ``retries`` is the job's retry budget."""
    if _deliverer is None:
        raise RuntimeError("no Deliverer installed: run this job with `inferbox-broker jobs`")
    job = get_current_job()
    left = job.retries_left if job is not None and job.retries_left is not None else 0
    number = retries - left + 1
    outcome = _deliverer.attempt(Event.from_json(event_json), number, last=left <= 0)
    if outcome is Outcome.RETRY:
        raise RetryLater(f"attempt {number} failed; {left} retries left")
    return outcome.value


class RqRunner:
    def __init__(self, rq_queue: Queue, delays: Sequence[int]) -> None:
        self.rq_queue = rq_queue
        self.delays = list(delays)

    def __call__(self, event: Event) -> None:
        retry = Retry(max=len(self.delays), interval=self.delays) if self.delays else None
        self.rq_queue.enqueue(
            deliver, event.to_json(), len(self.delays), job_id=event.id, retry=retry,
            result_ttl=3_600, failure_ttl=7 * 86_400, job_timeout=120,
            description=f"webhook {event.event} for task {event.task_id}",
        )  # fmt: skip


# -- in-process ------------------------------------------------------------------------------------


class ThreadRunner:
    """Attempts on a small thread pool; retries wait on one timer thread."""

    def __init__(self, deliverer: Deliverer, delays: Sequence[int], threads: int = 4) -> None:
        self.deliverer = deliverer
        self.delays = list(delays)
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="inferbox-webhook")
        self._due: list[tuple[float, int, Event, int]] = []
        self._order = itertools.count()
        self._changed = threading.Condition()
        self._timer = threading.Thread(target=self._wait_for_due, name="inferbox-webhook-timer",
                                       daemon=True)  # fmt: skip
        self._timer.start()

    def __call__(self, event: Event) -> None:
        self._pool.submit(self._attempt, event, 1)

    def _attempt(self, event: Event, number: int) -> None:
        try:
            outcome = self.deliverer.attempt(event, number, last=number > len(self.delays))
        except Exception:  # a broken attempt must not end the retries
            log.exception("webhook %s: attempt %d raised", event.id, number)
            outcome = Outcome.RETRY if number <= len(self.delays) else Outcome.FAILED
        if outcome is Outcome.RETRY:
            self._later(self.delays[number - 1], event, number + 1)

    def _later(self, delay: float, event: Event, number: int) -> None:
        with self._changed:
            heapq.heappush(self._due, (time.monotonic() + delay, next(self._order), event, number))
            self._changed.notify()

    def _wait_for_due(self) -> None:
        while True:
            with self._changed:
                while not self._due or self._due[0][0] > time.monotonic():
                    timeout = self._due[0][0] - time.monotonic() if self._due else None
                    self._changed.wait(timeout)
                _, _, event, number = heapq.heappop(self._due)
            self._pool.submit(self._attempt, event, number)
