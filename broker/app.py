"""The Flask application factory.

``create_app(settings)`` builds one broker: a Redis client (the real one named by
``settings.redis_url``, or an embedded in-process one), a blob store, the state machine and the
notifier, shared through ``app.extensions["inferbox"]``; one blueprint per resource translates
HTTP into calls of :class:`~broker.mailbox.Mailbox`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import redis
from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from storage import BlobStore, open_store

from . import errors, web
from . import keys as K
from .auth import TokenTable
from .blueprints import activity, batches, compat, leases, meta, metrics, pages, queues, tasks
from .janitor import Janitor
from .mailbox import Backpressure, Mailbox
from .notify import Notifier
from .queue import TaskQueue
from .settings import Settings
from .sources import PayloadSources

log = logging.getLogger("inferbox.broker")

HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large",
              415: "unsupported_media_type", 400: "bad_request"}  # fmt: skip


@dataclass
class Inferbox:
    """What every request needs; one per app, in ``app.extensions["inferbox"]``."""

    settings: Settings
    mailbox: Mailbox
    tokens: TokenTable
    janitor: Janitor  # built here, started by the server (``broker.cli``), never by tests
    sources: PayloadSources = field(default_factory=PayloadSources)


def connect_redis(settings: Settings) -> redis.Redis:
    if settings.embedded:
        import fakeredis  # the embedded default: Redis semantics, Lua included, in-process

        return fakeredis.FakeRedis(server=fakeredis.FakeServer())
    # A bounded, blocking pool: however many requests a process holds (a thousand long-polls),
    # it never opens more than redis_connections connections; a request finding none free waits
    # for one (REDIS_POOL_TIMEOUT) rather than failing at once.
    pool = redis.BlockingConnectionPool.from_url(
        settings.redis_url or "", max_connections=settings.redis_connections,
        timeout=K.REDIS_POOL_TIMEOUT, health_check_interval=30, socket_keepalive=True,
        client_name=K.REDIS_CLIENT_NAME,
    )  # fmt: skip
    return redis.Redis.from_pool(pool)  # the client owns the pool: close() disconnects it


def create_app(
    settings: Settings | None = None, *, redis_client: redis.Redis | None = None,
    store: BlobStore | None = None, queue: TaskQueue | None = None,
) -> Flask:  # fmt: skip
    """Build a broker. ``redis_client``, ``store`` and ``queue`` override what settings name."""
    settings = settings or Settings()
    client = redis_client if redis_client is not None else connect_redis(settings)
    queue = queue or TaskQueue(client, prefix=settings.redis_prefix)
    store = store or open_store(settings.storage_url)
    backpressure = Backpressure(settings.max_queue_depth, settings.submit_rate,
                                settings.submit_burst)  # fmt: skip
    mailbox = Mailbox(queue, store, Notifier(queue.redis, queue.keys.events),
                      backpressure=backpressure)  # fmt: skip
    janitor = Janitor(mailbox, retention=settings.retention, interval=settings.janitor_interval,
                      reconcile_interval=settings.reconcile_interval,
                      reconcile_grace=settings.reconcile_grace)  # fmt: skip

    app = Flask("broker")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_payload_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["inferbox"] = Inferbox(settings, mailbox, TokenTable.from_settings(settings),
                                          janitor)  # fmt: skip
    app.extensions["inferbox"].sources = PayloadSources(settings.payload_sources,
                                                        own_store=settings.storage_url)

    for blueprint in (tasks.bp, batches.bp, leases.bp, queues.bp, meta.bp, activity.bp,
                      metrics.bp, pages.bp, compat.bp):
        app.register_blueprint(blueprint)
    if settings.embedded and settings.webhook_secret:
        deliver_webhooks_in_process(settings, queue, mailbox.notifier)
    app.register_error_handler(errors.BrokerError, _broker_error)
    app.register_error_handler(HTTPException, _http_error)
    web.install(app, settings.cors_origins)
    return app


def deliver_webhooks_in_process(settings: Settings, queue: TaskQueue, notifier: Notifier) -> None:
    """The embedded default: no other process can reach the in-process Redis, so this one relays
    and delivers webhooks itself, on threads, with the same retry schedule as the rq jobs."""
    from .webhooks import AddressPolicy, Deliverer, Relay, ThreadRunner

    policy = AddressPolicy.from_items(settings.webhook_allow)
    deliverer = Deliverer(queue, settings.webhook_secret or "", policy)
    Relay(queue, notifier, ThreadRunner(deliverer, settings.webhook_retry_delays)).start()


def error_response(
    http_status: int, code: str, message: str, extra: dict[str, Any] | None = None
) -> Response:
    response = jsonify({"error": code, "message": message, **(extra or {})})
    response.status_code = http_status
    return response


def _broker_error(exc: errors.BrokerError) -> Response:
    status = web.error_status(exc)
    response = error_response(status, exc.code, exc.message, exc.context)
    if isinstance(exc, errors.AuthError) and status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="inferbox"'
    if isinstance(exc, errors.TooManyRequests):
        response.headers["Retry-After"] = web.retry_after(exc)
    if status == 503:
        log.error("%s", exc.message)
    return response


def _http_error(exc: HTTPException) -> Response:
    status = exc.code or 500
    if isinstance(exc, RequestEntityTooLarge):
        message = "the body is larger than the broker's limit (INFERBOX_MAX_PAYLOAD_BYTES)"
    else:
        message = exc.description or exc.name
    response = error_response(status, HTTP_CODES.get(status, "error"), message)
    if status == 405 and exc.get_response().headers.get("Allow"):
        response.headers["Allow"] = exc.get_response().headers["Allow"]
    return response
