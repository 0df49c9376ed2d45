"""The inference mailbox: payloads into the inbox, results into the outbox, state in the queue.

:class:`Mailbox` joins the three parts a request touches: blob storage (the bytes), the
:class:`~broker.queue.TaskQueue` (the state) and the :class:`~broker.notify.Notifier` (waking
long-polls). It knows no HTTP: the blueprints translate requests into these calls.

Ordering rules that keep a task whole:

- submit writes the payload blob first and indexes the task after, deleting the blob if indexing
  fails, so the index never names a missing payload;
- each attempt writes its result to its own blob (``outbox/<task_id>/<lease_id>``) before the
  state machine accepts it, so a refused late result is deleted without touching the live one;
- backpressure (queue depth, the token's submit rate) is checked before the payload is stored,
  so a refused flood costs storage nothing;
- a failed or canceled task gets a state record (``state/<task_id>``) after the state machine
  ends it, so that the index can be rebuilt from storage (``broker.reindex``); what a request
  cannot write, the janitor does.

If Redis fails while indexing a submit, the script may or may not have run: the payload is
deleted only when Redis confirms the task is not indexed, else kept for the janitor's
reconcile pass to restore (a task the client was told failed may then still run, never the
other way round).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import IO, Any, TypeVar

from storage import (
    Blob,
    BlobNotFound,
    BlobStore,
    InvalidKey,
    InvalidMetadata,
    Put,
    StorageError,
)

from . import keys as K
from .errors import (
    BrokerError,
    InvalidRequest,
    LeaseLost,
    TaskFinished,
    TaskNotFound,
    Unavailable,
)
from .notify import Notifier, Wake
from .queue import Completion, NewTask, Submitted, TaskQueue, notified_task
from .reindex import RECORDED, state_record
from .task import Lease, Task, iso, new_task_id

log = logging.getLogger("inferbox.broker")

MAX_ERROR_CHARS = 8_000
# Blob reads and writes one server process runs at once for its batch requests: each waits on
# the store (a cloud store's round trip, a disk), so a batch of 100 costs a few waits, not 100
# in turn. (``file://`` makes a batch's writes durable together and does not need them.)
STORAGE_CONCURRENCY = 8

_Item = TypeVar("_Item")
_Out = TypeVar("_Out")
_Seen = TypeVar("_Seen")


@dataclass(frozen=True)
class ResultUpload:
    """One result of a batch posted to ``complete_many``."""

    task_id: str
    lease_id: str
    body: bytes
    content_type: str
    model_version: str = ""


@dataclass(frozen=True)
class PayloadUpload:
    """One payload of a batch posted to ``submit_many``."""

    body: bytes
    content_type: str
    idempotency_key: str | None = None


@contextmanager
def _storage_errors(action: str) -> Iterator[None]:
    try:
        yield
    except BlobNotFound:
        raise
    except (InvalidKey, InvalidMetadata) as exc:  # checked before any byte is read or written
        raise InvalidRequest(f"cannot {action}: {exc}") from exc
    except StorageError as exc:
        raise Unavailable(f"blob storage failed to {action}: {exc}") from exc


def _payload_metadata(task_id: str, queue: str, owner: str, priority: int, max_attempts: int,
                      ttl: int, created_at: str) -> dict[str, str]:  # fmt: skip
    """What a payload blob records of its task, so the index can be rebuilt from storage."""
    return {"task_id": task_id, "queue": queue, "owner": owner, "priority": str(priority),
            "max_attempts": str(max_attempts), "ttl": str(ttl), "created_at": created_at}


@dataclass(frozen=True)
class Backpressure:
    """Submit limits; 0 disables each (see ``INFERBOX_MAX_QUEUE_DEPTH`` and friends)."""

    max_queue_depth: int = K.DEFAULT_MAX_QUEUE_DEPTH
    submit_rate: float = K.DEFAULT_SUBMIT_RATE
    submit_burst: int = K.DEFAULT_SUBMIT_BURST

    @property
    def on(self) -> bool:
        """Whether a limit could refuse a submit (a replay must be recognised before that)."""
        return bool(self.max_queue_depth or self.submit_rate)


class Mailbox:
    def __init__(
        self, queue: TaskQueue, store: BlobStore, notifier: Notifier, *,
        backpressure: Backpressure | None = None,
    ) -> None:  # fmt: skip
        self.queue = queue
        self.store = store
        self.notifier = notifier
        self.backpressure = backpressure or Backpressure()
        self.closing = threading.Event()
        # threads start on first use: none exist in a process that forks servers later
        self._storage_pool = ThreadPoolExecutor(STORAGE_CONCURRENCY,
                                                thread_name_prefix="inferbox-storage")

    def close(self) -> None:
        """Answer waiting long-polls now and every later one at once (the server is stopping)."""
        self.closing.set()
        self.notifier.wake_all()

    # -- clients --------------------------------------------------------------------------------

    def submit(
        self, body: IO[bytes], *, content_type: str, queue: str, owner: str, priority: int,
        max_attempts: int, ttl: int, idempotency_key: str | None = None,
        webhook_url: str = "", webhook_events: tuple[str, ...] = (),
        task_id: str | None = None,
    ) -> tuple[Task, bool]:  # fmt: skip
        """Store the payload and queue the task; returns (task, created).

        ``task_id`` names the new task (an import keeping ids that clients already hold); the
        caller makes sure no task has it yet. By default the id is new and random.
        """
        limits = self.backpressure
        if limits.on:  # with no limit on, the submit script alone recognises a replay
            replayed = self.queue.admit(owner, queue, max_depth=limits.max_queue_depth,
                                        rate=limits.submit_rate, burst=limits.submit_burst,
                                        idempotency_key=idempotency_key)  # fmt: skip
            if replayed:
                return self.queue.get(replayed), False
        task_id = task_id or new_task_id()
        key = K.payload_key(task_id)
        metadata = _payload_metadata(task_id, queue, owner, priority, max_attempts, ttl,
                                     iso(self.queue.clock()) or "")  # fmt: skip
        with _storage_errors("store the payload"):
            info = self.store.put(key, body, content_type=content_type, metadata=metadata)
        new = NewTask(queue=queue, owner=owner, content_type=content_type, size=info.size,
                      priority=priority, max_attempts=max_attempts, ttl=ttl, task_id=task_id,
                      webhook_url=webhook_url, webhook_events=webhook_events)
        try:
            submitted = self.queue.submit(new, idempotency_key, max_depth=limits.max_queue_depth)
        except Unavailable:
            self._discard_unless_indexed(task_id)
            raise
        except BaseException:  # QueueFull, or the process is being stopped
            self._discard(key)
            raise
        if not submitted.created and submitted.task_id != task_id:
            self._discard(key)  # its key names an earlier task: a replay, or a concurrent submit
        return submitted.task or self.queue.get(submitted.task_id), submitted.created

    def submit_many(
        self, uploads: Sequence[PayloadUpload], *, queue: str, owner: str, priority: int,
        max_attempts: int, ttl: int,
    ) -> list[tuple[Task, bool]]:  # fmt: skip
        """``submit`` for a batch sharing its options: (task, created) per upload, in order.

        Same rules as ``submit``, in a few Redis round trips for the lot: with a limit on,
        replays are looked up first and the new tasks are admitted together (the batch fits
        under the queue depth whole, or QueueFull refuses it whole, and each spends a rate
        token); their payloads are stored, then indexed in one pipeline, and deleted if
        indexing fails or their key names an earlier task.
        """
        limits = self.backpressure
        replays: dict[int, str | None] = {}
        if limits.on:  # with no limit on, the submit script alone recognises a replay
            keyed = [(i, u.idempotency_key) for i, u in enumerate(uploads) if u.idempotency_key]
            replays = dict(zip((i for i, _ in keyed),
                               self.queue.find_replays(owner, [key for _, key in keyed]),
                               strict=True))  # fmt: skip
        fresh = [i for i in range(len(uploads)) if not replays.get(i)]
        if fresh and limits.on:
            self.queue.admit(owner, queue, max_depth=limits.max_queue_depth,
                             rate=limits.submit_rate, burst=limits.submit_burst,
                             count=len(fresh))  # fmt: skip
        news = self._store_payloads([uploads[i] for i in fresh], queue=queue, owner=owner,
                                    priority=priority, max_attempts=max_attempts, ttl=ttl)
        submitted = self._index_many(news, [uploads[i].idempotency_key for i in fresh])
        ids: list[str] = [replays.get(i) or "" for i in range(len(uploads))]
        created = [False] * len(uploads)
        known: dict[int, Task] = {}
        for i, outcome in zip(fresh, submitted, strict=True):
            ids[i], created[i] = outcome.task_id, outcome.created
            if outcome.task is not None:  # the submit script answered with the new task
                known[i] = outcome.task
        unread = [i for i in range(len(uploads)) if i not in known]  # replays
        for i, task in zip(unread, self.queue.get_many([ids[i] for i in unread]) if unread else [],
                           strict=True):  # fmt: skip
            if task is None:  # a replayed key's task, retired since (as ``submit`` raises)
                raise TaskNotFound(f"no task {ids[i]}")
            known[i] = task
        return [(known[i], created[i]) for i in range(len(uploads))]

    def _store_payloads(
        self, uploads: Sequence[PayloadUpload], *, queue: str, owner: str, priority: int,
        max_attempts: int, ttl: int,
    ) -> list[NewTask]:  # fmt: skip
        """Write every payload blob (together: ``put_many``); on any failure none is kept."""
        created_at = iso(self.queue.clock()) or ""
        task_ids = [new_task_id() for _ in uploads]
        puts = [Put(K.payload_key(task_id), upload.body, content_type=upload.content_type,
                    metadata=_payload_metadata(task_id, queue, owner, priority, max_attempts,
                                               ttl, created_at))
                for upload, task_id in zip(uploads, task_ids, strict=True)]  # fmt: skip
        with _storage_errors("store the payload"):
            infos = self.store.put_many(puts, map=self._each)
        return [NewTask(queue=queue, owner=owner, content_type=upload.content_type, size=info.size,
                        priority=priority, max_attempts=max_attempts, ttl=ttl, task_id=task_id)
                for upload, task_id, info in zip(uploads, task_ids, infos, strict=True)]

    def _each(
        self, call: Callable[[_Item], _Out], items: Iterable[_Item], *,
        undo: Callable[[_Item, _Out], None] | None = None,
    ) -> list[_Out]:  # fmt: skip
        """``call`` of every item, in order, in up to ``STORAGE_CONCURRENCY`` threads at once
        (each runs a share of the items in turn: a thread hand-off per share, not per item).

        Every call ends before this returns. If any raised, ``undo`` is called for each that
        did not, and the first error (in item order) is raised.
        """
        items = list(items)
        if not items:
            return []
        outcomes: list[tuple[_Out | None, BaseException | None]] = [(None, None)] * len(items)

        def run_share(share: range) -> None:
            for index in share:
                try:
                    outcomes[index] = (call(items[index]), None)
                except BaseException as exc:  # noqa: BLE001 - raised below, after the others end
                    outcomes[index] = (None, exc)

        shares = min(STORAGE_CONCURRENCY, len(items))
        spread = [self._storage_pool.submit(run_share, range(first, len(items), shares))
                  for first in range(1, shares)]  # fmt: skip
        run_share(range(0, len(items), shares))  # this thread's own share
        for share in spread:
            share.result()
        failure = next((exc for _, exc in outcomes if exc is not None), None)
        if failure is None:
            return [out for out, _ in outcomes]  # type: ignore[misc]
        if undo is not None:
            for item, (out, exc) in zip(items, outcomes, strict=True):
                if exc is None:
                    undo(item, out)  # type: ignore[arg-type]
        raise failure

    def _index_many(self, news: Sequence[NewTask], keys: Sequence[str | None]) -> list[Submitted]:
        """Index the stored payloads; blobs no task ends up naming are deleted."""
        if not news:
            return []
        try:
            submitted = self.queue.submit_many(list(zip(news, keys, strict=True)))
        except Unavailable:
            for new in news:
                self._discard_unless_indexed(new.task_id)
            raise
        except BaseException:  # the process is being stopped
            for new in news:
                self._discard(K.payload_key(new.task_id))
            raise
        for new, outcome in zip(news, submitted, strict=True):
            if outcome.task_id != new.task_id:  # its key named an earlier task
                self._discard(K.payload_key(new.task_id))
        return submitted

    def task(self, task_id: str, owner: str | None) -> Task:
        """The task if ``owner`` may see it (None: any owner). Others' tasks look unknown."""
        task = self.queue.get(task_id)
        if owner is not None and task.owner != owner:
            raise TaskNotFound(f"no task {task_id}")
        return task

    def wait(self, task_id: str, owner: str | None, seconds: float) -> Task:
        """The task once final, or as it stands after ``seconds``. Woken by the task's done
        notice, it answers with the final task the notice carries, without reading it again."""
        with self.notifier.listen([f"done:{task_id}"]) as woken:
            return self._await_end(woken, task_id, owner, seconds)

    def predict(
        self, payload: Callable[[], AbstractContextManager[tuple[IO[bytes], str]]],
        seconds: float, *, reader: str | None, **options: Any,
    ) -> tuple[Task, bool]:  # fmt: skip
        """``submit`` the payload that ``payload()`` opens (body, content type), then ``wait`` up
        to ``seconds`` for the task's end as ``reader``: the synchronous submit. It listens for
        the new task's end before the task exists, so the submit's own answer is its first
        look (a ``submit`` then a ``wait`` reads the task once more); the payload is closed
        before the wait. ``options`` are ``submit``'s."""
        task_id = new_task_id()
        with self.notifier.listen([f"done:{task_id}"]) as woken:
            with payload() as (body, content_type):
                task, created = self.submit(body, content_type=content_type, task_id=task_id,
                                            **options)  # fmt: skip
            if created:
                return self._await_end(woken, task_id, reader, seconds, seen=task), True
        return self.wait(task.id, reader, seconds), False  # a replay names an earlier task

    def _await_end(self, woken: Wake, task_id: str, owner: str | None, seconds: float,
                   seen: Task | None = None) -> Task:  # fmt: skip
        """``_poll`` for the end of one task, its done notice standing in for a look."""

        def heard(notice: bytes) -> Task | None:
            task = notified_task(notice)
            if task is not None and owner is not None and task.owner != owner:
                raise TaskNotFound(f"no task {task_id}")
            return task

        return self._poll(woken, seconds, look=lambda: self.task(task_id, owner),
                          ready=lambda task: task.is_final, heard=heard, seen=seen)  # fmt: skip

    def wait_any(self, task_ids: Sequence[str], owner: str | None, seconds: float
                 ) -> list[Task | None]:  # fmt: skip
        """The tasks (None for unknown ids and others' tasks), in order, as soon as one of them
        is final or unknown, or as they stand after ``seconds``. One listener for all of them
        on the process's notifier, and one Redis round trip per look."""

        def look() -> list[Task | None]:
            return [task if task is not None and owner in (None, task.owner) else None
                    for task in self.queue.get_many(task_ids)]  # fmt: skip

        return self._long_poll([f"done:{task_id}" for task_id in task_ids], seconds, look=look,
                               ready=lambda tasks: any(task is None or task.is_final
                                                       for task in tasks))  # fmt: skip

    def _long_poll(self, channels: Sequence[str], seconds: float, *, look: Callable[[], _Seen],
                   ready: Callable[[_Seen], bool], taker: bool = False) -> _Seen:  # fmt: skip
        """``_poll`` while listening on ``channels`` (as a ``taker`` or a watcher)."""
        with self.notifier.listen(channels, taker=taker) as woken:
            return self._poll(woken, seconds, look=look, ready=ready, taker=taker)

    def _poll(self, woken: Wake, seconds: float, *, look: Callable[[], _Seen],
              ready: Callable[[_Seen], bool], taker: bool = False,
              heard: Callable[[bytes], _Seen | None] | None = None,
              seen: _Seen | None = None) -> _Seen:  # fmt: skip
        """``look()`` until ``ready`` accepts what it saw, ``seconds`` pass or the process starts
        closing; returns the last look. It looks again whenever ``woken`` is set (a message on
        a channel it listens to), and after each ``notifier.watch_pause()`` in case a notice
        was lost; a ``taker`` looks when the notifier picks it, for a message or a recheck
        (see ``broker.notify``). When a message came with a notice, ``heard(notice)`` stands
        in for the look, unless it returns None; ``seen`` stands in for the first look (what
        the caller saw after it began listening)."""
        deadline = time.monotonic() + seconds
        while True:
            if seen is None:
                notice = woken.take_notice()
                if heard is not None and notice is not None:
                    seen = heard(notice)
                if seen is None:
                    seen = look()
            remaining = deadline - time.monotonic()
            if ready(seen) or remaining <= 0 or self.closing.is_set():
                return seen
            woken.wait(remaining if taker else min(self.notifier.watch_pause(), remaining))
            seen = None

    def open_result(self, task: Task) -> Blob:
        with _storage_errors("read the result"):
            try:
                return self.store.get(task.result_key)
            except BlobNotFound as exc:
                raise Unavailable(f"the result of task {task.id} is missing from storage") from exc

    def open_results(self, tasks: Sequence[Task]) -> list[Blob]:
        """``open_result`` of each task, several at a time; all closed again if one fails."""
        return self._each(self.open_result, tasks, undo=lambda _, blob: blob.close())

    def cancel(self, task_id: str, owner: str | None) -> Task:
        self.task(task_id, owner)
        task = self.queue.cancel(task_id)
        self._record_now(task)
        return task

    # -- workers --------------------------------------------------------------------------------

    def take(
        self, queues: Sequence[str], *, max_tasks: int, lease_seconds: int, worker_id: str,
        wait: float,
    ) -> list[tuple[Lease, Blob]]:  # fmt: skip
        """Lease up to ``max_tasks`` tasks, waiting up to ``wait`` seconds for the first one."""

        def look() -> list[tuple[Lease, Blob]]:
            return self._open_payloads(self.queue.take(
                queues, max_tasks=max_tasks, lease_seconds=lease_seconds, worker_id=worker_id))

        return self._long_poll([f"queued:{name}" for name in queues], wait, look=look,
                               ready=bool, taker=True)  # fmt: skip

    def _open_payloads(self, leases: list[Lease]) -> list[tuple[Lease, Blob]]:
        def open_payload(lease: Lease) -> Blob | None:
            try:
                with _storage_errors("read a payload"):
                    return self.store.get(K.payload_key(lease.task_id))
            except BlobNotFound:
                log.error("task %s has no payload blob; failing it", lease.task_id)
                self.queue.fail(lease.task_id, lease.lease_id,
                                "payload missing from storage", retryable=False)  # fmt: skip
                return None

        # on a storage failure the blobs opened are closed; the leases lapse and the tasks
        # come back
        blobs = self._each(open_payload, leases,
                           undo=lambda _, blob: blob.close() if blob is not None else None)
        return [(lease, blob) for lease, blob in zip(leases, blobs, strict=True)
                if blob is not None]

    def heartbeat(
        self, task_id: str, lease_id: str, progress: tuple[float, str] | None
    ) -> tuple[float, bool]:
        return self.queue.heartbeat(task_id, lease_id, progress)

    def complete(
        self, task_id: str, lease_id: str, body: IO[bytes], *, content_type: str,
        model_version: str = "",
    ) -> Task:  # fmt: skip
        """Store the attempt's result and finish the task. Posting twice is harmless."""
        task = self.queue.get(task_id)
        refusal = self._refusal(task_id, lease_id, task)
        if refusal is not None:
            raise refusal
        if task.status == K.SUCCEEDED:
            return task
        completion = self._store_result(task, lease_id, body, content_type, model_version)
        try:
            done = self.queue.complete(task_id, lease_id, result_key=completion.result_key,
                                       content_type=content_type, size=completion.size,
                                       model_version=model_version)  # fmt: skip
        except (LeaseLost, TaskFinished):
            self._discard(completion.result_key)  # ours: the live result is another attempt's
            raise
        return done or self.queue.get(task_id)

    def complete_many(self, uploads: Sequence[ResultUpload]) -> list[Task | BrokerError]:
        """``complete`` for a batch, in two Redis round trips instead of two per result.

        Same rules and the same blob ordering as ``complete``; one outcome per upload, in
        order: the task, or the error that refused this one (the others still count).
        """
        current = self.queue.get_many([upload.task_id for upload in uploads])
        outcomes: list[Task | BrokerError | None] = []
        storing: list[int] = []
        puts: list[Put] = []
        for upload, task in zip(uploads, current, strict=True):
            refusal = self._refusal(upload.task_id, upload.lease_id, task)
            if refusal is None and task is not None and task.status == K.RUNNING:
                storing.append(len(outcomes))
                puts.append(self._result_put(task, upload.lease_id, upload.body,
                                             upload.content_type, upload.model_version))
            outcomes.append(refusal if refusal is not None else task)
        with _storage_errors("store the result"):
            infos = self.store.put_many(puts, map=self._each)
        completions = [Completion(uploads[i].task_id, uploads[i].lease_id, put.key,
                                  put.content_type, info.size, uploads[i].model_version)
                       for i, put, info in zip(storing, puts, infos, strict=True)]  # fmt: skip
        answers = self.queue.complete_many(completions)
        for index, completion, answer in zip(storing, completions, answers, strict=True):
            if isinstance(answer, BrokerError):
                self._discard(completion.result_key)  # our own attempt's blob
            outcomes[index] = answer  # None (a duplicate) is read back below
        unread = [i for i, outcome in enumerate(outcomes) if outcome is None]
        for index, task in zip(unread, self.queue.get_many([uploads[i].task_id for i in unread]),
                               strict=True):  # fmt: skip
            outcomes[index] = task or TaskNotFound(f"no task {uploads[index].task_id}")
        return [outcome for outcome in outcomes if outcome is not None]

    @staticmethod
    def _refusal(task_id: str, lease_id: str, task: Task | None) -> BrokerError | None:
        """Why a result for this lease cannot be recorded, or None (the task is running or
        already succeeded under it)."""
        if task is None:
            return TaskNotFound(f"no task {task_id}")
        if task.lease_id != lease_id:
            return LeaseLost(f"task {task.id} is not held by this lease (it is {task.status})")
        if task.status not in (K.RUNNING, K.SUCCEEDED):
            return TaskFinished(f"task {task.id} is already {task.status}", status=task.status)
        return None

    def _store_result(self, task: Task, lease_id: str, body: IO[bytes], content_type: str,
                      model_version: str) -> Completion:  # fmt: skip
        """Write one attempt's result blob."""
        put = self._result_put(task, lease_id, body, content_type, model_version)
        with _storage_errors("store the result"):
            info = self.store.put(put.key, put.data, content_type=put.content_type,
                                  metadata=put.metadata)
        return Completion(task.id, lease_id, put.key, put.content_type, info.size, model_version)

    def _result_put(self, task: Task, lease_id: str, body: bytes | IO[bytes], content_type: str,
                    model_version: str) -> Put:  # fmt: skip
        """An attempt's result blob, with what the index would need to be rebuilt."""
        metadata = {
            "task_id": task.id, "queue": task.queue, "owner": task.owner, "lease_id": lease_id,
            "attempt": str(task.attempts), "worker_id": task.worker_id[:200],
            "model_version": model_version, "finished_at": iso(self.queue.clock()) or "",
        }  # fmt: skip
        return Put(K.result_key(task.id, lease_id), body, content_type=content_type,
                   metadata=metadata)

    def fail(self, task_id: str, lease_id: str, error: str, *, retryable: bool) -> Task:
        self.queue.fail(task_id, lease_id, error[:MAX_ERROR_CHARS], retryable=retryable)
        task = self.queue.get(task_id)
        self._record_now(task)
        return task

    # -- the janitor ----------------------------------------------------------------------------

    def record(self, task_ids: Iterable[str]) -> int:
        """Write the state records of these failed or canceled tasks; returns how many.

        Ids whose task is gone or not failed/canceled are dropped from the to-do set too.
        """
        done: list[str] = []
        try:
            for task_id in task_ids:
                self._write_record(task_id)
                done.append(task_id)
        finally:
            self.queue.mark_recorded(done)
        return len(done)

    def _write_record(self, task_id: str) -> None:
        try:
            task = self.queue.get(task_id)
        except TaskNotFound:
            return
        if task.status in RECORDED:
            with _storage_errors("store a state record"):
                self.store.put(K.state_key(task.id), state_record(task),
                               content_type="application/json",
                               metadata={"task_id": task.id, "status": task.status})  # fmt: skip

    def purge(self, task_ids: Iterable[str]) -> int:
        """Delete every blob of these retired tasks; returns how many tasks."""
        done: list[str] = []
        try:
            with _storage_errors("delete retired blobs"):
                for task_id in task_ids:
                    for key in [*self.store.list(f"{K.OUTBOX}/{task_id}/"),
                                K.payload_key(task_id), K.state_key(task_id)]:  # fmt: skip
                        self.store.delete(key)
                    done.append(task_id)
        finally:
            self.queue.mark_purged(done)
        return len(done)

    def _record_now(self, task: Task) -> None:
        """Record a task this request ended; on failure the janitor retries it."""
        if task.status not in RECORDED:
            return
        try:
            self.record([task.id])
        except (Unavailable, StorageError) as exc:
            log.warning("state record of task %s left to the janitor: %s", task.id, exc)

    def release(self, task_id: str, lease_id: str) -> Task:
        """Back to the queue without counting the attempt (the worker is stopping)."""
        self.queue.release(task_id, lease_id)
        return self.queue.get(task_id)

    # -- operators ------------------------------------------------------------------------------

    def health(self) -> dict[str, str]:
        """{"redis": "ok" | error, "storage": "ok" | error}."""
        report = {}
        for name, check in (("redis", self.queue.ping), ("storage", self.store.ping)):
            try:
                check()
                report[name] = "ok"
            except (Unavailable, StorageError) as exc:
                report[name] = str(exc)
        return report

    def _discard_unless_indexed(self, task_id: str) -> None:
        try:
            indexed = not self.queue.missing([task_id])
        except Unavailable:
            log.warning("task %s: Redis failed mid-submit; its payload stays for the janitor",
                        task_id)  # fmt: skip
            return
        if not indexed:
            self._discard(K.payload_key(task_id))

    def _discard(self, key: str) -> None:
        try:
            self.store.delete(key)
        except StorageError as exc:
            log.warning("could not delete orphan blob %s: %s", key, exc)
