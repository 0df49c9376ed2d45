"""The task state machine: submit, take, heartbeat, complete, fail, release, cancel, settle, reap.

This module is the only place task state changes. It speaks to Redis and to nothing else: no HTTP,
no blob storage. Every transition is one Lua script (``broker/scripts/``), so it is atomic: two
brokers or two workers racing can never lease one task twice, lose a task or bring a final task
back. Time comes from the ``clock`` the queue is built with, so tests can move it.

A lease is the right to finish one attempt of one task. Only the holder of the current lease id
can complete or fail the attempt, and only while the task is running; an expired lease is reaped
by the next take (or status read), which sends the task back to its queue or, once
``max_attempts`` are spent, ends it ``failed``.
"""

from __future__ import annotations

import json
import math
import secrets
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import redis

from . import keys as K
from .errors import (
    BrokerError,
    LeaseLost,
    QueueFull,
    RateLimited,
    TaskFinished,
    TaskNotFound,
    Unavailable,
)
from .task import Lease, QueueStats, Task, new_task_id


@dataclass(frozen=True)
class NewTask:
    """What a submit asks for; validated by the caller (see ``broker.options``)."""

    queue: str
    owner: str
    content_type: str
    size: int
    priority: int = K.DEFAULT_PRIORITY
    max_attempts: int = K.DEFAULT_MAX_ATTEMPTS
    ttl: int = K.DEFAULT_TTL
    task_id: str = field(default_factory=new_task_id)
    webhook_url: str = ""
    webhook_events: tuple[str, ...] = ()


@dataclass(frozen=True)
class Completion:
    """One attempt's result, for ``complete_many``."""

    task_id: str
    lease_id: str
    result_key: str
    content_type: str
    size: int
    model_version: str = ""


@dataclass(frozen=True)
class Submitted:
    task_id: str
    created: bool  # False: an idempotency key named an existing task
    task: Task | None = None  # the new task as indexed (None for a replay)

    @classmethod
    def from_reply(cls, reply: list[Any]) -> Submitted:
        outcome, value, *rest = reply
        created = outcome == b"created"
        fields = rest[0] if created and rest else None
        return cls(value.decode(), created=created, task=_task(fields) if fields else None)


def _task(fields: list[bytes]) -> Task:
    """A task from a script's ``HGETALL`` answer (a flat field, value list)."""
    return Task.from_redis(dict(zip(fields[::2], fields[1::2], strict=True)))


def notified_task(notice: bytes) -> Task | None:
    """The final task a ``done:<task_id>`` notice carries (``finish`` in ``common.lua``
    publishes its hash as a JSON list of fields and values); None for anything else."""
    try:
        fields = json.loads(notice)
        return Task.from_fields(dict(zip(fields[::2], fields[1::2], strict=True)))
    except (ValueError, TypeError, KeyError, IndexError):
        return None


def _task_fields(new: NewTask, now: float) -> list[str]:
    """The field/value pairs of a new task's hash, flat, as the submit script takes them."""
    fields = {
        "id": new.task_id, "queue": new.queue, "owner": new.owner,
        "priority": new.priority, "max_attempts": new.max_attempts, "ttl": new.ttl,
        "expires_at": f"{now + new.ttl:.3f}", "content_type": new.content_type,
        "size": new.size, "payload_key": K.payload_key(new.task_id),
    }  # fmt: skip
    if new.webhook_url:
        fields |= {"webhook_url": new.webhook_url, "webhook_events": ",".join(new.webhook_events)}
    return [str(part) for pair in fields.items() for part in pair]


class _Scripts:
    """The Lua scripts, each prefixed with ``common.lua`` and registered once (called by SHA)."""

    NAMES = (
        "submit", "take", "heartbeat", "complete", "fail", "release", "cancel", "settle", "reap",
        "stats", "webhook_claim", "admit", "restore", "retire",
    )

    def __init__(self, client: redis.Redis) -> None:
        folder = resources.files("broker") / "scripts"
        common = K.lua_constants() + (folder / "common.lua").read_text()
        for name in self.NAMES:
            source = common + "\n" + (folder / f"{name}.lua").read_text()
            setattr(self, name, client.register_script(source))


