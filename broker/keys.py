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
                                     (a done event carries the final task hash after a newline,
                                     as a JSON list); "webhook" wakes the webhook relay; a message
                                     holds one event or up to EVENTS_PER_MESSAGE of a batch,
                                     joined by EVENT_SEPARATOR
    <p>:ttl                  ZSET    task ids by the time their queueing ttl runs out (the janitor
                                     expires queued tasks nobody takes)
    <p>:finished             ZSET    final task ids by finish time (the janitor retires them after
                                     the retention period)
    <p>:unrecorded           SET     failed or canceled task ids whose state record is not yet in
                                     storage (the mailbox and the janitor write it)
    <p>:purge                SET     retired task ids whose blobs are still to be deleted
    <p>:rate:<owner>         HASH    submit token bucket of one token: tokens, updated
    <p>:lock:<name>          STRING  a short lock (janitor pass, index rebuild), with an expiry

What operators watch, written by the same scripts as the transitions they count (all bounded):

    <p>:stats:<queue>        HASH    counters: submitted, succeeded, failed, redelivered, canceled,
                                     expired (only ever incremented)
    <p>:hist:<queue>:<name>  HASH    histogram of <name> (queue_wait, processing, end_to_end): field
                                     i = observations in bucket i of HISTOGRAM_BUCKETS (not
                                     cumulative; i = len + 1 is +Inf), "count", "sum" (seconds)
    <p>:finished:<queue>:<m> STRING  tasks that ended succeeded or failed in minute m (epoch // 60);
                                     expires after THROUGHPUT_KEEP seconds
    <p>:workers              ZSET    worker id -> alive until (epoch seconds: its lease deadline or
                                     WORKER_IDLE_GRACE after its last call); trimmed to WORKERS_MAX
                                     and to WORKER_FORGET seconds past that time
    <p>:worker:<worker_id>   HASH    queues, last_seen, tasks_done, tasks_failed, model_version;
                                     expires WORKER_FORGET seconds after the last call
    <p>:failures             LIST    newest first: failed attempts as JSON {task_id, queue,
                                     worker_id, attempt, error, final, at}; at most RECENT_FAILURES

Webhooks (the scripts write events; the relay moves them to rq; deliveries log their attempts):

    <p>:webhook:outbox       LIST    events as JSON {id, task_id, event, at[, progress]}, newest
                                     first; at most WEBHOOK_OUTBOX_MAX (the oldest drop beyond it)
    <p>:webhook:relaying     ZSET    events a relay claimed, score = claim time; claimed again by
                                     another relay after WEBHOOK_RECLAIM seconds
    <p>:webhook:seq          STRING  message id counter
    <p>:webhook:log:<task>   LIST    that task's delivery attempts as JSON, oldest first; at most
                                     WEBHOOK_LOG_MAX

Payloads and results never enter Redis: they live in blob storage under ``inbox/<task_id>`` and
``outbox/<task_id>/<lease_id>``; a failed or canceled task also leaves a small JSON state record
under ``state/<task_id>``. Every blob carries metadata enough to rebuild the index from storage
(``broker.reindex``).

The Lua scripts build task and per-queue keys from the prefix themselves, so inferbox needs a
single Redis (or a primary with replicas), not Redis Cluster.
"""

from __future__ import annotations

import hashlib
import json
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
# A script that settles a batch publishes its events together: at most this many a message,
# joined by a blank line (no topic or notice holds a newline twice in a row)
EVENTS_PER_MESSAGE = 64
EVENT_SEPARATOR = "\n\n"
IDEMPOTENCY_TTL = 86_400
COMPAT_OWNER = "compat"  # owner of the tasks that compat (v0 function) keys submit
RECHECK_INTERVAL = 1.0  # waiting takes look at their queues this often even without a notice
# A waiting client re-reads its tasks in case a done notice was lost (a listener that loses
# Redis wakes every waiter once it is back, so this is the last resort): on average this often,
# each wait drawn from 0.5-1.5x, so that a thousand waiters that came at once do not re-read at
# once
WATCH_RECHECK_INTERVAL = 5.0
DEFAULT_REDIS_CONNECTIONS = 64  # per broker process: requests beyond it wait for a free one
REDIS_POOL_TIMEOUT = 10.0  # seconds a request waits for a free Redis connection, then 503
REDIS_CLIENT_NAME = "inferbox-broker"  # CLIENT LIST shows the broker's connections by name
# Requests one keep-alive connection may carry; its last is answered with Connection: close, so
# clients reconnect now and then and spread over the server processes again.
KEEPALIVE_REQUESTS = 100
REAP_BATCH = 100  # expired leases reaped per take, at most

# Activity kept for the dashboard and /metrics (see the layout above).
HISTOGRAM_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
HISTOGRAMS = ("queue_wait", "processing", "end_to_end")
COUNTERS = ("submitted", "succeeded", "failed", "redelivered", "canceled", "expired")
THROUGHPUT_KEEP = 900  # seconds a per-minute finished count is kept
THROUGHPUT_MINUTES = 5  # the dashboard's throughput is averaged over this many minutes
WORKER_IDLE_GRACE = 30  # a worker counts as alive this long after a call that holds no lease
WORKER_FORGET = 3_600  # seconds a silent worker stays listed
WORKERS_MAX = 1_000
RECENT_FAILURES = 100
MAX_FAILURE_TEXT = 2_000  # characters of an error kept in the failures list

# Webhooks.
WEBHOOK_EVENTS = ("completed", "failed", "progress")
DEFAULT_WEBHOOK_EVENTS = ("completed", "failed")
WEBHOOK_OUTBOX_MAX = 100_000
WEBHOOK_RECLAIM = 60  # seconds before a claimed event whose relay died is relayed again
WEBHOOK_RELAY_BATCH = 100
WEBHOOK_LOG_MAX = 50
WEBHOOK_TIMEOUT = 10.0  # seconds one delivery attempt may take
WEBHOOK_RETRY_DELAYS = (5, 30, 120, 600, 1_800, 3_600)  # seconds before each retry
WEBHOOK_MAX_URL = 2_048
WEBHOOK_QUEUE = "webhooks"  # the rq queue is <prefix>-webhooks

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


def lua_constants() -> str:
    """The defaults the Lua scripts need, as Lua locals (prepended to every script)."""
    buckets = ", ".join(repr(float(bound)) for bound in HISTOGRAM_BUCKETS)
    return "\n".join([
        f"local HISTOGRAM_BUCKETS = {{{buckets}}}",
        f"local THROUGHPUT_KEEP = {THROUGHPUT_KEEP}",
        f"local WORKER_IDLE_GRACE = {WORKER_IDLE_GRACE}",
        f"local WORKER_FORGET = {WORKER_FORGET}",
        f"local WORKERS_MAX = {WORKERS_MAX}",
        f"local RECENT_FAILURES = {RECENT_FAILURES}",
        f"local MAX_FAILURE_TEXT = {MAX_FAILURE_TEXT}",
        f"local WEBHOOK_OUTBOX_MAX = {WEBHOOK_OUTBOX_MAX}",
        f"local EVENTS_PER_MESSAGE = {EVENTS_PER_MESSAGE}",
        f"local EVENT_SEPARATOR = {json.dumps(EVENT_SEPARATOR)}",
        "",
    ])


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

    def stats(self, queue: str) -> str:
        return f"{self.prefix}:stats:{queue}"

    def histogram(self, queue: str, name: str) -> str:
        return f"{self.prefix}:hist:{queue}:{name}"

    def finished_in_minute(self, queue: str, minute: int) -> str:
        return f"{self.prefix}:finished:{queue}:{minute}"

    @property
    def workers(self) -> str:
        return f"{self.prefix}:workers"

    def worker(self, worker_id: str) -> str:
        return f"{self.prefix}:worker:{worker_id}"

    @property
    def failures(self) -> str:
        return f"{self.prefix}:failures"

    @property
    def webhook_outbox(self) -> str:
        return f"{self.prefix}:webhook:outbox"

    @property
    def webhook_relaying(self) -> str:
        return f"{self.prefix}:webhook:relaying"

    def webhook_log(self, task_id: str) -> str:
        return f"{self.prefix}:webhook:log:{task_id}"

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
