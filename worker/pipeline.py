"""One ``Worker.run``: three threads around bounded hand-offs, so the model never waits on HTTP.

::

    fetcher thread ──ready (P ahead)──► calling thread: the model ──done (≤ P+1)──► poster
       take k+1..k+P                         batch k                         post k-1

The calling thread runs the handler (so a notebook interrupt or Ctrl-C lands in the model code,
and GPU libraries that want the main thread have it). The fetcher takes the next batches while
the model works, holding at most ``prefetch`` (P, default 1) batches ahead (a ``slots``
semaphore); when several slots are free, one take asks for all of them and its answer is cut
into batches. The poster uploads finished batches, at most P+1 behind (the ``done`` queue's
bound), and posts up to P of them that are already waiting in one request: under load a
worker with ``prefetch=4`` and ``batch_size=1`` takes up to four tasks a request and posts
together the results that finished while its last post was on the way. It never waits to fill
a take or a post. One more thread, the ``LeaseKeeper``, heartbeats every task in hand. With
``pipeline=False`` the calling thread takes, computes and posts in turn.

Stopping: no new takes; batches not yet started go back to the queue (``release``), finished
results are posted, and on an interrupt the batch the model was working on goes back too.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from client_sdk.backoff import Backoff
from client_sdk.codec import Encoded
from client_sdk.errors import (
    APIError,
    BrokerUnavailable,
    Conflict,
    InferboxError,
    PayloadTooLarge,
    ProtocolError,
)
from worker.api import BrokerAPI
from worker.handler import HandlerSpec, error_document, execute, is_error
from worker.heartbeat import LeaseKeeper
from worker.stats import ProgressLine, Stats
from worker.task import TakenTask

if TYPE_CHECKING:
    from worker.worker import Worker

__all__ = ["Run"]

logger = logging.getLogger("inferbox.worker")

_POLL = 0.2  # seconds between checks of the stop flag while waiting on a hand-off
_STOP_POST_SECONDS = 10.0  # how long a stopping worker keeps trying to post finished results
_BUSY_WAIT = 1.0  # seconds a take made ahead (the model busy) may long-poll
_MAX_PER_REQUEST = 100  # tasks the broker takes or records in one request (docs/api.md)


@dataclass
class _Finished:
    tasks: list[TakenTask]
    bodies: list[Encoded | None]
    started: float


class _Budget:
    """How many more tasks this run may take (``max_tasks``), shared by taker and model."""

    def __init__(self, limit: int | None) -> None:
        self._left = limit
        self._lock = threading.Lock()

    def reserve(self, wanted: int) -> int:
        with self._lock:
            if self._left is None:
                return wanted
            granted = min(wanted, self._left)
            self._left -= granted
            return granted

    def give_back(self, count: int) -> None:
        with self._lock:
            if self._left is not None:
                self._left += count


class Run:
    def __init__(
        self, worker: Worker, spec: HandlerSpec, *, max_tasks: int | None, progress: bool,
        model_version: str | None,
    ) -> None:  # fmt: skip
        self.worker = worker
        self.spec = spec
        self.model_version = model_version
        self.stats = Stats()
        self.budget = _Budget(max_tasks)
        self.keeper = LeaseKeeper(self._api(), lease=worker.lease, poll=worker.cancel_poll)
        self.ready: queue.Queue[list[TakenTask] | BaseException | None] = queue.Queue()
        self.done: queue.Queue[_Finished | None] = queue.Queue(maxsize=worker.prefetch + 1)
        self.slots = threading.Semaphore(worker.prefetch)
        # How many batches one take (and one post) may carry: every free slot, within the
        # broker's limit per request.
        self._per_request = max(1, min(worker.prefetch, _MAX_PER_REQUEST // worker.batch_size))
        self.stopped = threading.Event()  # no new takes; set by stop() or on the way out
        self._entry = threading.Lock()  # orders "taken tasks enter the keeper" against stopping
        self._main_api = self._api()
        self._line = ProgressLine(self.stats, worker.queue) if progress else None
        self._threads: list[threading.Thread] = []

    def _api(self) -> BrokerAPI:
        worker = self.worker
        return BrokerAPI(worker.url, worker.token, timeout=worker.timeout)

    # -- the calling thread -----------------------------------------------------------------------

    def run(self) -> Stats:
        self.keeper.start()
        if self.worker.pipeline:
            self._spawn(self._fetch_loop, "inferbox-fetch")
            self._spawn(self._post_loop, "inferbox-post")
        failure: BaseException | None = None
        try:
            while not self.stopped.is_set():
                batch = self._next_batch()
                if batch is None:
                    break
                self._compute(batch)
        except KeyboardInterrupt:
            self.stats.interrupted = True
            logger.warning("interrupted: handing back the tasks in hand")
        except BaseException as exc:  # a fatal take error (AuthError, ...): stop, then raise
            failure = exc
        finally:
            self._shut_down()
        if failure is not None:
            raise failure
        return self.stats

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _next_batch(self) -> list[TakenTask] | None:
        """The next batch to compute; None when the run is over (stop, max_tasks)."""
        if not self.worker.pipeline:
            return self._take_tasks(self._main_api, batches=1)
        while True:
            try:
                item = self.ready.get(timeout=_POLL)
            except queue.Empty:
                if self.stopped.is_set():
                    return None
                continue
            if item is None or isinstance(item, BaseException):
                if isinstance(item, BaseException):
                    raise item
                return None
            self.slots.release()  # the fetcher may take the next batch while this one runs
            if self.stopped.is_set():  # stopped meanwhile: not ours to start any more
                self._release(item, self._main_api)
                return None
            return item

    def _compute(self, batch: list[TakenTask]) -> None:
        self.stats.batch_started(len(batch))
        self.keeper.set_active(batch, True)
        started = time.monotonic()
        outcome = execute(self.spec, batch, self.keeper, self.stopped.is_set)
        self.keeper.set_active(batch, False)
        self.stats.batch_ended(outcome.busy_seconds)
        if outcome.unstarted:
            self._release(outcome.unstarted, self._main_api)
        started_tasks = [task for task in batch if task not in outcome.unstarted]
        bodies = [body for task, body in zip(batch, outcome.bodies, strict=True)
                  if task not in outcome.unstarted]  # fmt: skip
        finished = _Finished(started_tasks, bodies, started)
        if self.worker.pipeline:
            self.done.put(finished)
        else:
            self._post([finished])
        self._refresh()

    # -- taking -----------------------------------------------------------------------------------

    def _take_tasks(self, api: BrokerAPI, batches: int) -> list[TakenTask] | None:
        """Take up to ``batches`` batches' worth of tasks in one request, retrying while the
        broker is away; None when the run must end."""
        backoff = Backoff(base=0.5, cap=30.0)
        while not self.stopped.is_set():
            wanted = self.budget.reserve(self.worker.batch_size * batches)
            if wanted == 0:
                return None
            try:
                tasks = api.take(
                    self.worker.queue, max_tasks=wanted, wait=self._take_wait(),
                    lease=self.worker.lease, worker_id=self.worker.worker_id,
                )  # fmt: skip
            except (BrokerUnavailable, ProtocolError) as exc:
                self.budget.give_back(wanted)
                delay = backoff.next_delay()
                logger.warning("cannot take tasks (%s); retrying in %.1f s", exc, delay)
                self.worker._sleep(delay)
                continue
            except BaseException:
                self.budget.give_back(wanted)
                raise
            backoff.reset()
            self.budget.give_back(wanted - len(tasks))
            if tasks and self._hold(tasks, api):
                return tasks
        return None

    def _take_wait(self) -> float:
        """Long-poll for the full ``wait`` only while the model is idle. A take made ahead, while
        the model works, polls briefly: if this process dies, the broker would otherwise keep
        the dead worker's poll open and lease it the next tasks, which then sit out a lease."""
        busy = self.stats.current_batch > 0
        return min(self.worker.wait, _BUSY_WAIT) if busy else self.worker.wait

    def _hold(self, tasks: list[TakenTask], api: BrokerAPI) -> bool:
        """Register freshly taken tasks with the keeper, unless the run is stopping: then
        hand them straight back. Returns whether they are ours to compute."""
        with self._entry:
            if not self.stopped.is_set():
                self.keeper.add(tasks)
                return True
        self._release(tasks, api)
        return False

    def _fetch_loop(self) -> None:
        api = self._api()
        size = self.worker.batch_size
        try:
            while not self.stopped.is_set():
                if not self.slots.acquire(timeout=_POLL):
                    continue
                free = 1
                while free < self._per_request and self.slots.acquire(blocking=False):
                    free += 1
                tasks = self._take_tasks(api, batches=free)
                if tasks is None:
                    break
                batches = [tasks[start:start + size] for start in range(0, len(tasks), size)]
                for batch in batches:
                    self.ready.put(batch)
                for _ in range(free - len(batches)):
                    self.slots.release()
        except BaseException as exc:
            self.ready.put(exc)
        finally:
            if self.stopped.is_set():
                self._release_fetched_ahead(api)
            self.ready.put(None)
            api.close()

    def _release_fetched_ahead(self, api: BrokerAPI) -> None:
        """On stop, batches waiting for the model go back to the queue now, not after the batch
        in hand is done."""
        while True:
            try:
                item = self.ready.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, list):
                held = {task.id for task in self.keeper.held()}
                self._release([task for task in item if task.id in held], api)
            else:
                self.ready.put(item)  # an error for the calling thread: leave it there
                return

    # -- posting ----------------------------------------------------------------------------------

    def _post_loop(self) -> None:
        api = self._api()
        waiting: _Finished | None = None  # drawn from ``done`` but too many for the last post
        ending = False
        while not ending:
            first = waiting or self.done.get()
            waiting = None
            if first is None:
                break
            group, count = [first], len(first.tasks)
            while len(group) < self._per_request:  # what else is finished already, no waiting
                try:
                    more = self.done.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    ending = True
                    break
                if count + len(more.tasks) > _MAX_PER_REQUEST:
                    waiting = more
                    break
                group.append(more)
                count += len(more.tasks)
            self._post(group, api)
        api.close()

    def _post(self, group: list[_Finished], api: BrokerAPI | None = None) -> None:
        """Post the results of finished batches in one request (one batch's, unless the
        poster found several waiting)."""
        api = api or self._main_api
        items, started, dropped = [], [], 0
        for finished in group:
            for task, body in zip(finished.tasks, finished.bodies, strict=True):
                reason = self.keeper.lost(task)
                if body is None or reason:
                    dropped += 1
                    logger.warning("task %s: %s; dropping its result", task.id,
                                   reason or "canceled by a client")  # fmt: skip
                else:
                    items.append((task, body))
                    started.append(finished.started)
        verdicts = self._deliver(items, api) if items else []
        for finished in group:
            self.keeper.remove(finished.tasks)
        self.stats.add(dropped=dropped)
        for (task, body), verdict, begun in zip(items, verdicts, started, strict=True):
            self._count(task, body, verdict, begun)
        self._refresh()

    def _count(self, task: TakenTask, body: Encoded, verdict: str, started: float) -> None:
        kind = "failed" if is_error(body) else "succeeded"
        if verdict == "posted":
            self.stats.add(**{kind: 1})
        elif verdict == "dropped":
            self.stats.add(dropped=1)
        elapsed = time.monotonic() - started
        logger.debug("task %s (queue %s, attempt %d) %s, result %s in %.3f s", task.id,
                     task.queue, task.attempt, kind, verdict, elapsed)  # fmt: skip

    def _deliver(self, items: list[tuple[TakenTask, Encoded]], api: BrokerAPI) -> list[str]:
        """Post ``items``, retrying while the broker is away and the leases last.

        One verdict per item: posted, dropped (lease lost), refused or undelivered.
        """
        backoff = Backoff(base=0.5, cap=30.0)
        deadline = self.keeper.deadline([task for task, _ in items])
        while True:
            try:
                if len(items) == 1:
                    return [self._put_one(*items[0], api)]
                return self._put_many(items, api)
            except BrokerUnavailable as exc:
                if self._give_up_posting(deadline):
                    logger.error("%d result(s) not delivered: %s", len(items), exc)
                    return ["undelivered"] * len(items)
                delay = backoff.next_delay()
                logger.warning("cannot post results (%s); retry in %.1f s", exc, delay)
                self.worker._sleep(delay)

    def _give_up_posting(self, deadline: float) -> bool:
        now = time.monotonic()
        if self.stopped.is_set() and now > self._stop_posting_until:
            return True
        return now >= deadline

    _stop_posting_until = float("inf")

    def _put_one(self, task: TakenTask, body: Encoded, api: BrokerAPI) -> str:
        try:
            api.put(task, body, self.model_version)
            return "posted"
        except Conflict as exc:
            logger.warning("task %s: result refused, lease lost (%s)", task.id, exc)
            return "dropped"
        except PayloadTooLarge as exc:
            if is_error(body):
                logger.error("task %s: error document refused: %s", task.id, exc)
                return "refused"
            # Posting the same result again cannot succeed; fail the task with the reason.
            return self._put_one(task, error_document(exc, retryable=False), api)
        except BrokerUnavailable:
            raise
        except APIError as exc:
            logger.error("task %s: result refused: %s", task.id, exc)
            return "refused"

    def _put_many(self, items: list[tuple[TakenTask, Encoded]], api: BrokerAPI) -> list[str]:
        try:
            answers = api.put_many(items, self.model_version)
        except PayloadTooLarge:  # the batch as a whole is too big: one by one then
            return [self._put_one(task, body, api) for task, body in items]
        verdicts = []
        for (task, _), answer in zip(items, answers, strict=True):
            if "error" in answer and "status" not in answer:
                logger.warning("task %s: result refused (%s: %s)", task.id, answer.get("error"),
                               answer.get("message"))  # fmt: skip
                verdicts.append("dropped")
            else:
                verdicts.append("posted")
        return verdicts

    # -- stopping ---------------------------------------------------------------------------------

    def _shut_down(self) -> None:
        """No new takes; post what is finished; hand back everything else still in hand."""
        with self._entry:
            self.stopped.set()
        self._stop_posting_until = time.monotonic() + _STOP_POST_SECONDS
        if self.worker.pipeline:
            self.done.put(None)
            self._threads[1].join()  # the poster
            # The fetcher ends within a tick, unless a long poll holds it: then it hands back
            # what that poll brings, by itself.
            self._threads[0].join(timeout=2 * _POLL)
        unfinished = [task for task in self.keeper.held() if not self.keeper.lost(task)]
        if unfinished:
            self._release(unfinished, self._main_api)
        self.keeper.close()
        self._main_api.close()
        self.stats.ended_at = time.monotonic()
        if self._line is not None:
            self._line.close()

    def _release(self, tasks: list[TakenTask], api: BrokerAPI) -> None:
        if not tasks:
            return
        released = 0
        for task in tasks:
            try:
                api.release(task)
                released += 1
            except Conflict:
                pass  # canceled or lost meanwhile: nothing to hand back
            except InferboxError as exc:
                logger.warning("task %s could not be released (%s); its lease will lapse",
                               task.id, exc)  # fmt: skip
        self.keeper.remove(tasks)
        self.stats.add(released=released)
        if released:
            logger.info("released %d unfinished task(s) back to the queue", released)

    def _refresh(self) -> None:
        if self._line is not None:
            self._line.refresh()
