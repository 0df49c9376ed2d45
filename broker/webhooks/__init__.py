"""Webhooks: a signed POST to the URL a task was submitted with, on the events it asked for.

::

    guard.py      the SSRF guard: http/https only, no loopback/private/link-local/metadata
                  addresses unless INFERBOX_WEBHOOK_ALLOW lists them, no second DNS lookup
    signing.py    Standard Webhooks signatures (webhook-id, webhook-timestamp, webhook-signature)
    delivery.py   one attempt: read the task, sign, POST, log the attempt on the task
    runners.py    the relay from the Redis outbox, and who attempts: rq jobs or in-process threads

The state machine's scripts write each event to the outbox atomically with the transition; the
relay hands it to a runner; every attempt and its outcome are listed in the task's status.
"""

from __future__ import annotations

import json
from typing import Any

import redis

from ..errors import Unavailable
from ..queue import TaskQueue
from .delivery import Deliverer, Event, Outcome
from .guard import AddressPolicy, Target
from .runners import Relay, RqRunner, ThreadRunner

__all__ = [
    "AddressPolicy", "Deliverer", "Event", "Outcome", "Relay", "RqRunner", "Target",
    "ThreadRunner", "delivery_log",
]  # fmt: skip


def delivery_log(queue: TaskQueue, task_id: str) -> list[dict[str, Any]]:
    """The delivery attempts made for a task so far, oldest first."""
    try:
        raw = queue.redis.lrange(queue.keys.webhook_log(task_id), 0, -1)
    except redis.RedisError as exc:
        raise Unavailable(f"Redis failed: {exc}") from exc
    return [json.loads(item) for item in raw]
