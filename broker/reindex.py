"""Rebuilding the Redis index from blob storage.

Storage holds enough to rebuild every task the index can lose:

=====================================  ======================================================
blob                                   what the rebuild reads from it
=====================================  ======================================================
``inbox/<task_id>`` (the payload)      its metadata: queue, owner, priority, max_attempts,
                                       ttl, created_at; its content type and size
``outbox/<task_id>/<lease_id>``        a result: its metadata (attempt, worker_id,
                                       model_version, finished_at), content type and size
``state/<task_id>`` (a state record)   a failed or canceled task: one small JSON object
                                       (:func:`state_record`), written after the state machine
                                       ends the task so
=====================================  ======================================================

A task comes back ``failed`` or ``canceled`` when it has a state record; else ``succeeded``
when it has a result (the latest one by ``finished_at``, should an attempt whose result was
refused have left its blob behind); else ``queued``, with its attempts counted from zero. A
running task therefore comes back queued and runs again: delivery is at least once. A queued
task whose ttl ran out meanwhile comes back queued and expires at its next look, as it would
have. Retired tasks have no blobs left and do not come back.

:func:`rebuild` only adds tasks the index lacks (``restore.lua`` refuses the others), so it is
safe on a live index: the broker runs it at start-up on an empty index, the janitor now and
then for tasks a Redis crash dropped, and ``inferbox-broker reindex`` on demand. A ``grace``
skips blobs younger than that many seconds: a submit between its payload write and its index
write is not an orphan.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from storage import BlobInfo, BlobNotFound, BlobStore, StorageError

from . import keys as K
from . import options
from .errors import BrokerError, Unavailable
from .queue import TaskQueue
from .task import Task

log = logging.getLogger("inferbox.broker")

BATCH = 200  # ids checked against the index per round trip
RECORDED = (K.FAILED, K.CANCELED)


def state_record(task: Task) -> bytes:
    """The JSON state record of a failed or canceled task (``state/<task_id>``)."""
    return json.dumps({
        "task_id": task.id, "status": task.status, "queue": task.queue, "owner": task.owner,
        "priority": task.priority, "attempts": task.attempts, "max_attempts": task.max_attempts,
        "created_at": task.created_at, "finished_at": task.finished_at,
        "expires_at": task.expires_at, "error": task.error, "worker_id": task.worker_id,
        "content_type": task.content_type, "size": task.size,
    }, separators=(",", ":")).encode()  # fmt: skip


@dataclass
class Report:
    """What one rebuild found and did."""

    scanned: int = 0  # task ids found in storage
    restored: Counter[str] = field(default_factory=Counter)  # by status
    young: int = 0  # skipped: younger than the grace period
    broken: int = 0  # skipped: blobs that do not describe a task

    def summary(self) -> str:
        restored = ", ".join(f"{n} {status}" for status, n in sorted(self.restored.items()))
        return (f"{self.scanned} task(s) in storage; restored {sum(self.restored.values())}"
                f"{f' ({restored})' if restored else ''}; {self.young} too recent, "
                f"{self.broken} unreadable")  # fmt: skip


@dataclass
class _Found:
    """The blobs storage holds for one task id."""

    payload: bool = False
    results: list[str] = field(default_factory=list)
    state: bool = False


class _Broken(Exception):
    """A blob that does not describe a task (foreign, truncated or hand-edited)."""


def has_tasks(store: BlobStore) -> bool:
    """Whether storage holds any task blob."""
    try:
        return any(next(store.list(f"{prefix}/"), None) for prefix in (K.INBOX, K.OUTBOX, K.STATE))
    except StorageError as exc:
        raise Unavailable(f"blob storage failed to list: {exc}") from exc


def rebuild(queue: TaskQueue, store: BlobStore, *, grace: float = 0.0) -> Report:
    """Index every task in ``store`` that ``queue``'s index lacks; see the module docstring."""
    report = Report()
    try:
        found = _scan(store)
        report.scanned = len(found)
        restorable = []
        for batch in _batches(sorted(found), BATCH):
            for task_id in queue.missing(batch):
                restorable.append(_describe(store, task_id, found[task_id], report))
    except StorageError as exc:
        raise Unavailable(f"blob storage failed during the index rebuild: {exc}") from exc
    now = queue.clock()
    for described in sorted(filter(None, restorable), key=lambda d: float(d[3]["created_at"])):
        task_id, status, queue_name, fields = described
        if grace > 0 and now - _newest(fields) < grace:
            report.young += 1
            continue
        outcome = queue.restore(task_id, queue=queue_name, priority=int(fields["priority"]),
                                status=status, fields=fields)  # fmt: skip
        if outcome == "restored":
            report.restored[status] += 1
    return report


def _scan(store: BlobStore) -> dict[str, _Found]:
    found: dict[str, _Found] = {}
    for key in store.list(f"{K.INBOX}/"):
        found.setdefault(key.split("/", 1)[1], _Found()).payload = True
    for key in store.list(f"{K.OUTBOX}/"):
        parts = key.split("/")
        if len(parts) == 3:
            found.setdefault(parts[1], _Found()).results.append(key)
    for key in store.list(f"{K.STATE}/"):
        found.setdefault(key.split("/", 1)[1], _Found()).state = True
    return {task_id: blobs for task_id, blobs in found.items()
            if options.TASK_ID.fullmatch(task_id)}  # fmt: skip


