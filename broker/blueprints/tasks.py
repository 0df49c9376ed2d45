"""The task resource, as clients see it: submit, status, result, cancel."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache, partial
from typing import IO, Any, NamedTuple, cast

from flask import Blueprint, Response, jsonify, request, url_for

from .. import keys as K
from .. import options
from ..auth import CLIENT, Principal
from ..errors import WebhookRefused
from ..sources import REFERENCE_TYPE
from ..task import Task
from ..web import untrusted
from ..webhooks import AddressPolicy, delivery_log
from .common import (
    authorize,
    box,
    json_body,
    known_query,
    mailbox,
    option,
    owner_filter,
    request_body,
    result_headers,
    stream_blob,
)

bp = Blueprint("tasks", __name__)

RESULT_STATUS = {K.FAILED: 424, K.CANCELED: 409, K.EXPIRED: 410}  # pending -> 202


@bp.post("/predict")
def predict() -> Response:
    principal = authorize(CLIENT)
    known_query("queue", "priority", "max_attempts", "ttl", "webhook", "webhook_events", "wait")
    settings = box().settings
    queue, priority, max_attempts, ttl = submit_options(principal)
    idempotency_key = options.text("Idempotency-Key", request.headers.get("Idempotency-Key"))
    wait = options.wait_seconds(request.args.get("wait"), settings.max_wait)
    webhook_url, webhook_events = _webhook()
    submit: dict[str, Any] = dict(
        queue=queue, owner=principal.owner, priority=priority, max_attempts=max_attempts, ttl=ttl,
        idempotency_key=idempotency_key or None, webhook_url=webhook_url,
        webhook_events=webhook_events,
    )  # fmt: skip
    if wait > 0:  # the synchronous form: answer as /getresult would once the wait is over
        task, created = mailbox().predict(partial(_payload, principal), wait,
                                          reader=owner_filter(principal), **submit)
        response = _outcome_response(task)
    else:
        with _payload(principal) as (body, content_type):
            task, created = mailbox().submit(body, content_type=content_type, **submit)
        response = jsonify(task.to_doc())
        response.status_code = 202
    response.headers["Location"] = url_for("tasks.status", task_id=task.id)
    response.headers["X-Inferbox-Task-Id"] = task.id
    if not created:
        response.headers["Idempotent-Replayed"] = "true"
    return response


class SubmitOptions(NamedTuple):
    queue: str
    priority: int
    max_attempts: int
    ttl: int


def submit_options(principal: Principal) -> SubmitOptions:
    """The task options of a submit, from the query string or their X-Inferbox-* headers,
    checked, with the queue one the principal may use."""
    settings = box().settings
    queue = option("queue", "X-Inferbox-Queue",
                   check=partial(options.queue_name, default=K.DEFAULT_QUEUE))
    principal.require_queues([queue])
    priority = option("priority", "X-Inferbox-Priority", check=lambda raw: options.integer(
        "priority", raw, default=K.DEFAULT_PRIORITY, low=0, high=K.MAX_PRIORITY))  # fmt: skip
    max_attempts = option("max_attempts", "X-Inferbox-Max-Attempts", check=lambda raw: (
        options.integer("max_attempts", raw, default=settings.default_max_attempts, low=1,
                        high=K.MAX_ATTEMPTS_LIMIT)))  # fmt: skip
    ttl = option("ttl", "X-Inferbox-Ttl", check=lambda raw: options.integer(
        "ttl", raw, default=settings.default_ttl, low=1, high=K.MAX_TTL))  # fmt: skip
    return SubmitOptions(queue, priority, max_attempts, ttl)


@contextmanager
def _payload(principal: Principal) -> Iterator[tuple[IO[bytes], str]]:
    """The payload and its type: the request body, or the blob a payload reference names."""
    if request.mimetype != REFERENCE_TYPE:
        yield request_body(), request.content_type or "application/octet-stream"
        return
    blob, content_type = box().sources.open(json_body(max_bytes=8 * 1024), principal.owner,
                                            max_bytes=box().settings.max_payload_bytes)
    with blob:
        yield cast(IO[bytes], blob), content_type  # a Blob reads like one: read(n) until b""


def _webhook() -> tuple[str, tuple[str, ...]]:
    """The submit's webhook URL (checked by the SSRF guard) and events; ("", ()) for none.

    The events are checked even without a URL, like every other option, and then unused.
    """
    url = option("webhook", "X-Inferbox-Webhook", check=options.webhook_url)
    events = option("webhook_events", "X-Inferbox-Webhook-Events", check=options.webhook_events)
    if url is None:
        return "", ()
    settings = box().settings
    if not settings.webhook_secret:
        raise WebhookRefused("webhooks are off on this broker: it has no INFERBOX_WEBHOOK_SECRET")
    target = _policy(settings.webhook_allow).check_url(url)
    return target.url, events


@cache
def _policy(allow: tuple[str, ...]) -> AddressPolicy:
    return AddressPolicy.from_items(allow)


@bp.get("/tasks/<task_id>")
def status(task_id: str) -> Response:
    principal = authorize(CLIENT)
    known_query()
    task = mailbox().task(options.task_id(task_id), owner_filter(principal))
    deliveries = delivery_log(mailbox().queue, task.id) if task.webhook_url else None
    return jsonify(task.to_doc(deliveries))


@bp.get("/getresult/<task_id>")
def getresult(task_id: str) -> Response:
    principal = authorize(CLIENT)
    known_query("wait")
    wait = options.wait_seconds(request.args.get("wait"), box().settings.max_wait)
    return _outcome_response(mailbox().wait(options.task_id(task_id), owner_filter(principal),
                                            wait))  # fmt: skip


@bp.post("/tasks/<task_id>/cancel")
def cancel(task_id: str) -> Response:
    principal = authorize(CLIENT)
    known_query()
    return jsonify(mailbox().cancel(options.task_id(task_id), owner_filter(principal)).to_doc())


def _outcome_response(task: Task) -> Response:
    """The result of a succeeded task; else its status document with the status's code."""
    if task.status == K.SUCCEEDED:
        return _result_response(task)
    response = jsonify(task.to_doc())
    response.status_code = RESULT_STATUS.get(task.status, 202)
    return response


def _result_response(task: Task) -> Response:
    blob = mailbox().open_result(task)
    response = Response(stream_blob(blob), content_type=task.result_content_type)
    response.content_length = blob.info.size
    response.headers.update(result_headers(task))
    return untrusted(response)
