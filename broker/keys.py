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
    <p>:ttl                  ZSET    task ids by the time their queueing ttl runs out (the janitor
                                     expires queued tasks nobody takes)
    <p>:finished             ZSET    final task ids by finish time (the janitor retires them after
                                     the retention period)
    <p>:unrecorded           SET     failed or canceled task ids whose state record is not yet in
                                     storage (the mailbox and the janitor write it)
    <p>:purge                SET     retired task ids whose blobs are still to be deleted
    <p>:rate:<owner>         HASH    submit token bucket of one token: tokens, updated
    <p>:lock:<name>          STRING  a short lock (janitor pass, index rebuild), with an expiry

Payloads and results never enter Redis: they live in blob storage under ``inbox/<task_id>`` and
``outbox/<task_id>/<lease_id>``; a failed or canceled task also leaves a small JSON state record
under ``state/<task_id>``. Every blob carries metadata enough to rebuild the index from storage
(``broker.reindex``).

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
RECHECK_INTERVAL = 1.0  # long-polls re-read state this often even without a notification
REAP_BATCH = 100  # expired leases reaped per take, at most

# Backpressure: 0 means no limit.
DEFAULT_MAX_QUEUE_DEPTH = 0  # queued tasks per queue
DEFAULT_SUBMIT_RATE = 0.0  # sustained submits per second per token
DEFAULT_SUBMIT_BURST = 0  # submits a token may make at once (0: one second's worth, at least 1)
QUEUE_FULL_RETRY_AFTER = 5  # seconds a client is told to wait when a queue is full

# Retention and the janitor.
DEFAULT_RETENTION = 86_400  # seconds a final task keeps its payload and result
DEFAULT_JANITOR_INTERVAL = 10.0  # seconds between janitor passes
DEFAULT_RECONCILE_INTERVAL = 300.0  # seconds between scans of storage for unindexed tasks
DEFAULT_RECONCILE_GRACE = 60.0  # an unindexed blob younger than this may be a submit in flight
JANITOR_BATCH = 500  # tasks expired, retired, recorded or purged per step, at most
LOCK_SECONDS = 300  # a lock whose holder died frees itself after this long

INBOX = "inbox"
OUTBOX = "outbox"
STATE = "state"

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


def state_key(task_id: str) -> str:
    return f"{STATE}/{task_id}"


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

    @property
    def ttl(self) -> str:
        return f"{self.prefix}:ttl"

    @property
    def finished(self) -> str:
        return f"{self.prefix}:finished"

    @property
    def unrecorded(self) -> str:
        return f"{self.prefix}:unrecorded"

    @property
    def purge(self) -> str:
        return f"{self.prefix}:purge"

    def rate(self, owner: str) -> str:
        return f"{self.prefix}:rate:{owner}"

    def lock(self, name: str) -> str:
        return f"{self.prefix}:lock:{name}"

    def idempotency(self, owner: str, key: str) -> str:
        digest = hashlib.sha256(key.encode()).hexdigest()[:32]
        return f"{self.prefix}:idem:{owner}:{digest}"