def _describe(
    store: BlobStore, task_id: str, found: _Found, report: Report
) -> tuple[str, str, str, dict[str, str]] | None:
    """(task id, status, queue, task hash fields) from the task's blobs; None if unusable."""
    try:
        fields = _from_payload(store, task_id) if found.payload else {}
        if found.state:
            status = _apply_state(store, task_id, fields)
        elif found.results:
            status = _apply_result(store, found.results, fields)
        else:
            status = K.QUEUED
        _check(task_id, fields)
    except (_Broken, BlobNotFound, BrokerError, KeyError, ValueError, TypeError) as exc:
        log.warning("index rebuild: skipping task %s: %s", task_id, exc)
        report.broken += 1
        return None
    return task_id, status, fields["queue"], fields


def _from_payload(store: BlobStore, task_id: str) -> dict[str, str]:
    info = store.head(K.payload_key(task_id))
    meta = info.metadata
    if meta.get("task_id") != task_id:
        raise _Broken(f"payload metadata names task {meta.get('task_id')!r}")
    created = _epoch(meta["created_at"])
    return {
        "id": task_id, "queue": meta["queue"], "owner": meta["owner"],
        "priority": meta["priority"], "max_attempts": meta["max_attempts"], "ttl": meta["ttl"],
        "created_at": f"{created:.3f}", "expires_at": f"{created + int(meta['ttl']):.3f}",
        "content_type": info.content_type, "size": str(info.size),
        "payload_key": K.payload_key(task_id), "attempts": "0",
    }  # fmt: skip


def _apply_state(store: BlobStore, task_id: str, fields: dict[str, str]) -> str:
    record: dict[str, Any] = json.loads(store.read_bytes(K.state_key(task_id)))
    if record.get("task_id") != task_id or record.get("status") not in RECORDED:
        raise _Broken("the state record names another task or no final status")
    if not fields:  # the payload is gone: the record describes the task itself
        created = float(record["created_at"])
        fields.update({
            "id": task_id, "queue": record["queue"], "owner": record["owner"],
            "priority": str(record["priority"]), "max_attempts": str(record["max_attempts"]),
            "created_at": f"{created:.3f}", "content_type": str(record.get("content_type", "")),
            "size": str(record.get("size", 0)), "payload_key": K.payload_key(task_id),
        })  # fmt: skip
        fields["expires_at"] = f"{float(record.get('expires_at') or created):.3f}"
    fields.update({
        "attempts": str(int(record["attempts"])), "error": str(record.get("error") or ""),
        "finished_at": f"{float(record['finished_at']):.3f}",
        "worker_id": str(record.get("worker_id") or ""),
    })  # fmt: skip
    return str(record["status"])


def _apply_result(store: BlobStore, keys: list[str], fields: dict[str, str]) -> str:
    infos = [store.head(key) for key in keys]
    latest: BlobInfo = max(infos, key=lambda info: _epoch(info.metadata["finished_at"]))
    meta = latest.metadata
    finished = _epoch(meta["finished_at"])
    if not fields:  # the payload is gone: the result's metadata names the task
        fields.update({
            "id": meta["task_id"], "queue": meta["queue"], "owner": meta["owner"],
            "priority": str(K.DEFAULT_PRIORITY), "max_attempts": meta.get("attempt", "1"),
            "created_at": f"{finished:.3f}", "expires_at": f"{finished:.3f}",
            "content_type": "", "size": "0", "payload_key": K.payload_key(meta["task_id"]),
        })  # fmt: skip
    fields.update({
        "attempts": meta.get("attempt", "1"), "worker_id": meta.get("worker_id", ""),
        "model_version": meta.get("model_version", ""), "finished_at": f"{finished:.3f}",
        "result_key": latest.key, "result_content_type": latest.content_type,
        "result_size": str(latest.size),
    })  # fmt: skip
    return K.SUCCEEDED


def _check(task_id: str, fields: dict[str, str]) -> None:
    """Refuse fields that could not have come from a submit (nothing unvalidated reaches Redis)."""
    if fields.get("id") != task_id:
        raise _Broken("the blobs name another task")
    options.queue_name(fields["queue"])
    options.text("owner", fields["owner"], max_length=64)
    options.integer("priority", fields["priority"], default=0, low=0, high=K.MAX_PRIORITY)
    options.integer("max_attempts", fields["max_attempts"], default=1, low=1,
                    high=K.MAX_ATTEMPTS_LIMIT)  # fmt: skip


def _newest(fields: dict[str, str]) -> float:
    return max(float(fields["created_at"]), float(fields.get("finished_at") or 0))


def _epoch(iso_time: str) -> float:
    """``2026-11-21T17:05:52.123Z`` (as ``broker.task.iso`` writes it) -> epoch seconds."""
    moment = datetime.strptime(iso_time, "%Y-%m-%dT%H:%M:%S.%fZ")
    return moment.replace(tzinfo=timezone.utc).timestamp()


def _batches(items: Iterable[str], size: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