class TaskQueue:
    """Task state in Redis. Thread-safe; one per process is enough."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str = K.DEFAULT_PREFIX,
        clock: Callable[[], float] = time.time,
        idempotency_ttl: int = K.IDEMPOTENCY_TTL,
    ) -> None:
        self.redis = client
        self.keys = K.Keys(prefix)
        self.clock = clock
        self.idempotency_ttl = idempotency_ttl
        self._scripts = _Scripts(client)

    def _run(self, name: str, *args: Any, now: float | None = None) -> Any:
        """Run a script with the key prefix and ``now`` (the clock's, unless given) first."""
        script = getattr(self._scripts, name)
        at = f"{self.clock() if now is None else now:.3f}"
        try:
            return script(args=[self.keys.prefix, at, *args])
        except redis.RedisError as exc:
            raise Unavailable(f"Redis failed during {name}: {exc}") from exc

    # -- clients --------------------------------------------------------------------------------

    def admit(
        self, owner: str, queue: str, *, max_depth: int = 0, rate: float = 0.0, burst: int = 0,
        count: int = 1, idempotency_key: str | None = None,
    ) -> str | None:  # fmt: skip
        """Check backpressure before a submit stores anything; spend ``owner``'s tokens.

        With an ``idempotency_key`` that already names a task, returns that task's id at once,
        checking and spending nothing (the submit is a replay); otherwise returns None. Without
        a key or a limit there is nothing to check and Redis is not asked.

        Raises QueueFull when ``queue`` has no room for ``count`` more tasks under ``max_depth``,
        RateLimited when ``owner`` submits faster than ``rate`` per second (bursts of ``burst``).
        Zero disables a check. A batch (``count`` > 1) spends one token per task; it needs
        ``min(count, burst)`` on hand and may leave the bucket in debt, which later submits wait
        out, so the long-run rate holds whatever the batch size.
        """
        if not (max_depth or rate or idempotency_key):
            return None
        idem = self.keys.idempotency(owner, idempotency_key) if idempotency_key else ""
        burst = burst or max(1, math.ceil(rate))
        outcome, *rest = self._run("admit", owner, queue, max_depth, f"{rate:.6f}", burst, count,
                                   idem)  # fmt: skip
        if outcome == b"replayed":
            return str(rest[0].decode())
        if outcome == b"full":
            raise QueueFull(
                f"queue {queue} is full ({int(rest[0])} tasks queued): try again later",
                retry_after=K.QUEUE_FULL_RETRY_AFTER,
            )
        if outcome == b"rate_limited":
            wait = max(1, math.ceil(float(rest[0])))
            raise RateLimited(
                f"too many submits from this token (at most {rate:g} per second)",
                retry_after=wait,
            )
        return None

    def submit(
        self, new: NewTask, idempotency_key: str | None = None, *, max_depth: int = 0
    ) -> Submitted:
        """Queue a task, or return the one ``idempotency_key`` (scoped to the owner) names.

        Raises QueueFull when ``max_depth`` (> 0) tasks are queued in ``new.queue`` already.
        """
        (reply,) = self._submit([(new, idempotency_key)], max_depth)
        if reply[0] == b"full":
            raise QueueFull(f"queue {new.queue} is full ({int(reply[1])} tasks queued): try again "
                            "later", retry_after=K.QUEUE_FULL_RETRY_AFTER)  # fmt: skip
        return Submitted.from_reply(reply)

    def submit_many(
        self, batch: Sequence[tuple[NewTask, str | None]]
    ) -> list[Submitted]:
        """``submit`` for several (task, idempotency key) pairs in one script, in order (a key
        used twice in the batch names the first task); their ``queued`` events go out as one
        message.

        The depth is not checked here: ``admit`` with ``count`` checks it for the whole batch
        first. Raises Unavailable when Redis fails (the batch may then be partly indexed).
        """
        return [Submitted.from_reply(reply) for reply in self._submit(batch, max_depth=0)]

    def _submit(self, batch: Sequence[tuple[NewTask, str | None]], max_depth: int) -> list[Any]:
        if not batch:
            return []
        now = self.clock()
        args: list[Any] = []
        for new, key in batch:
            fields = _task_fields(new, now)
            idem = self.keys.idempotency(new.owner, key) if key else ""
            args += [len(fields), new.task_id, new.queue, new.priority, idem, *fields]
        return list(self._run("submit", self.idempotency_ttl, max_depth, *args, now=now))

    def find_replays(self, owner: str, idempotency_keys: Sequence[str]) -> list[str | None]:
        """The task ids the idempotency keys already name (None for a free key), in one round
        trip: a read-only pre-check."""
        if not idempotency_keys:
            return []
        try:
            found = self.redis.mget([self.keys.idempotency(owner, key) for key in idempotency_keys])
        except redis.RedisError as exc:
            raise Unavailable(f"Redis failed: {exc}") from exc
        return [value.decode() if isinstance(value, bytes) else None for value in found]

    def get(self, task_id: str) -> Task:
        """The task, with any lapsed lease or ttl settled first. Raises TaskNotFound."""
        task = self._read(task_id)
        if task.is_overdue(self.clock()):
            self._run("settle", task_id)
            task = self._read(task_id)
        return task

    def _read(self, task_id: str) -> Task:
        try:
            raw = self.redis.hgetall(self.keys.task(task_id))
        except redis.RedisError as exc:
            raise Unavailable(f"Redis failed: {exc}") from exc
        if not raw:
            raise TaskNotFound(f"no task {task_id}")
        return Task.from_redis(raw)  # type: ignore[arg-type]  # bytes: no decode_responses

    def cancel(self, task_id: str) -> Task:
        """Cancel a queued or running task. Raises TaskFinished if it already ended otherwise."""
        outcome, *rest = self._run("cancel", task_id)
        self._check(outcome, rest, task_id)
        return self._read(task_id)

    # -- workers --------------------------------------------------------------------------------

    def take(
        self, queues: Sequence[str], *, max_tasks: int, lease_seconds: int, worker_id: str
    ) -> list[Lease]:
        """Lease up to ``max_tasks`` queued tasks, trying ``queues`` in order."""
        lease_ids = [secrets.token_urlsafe(12) for _ in range(max_tasks)]
        rows = self._run(
            "take", lease_seconds, max_tasks, worker_id, K.REAP_BATCH, len(queues), *queues,
            *lease_ids,
        )
        return [Lease.from_row(row) for row in rows]

    def heartbeat(
        self, task_id: str, lease_id: str, progress: tuple[float, str] | None = None
    ) -> tuple[float, bool]:
        """Extend the lease by its length; returns (new deadline, canceled)."""
        fraction, message = (f"{progress[0]:.4f}", progress[1]) if progress else ("", "")
        outcome, *rest = self._run("heartbeat", task_id, lease_id, fraction, message)
        if outcome == b"canceled":
            return 0.0, True
        self._check(outcome, rest, task_id)
        return float(rest[0]), False

    def complete(
        self, task_id: str, lease_id: str, *, result_key: str, content_type: str, size: int,
        model_version: str = "",
    ) -> Task | None:
        """Record the attempt's result; returns the succeeded task, or None when this lease
        already recorded one."""
        (outcome,) = self.complete_many([Completion(task_id, lease_id, result_key, content_type,
                                                    size, model_version)])  # fmt: skip
        if isinstance(outcome, BrokerError):
            raise outcome
        return outcome

    def get_many(self, task_ids: Sequence[str]) -> list[Task | None]:
        """Several tasks read in one round trip (None for an unknown id), settled like ``get``."""
        try:
            pipe = self.redis.pipeline(transaction=False)
            for task_id in task_ids:
                pipe.hgetall(self.keys.task(task_id))
            raws = pipe.execute()
        except redis.RedisError as exc:
            raise Unavailable(f"Redis failed: {exc}") from exc
        tasks = [Task.from_redis(raw) if raw else None for raw in raws]
        now = self.clock()
        return [self.get(task.id) if task is not None and task.is_overdue(now) else task
                for task in tasks]  # fmt: skip

    def complete_many(self, results: Sequence[Completion]) -> list[Task | None | BrokerError]:
        """``complete`` for several attempts in one script; their ``done`` events go out as
        one message. Per result: the succeeded task, None (this lease already recorded one) or
        the error."""
        if not results:
            return []
        replies = self._run("complete", *(part for r in results for part in (
            r.task_id, r.lease_id, r.result_key, r.content_type, r.size, r.model_version)))
        outcomes: list[Task | None | BrokerError] = []
        for r, (outcome, *rest) in zip(results, replies, strict=True):
            try:
                self._check(outcome, rest, r.task_id)
            except BrokerError as exc:
                outcomes.append(exc)
                continue
            fields = rest[1] if outcome == b"ok" else None
            outcomes.append(_task(fields) if fields else None)
        return outcomes

    def fail(self, task_id: str, lease_id: str, error: str, *, retryable: bool = True) -> str:
        """Fail the attempt; returns the task's new status (``queued`` or ``failed``)."""
        outcome, *rest = self._run("fail", task_id, lease_id, error, "1" if retryable else "0")
        if outcome == b"duplicate":
            return K.FAILED
        self._check(outcome, rest, task_id)
        return rest[0].decode()

    def release(self, task_id: str, lease_id: str) -> str:
        """Give the leased task back to its queue, at its old place, without counting the attempt.

        For a worker that stops before it can start or finish the task. Returns ``queued``;
        raises LeaseLost for a stale lease and TaskFinished when the task already ended.
        """
        outcome, *rest = self._run("release", task_id, lease_id)
        self._check(outcome, rest, task_id)
        return rest[0].decode()

    def reap(self, limit: int = K.REAP_BATCH) -> int:
        """Settle up to ``limit`` expired leases now (takes do this by themselves)."""
        return int(self._run("reap", limit))

    def claim_webhook_events(
        self, limit: int = K.WEBHOOK_RELAY_BATCH, reclaim_after: int = K.WEBHOOK_RECLAIM
    ) -> list[bytes]:
        """Claim queued webhook events (JSON) for relaying; ``ack_webhook_event`` each one after.

        An event claimed but never acknowledged is claimed again after ``reclaim_after`` seconds,
        so a relay that dies loses nothing (and a slow one may cause a duplicate).
        """
        return list(self._run("webhook_claim", limit, reclaim_after))

    def ack_webhook_event(self, event: bytes) -> None:
        try:
            self.redis.zrem(self.keys.webhook_relaying, event)
        except redis.RedisError as exc:
            raise Unavailable(f"Redis failed: {exc}") from exc

    # -- operators ------------------------------------------------------------------------------

    def stats(self) -> list[QueueStats]:
        now = self.clock()
        rows = self._run("stats")
        return sorted((QueueStats.from_row(row, now) for row in rows), key=lambda s: s.name)

    # -- the janitor and the index rebuild ------------------------------------------------------

    def retire(self, retention: float, tombstone: float, limit: int = K.JANITOR_BATCH) -> tuple[
        int, int
    ]:
        """Expire queued tasks past their ttl, and retire final tasks older than ``retention``.

        Retired tasks answer ``expired`` for ``tombstone`` more seconds, then are unknown; their
        ids wait in :meth:`purge_due` until their blobs are deleted. Returns (expired, retired).
        """
        expired, retired = self._run("retire", f"{retention:.3f}", math.ceil(tombstone), limit)
        return int(expired), int(retired)

    def unrecorded(self, limit: int = K.JANITOR_BATCH) -> list[str]:
        """Failed or canceled tasks whose state record is not yet in storage."""
        return self._members(self.keys.unrecorded, limit)

    def mark_recorded(self, task_ids: Iterable[str]) -> None:
        self._remove(self.keys.unrecorded, task_ids)

    def purge_due(self, limit: int = K.JANITOR_BATCH) -> list[str]:
        """Retired tasks whose blobs are still to be deleted."""
        return self._members(self.keys.purge, limit)

    def mark_purged(self, task_ids: Iterable[str]) -> None:
        self._remove(self.keys.purge, task_ids)

    def restore(
        self, task_id: str, *, queue: str, priority: int, status: str, fields: Mapping[str, str]
    ) -> str:
        """Index a task rebuilt from storage unless the index has it: 'restored', 'exists' or
        'purging' (retired, blobs being deleted). A queued task needs ``expires_at`` in
        ``fields``, a final one ``finished_at``."""
        flat = [str(part) for pair in fields.items() for part in pair]
        return str(self._run("restore", task_id, queue, priority, status, *flat).decode())

    def missing(self, task_ids: Sequence[str]) -> list[str]:
        """The ids among ``task_ids`` that the index has no task for."""
        try:
            with self.redis.pipeline(transaction=False) as pipe:
                for task_id in task_ids:
                    pipe.exists(self.keys.task(task_id))
                found = pipe.execute()
        except redis.RedisError as exc:
            raise Unavailable(f"Redis failed: {exc}") from exc
        return [task_id for task_id, exists in zip(task_ids, found, strict=True) if not exists]

    def is_empty(self) -> bool:
        """True when no task was ever indexed here (or the index was lost)."""
        try:
            return not self.redis.exists(self.keys.seq)
        except redis.RedisError as exc:
            raise Unavailable(f"Redis failed: {exc}") from exc

    @contextmanager
    def lock(self, name: str, *, seconds: int = K.LOCK_SECONDS, wait: float = 0) -> Iterator[bool]:
        """Hold the lock ``name`` (shared by every broker on this Redis) for the block.

        Yields False, and runs the block without it, when another holder keeps it longer than
        ``wait`` seconds. A holder that dies frees it after ``seconds``.
        """
        lock = self.redis.lock(self.keys.lock(name), timeout=seconds,
                               blocking=wait > 0, blocking_timeout=wait or None)  # fmt: skip
        try:
            acquired = bool(lock.acquire())
        except redis.RedisError as exc:
            raise Unavailable(f"Redis failed: {exc}") from exc
        try:
            yield acquired
        finally:
            if acquired:  # if it expired or Redis is gone, it frees itself after `seconds`
                with suppress(redis.RedisError):
                    lock.release()

    def _members(self, key: str, limit: int) -> list[str]:
        try:
            members = self.redis.srandmember(key, limit)
        except redis.RedisError as exc:
            raise Unavailable(f"Redis failed: {exc}") from exc
        return sorted(m.decode() for m in members or [])  # type: ignore[union-attr]

    def _remove(self, key: str, members: Iterable[str]) -> None:
        members = list(members)
        if not members:
            return
        try:
            self.redis.srem(key, *members)
        except redis.RedisError as exc:
            raise Unavailable(f"Redis failed: {exc}") from exc

    def ping(self) -> None:
        try:
            self.redis.ping()
        except redis.RedisError as exc:
            raise Unavailable(f"Redis does not answer: {exc}") from exc

    @staticmethod
    def _check(outcome: bytes, rest: Iterable[bytes], task_id: str) -> None:
        status = next(iter(rest), b"").decode()
        if outcome == b"not_found":
            raise TaskNotFound(f"no task {task_id}")
        if outcome == b"lease_lost":
            raise LeaseLost(
                f"task {task_id} is not held by this lease (it is {status}): the lease expired "
                "or belongs to another attempt", status=status,
            )
        if outcome == b"finished":
            raise TaskFinished(f"task {task_id} is already {status}", status=status)
