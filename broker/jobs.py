"""``inferbox-broker jobs``: deliver webhooks, with rq.

One process runs the relay (outbox -> rq queue ``<prefix>-webhooks``) on a thread and an rq worker
with its scheduler (which brings retries back after their backoff) in the foreground. Run as many
as the receivers' latency needs; they share the work through Redis. SIGTERM stops it after the job
in hand, as rq workers do.
"""

from __future__ import annotations

import logging

import redis
from rq import Queue, SimpleWorker

from . import keys as K
from .errors import SettingsError
from .notify import Notifier
from .queue import TaskQueue
from .settings import Settings
from .webhooks import AddressPolicy, Deliverer, Relay, RqRunner
from .webhooks.runners import install

log = logging.getLogger("inferbox.jobs")


def rq_queue_name(prefix: str) -> str:
    return f"{prefix}-{K.WEBHOOK_QUEUE}"


def run_jobs(settings: Settings, *, burst: bool = False) -> None:
    if settings.embedded:
        raise SettingsError(
            "`jobs` needs INFERBOX_REDIS_URL: on the embedded default the broker process "
            "delivers webhooks itself"
        )
    if not settings.webhook_secret:
        log.warning("no INFERBOX_WEBHOOK_SECRET: brokers refuse webhooks; nothing will come")
    client = redis.Redis.from_url(settings.redis_url or "", health_check_interval=30)
    queue = TaskQueue(client, prefix=settings.redis_prefix)
    policy = AddressPolicy.from_items(settings.webhook_allow)
    install(Deliverer(queue, settings.webhook_secret or "", policy))
    rq_queue = Queue(rq_queue_name(settings.redis_prefix), connection=client)
    relay = Relay(queue, Notifier(client, queue.keys.events),
                  RqRunner(rq_queue, settings.webhook_retry_delays))  # fmt: skip
    relay.start()
    log.info("delivering webhooks from %s (rq queue %s)", settings.redis_url, rq_queue.name)
    try:
        SimpleWorker([rq_queue], connection=client).work(with_scheduler=True, burst=burst)
    finally:
        relay.stop()
