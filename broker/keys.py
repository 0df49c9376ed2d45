"""Every Redis key, channel and default the broker uses, in one place.

Redis layout (``<p>`` is the prefix, ``inferbox`` unless ``INFERBOX_REDIS_PREFIX`` says otherwise)::

    <p>:task:<task_id>       HASH    one task: status, queue, owner, times, attempts, lease, result
    <p>:queue:<queue>        ZSET    queued task ids; score = (9 - priority) * 1e12 + sequence,
                                     so ZPOPMIN yields higher priority first, then FIFO
    <p>:running:<queue>      ZSET    running task ids; score = lease deadline (epoch seconds)
    <p>:queues               SET     every queue name ever used (for stats and reaping)
    <p>:seq                  STRING  submit sequence counter (FIFO order within a priority)
    <p>:idem:<owner>:<hash>  STRING  idempotency key -> task id, expires after IDEMPOTENCY_TTL
    <p>:events               CHANNEL pub/sub: "queued:<queue>" and "done:<task_id>" wake long-polls

Payloads and results never enter Redis: they live in blob storage under ``inbox/<task_id>`` and
``outbox/<task_id>/<lease_id>``.

The Lua scripts build task and per-queue keys from the prefix themselves, so inferbox needs a
single Redis (or a primary with replicas), not Redis Cluster.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

DEFAULT_PREFIX = "inferbox"

# Defaults of the task options and of the broker's limits (all overridable, see settings.py).
DEFAULT_QUEUE = "default"
DEFAULT_PRIORITY = 0
MAX_PRIORITY = 9
DEFAULT_MAX_ATTEMPTS = 3
MAX_ATTEMPTS_LIMIT = 100
DEFAULT_TTL = 86_400  # seconds a task may wait in its queue before it expires
MAX_TTL = 30 * 86_400
DEFAULT_LEASE = 60  # seconds
MAX_LEASE = 3_600
DEFAULT_MAX_WAIT = 60  # cap of ?wait= long-polls, seconds
DEFAULT_MAX_PAYLOAD_BYTES = 100 * 1024 * 1024
MAX_TASKS_PER_TAKE = 100
IDEMPOTENCY_TTL = 86_400
COMPAT_OWNER = "compat"  # owner of the tasks that compat (v0 function) keys submit
RECHECK_INTERVAL = 1.0  # long-polls re-read state this often even without a notification
REAP_BATCH = 100  # expired leases reaped per take, at most

INBOX = "inbox"
OUTBOX = "outbox"

# Task statuses.
QUEUED = "queued"
RUNNING = "running"
SUCCEEDED = "succeeded"
FAILED = "failed"
CANCELED = "canceled"
EXPIRED = "expired"
FINAL_STATUSES = frozenset({SUCCEEDED, FAILED, CANCELED, EXPIRED})


def payload_key(task_id: str) -> str:
    return f"{INBOX}/{task_id}"


def result_key(task_id: str, lease_id: str) -> str:
    return f"{OUTBOX}/{task_id}/{lease_id}"


@dataclass(frozen=True)
class Keys:
    """Key names under one prefix."""

    prefix: str = DEFAULT_PREFIX

    def task(self, task_id: str) -> str:
        return f"{self.prefix}:task:{task_id}"

    def queue(self, name: str) -> str:
        return f"{self.prefix}:queue:{name}"

    def running(self, name: str) -> str:
        return f"{self.prefix}:running:{name}"

    @property
    def queues(self) -> str:
        return f"{self.prefix}:queues"

    @property
    def seq(self) -> str:
        return f"{self.prefix}:seq"

    @property
    def events(self) -> str:
        return f"{self.prefix}:events"

    def idempotency(self, owner: str, key: str) -> str:
        digest = hashlib.sha256(key.encode()).hexdigest()[:32]
        return f"{self.prefix}:idem:{owner}:{digest}"
