"""The original four Azure Functions under ``/api/``, for their unchanged clients (v0).

Each call maps onto the :class:`~broker.mailbox.Mailbox` like its native twin, so leases, FIFO
order, retries and per-owner isolation apply behind the old surface. The wire format (fields,
ids, base64) is in :mod:`broker.compat`; docs/compat-azureml.md says what is reproduced exactly
and what is deliberately better.

Every v0 endpoint takes GET and POST and answers ``text/plain`` bodies, errors included, as the
functions did; a function key comes as ``?code=KEY`` or in the ``x-functions-key`` header.
"""

from __future__ import annotations

import base64
import hashlib
import io
import re
from functools import cache
from importlib import resources
from itertools import chain
from typing import Any

from flask import Blueprint, Response, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from .. import compat, errors, options
from .. import keys as K
from ..auth import CLIENT, WORKER, Principal
from ..task import Task
from ..web import HTML_HEADERS, error_status, retry_after
from .common import box, mailbox, owner_filter, stream_blob

bp = Blueprint("compat", __name__, url_prefix="/api")

TEXT = "text/plain; charset=utf-8"
OCTETS = "application/octet-stream"
BOTH = ["GET", "POST"]
STATIC = resources.files("broker") / "static"
TEST_PAGE = "testpage.html"
JQUERY = "jquery-3.7.1.min.js"


def text(body: str, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(body, status=status, content_type=TEXT, headers=headers)


# -- the four functions -------------------------------------------------------------------------


@bp.route("/predict_v0", methods=BOTH)
def predict_v0() -> Response:
    principal = authorize(CLIENT)
    fields = Fields()
    payload = fields.base64("payload", missing=compat.MISSING_PAYLOAD)
    settings = box().settings
    if len(payload) > settings.max_payload_bytes:
        raise errors.PayloadTooLarge("the payload is larger than INFERBOX_MAX_PAYLOAD_BYTES")
    task, _ = mailbox().submit(
        io.BytesIO(payload), content_type=OCTETS, queue=settings.compat_queue,
        owner=principal.owner, priority=K.DEFAULT_PRIORITY,
        max_attempts=settings.default_max_attempts, ttl=settings.default_ttl,
    )  # fmt: skip
    return text(compat.client_id(task.id), headers={"X-Inferbox-Task-Id": task.id})


@bp.route("/getnexttask_v0", methods=BOTH)
def getnexttask_v0() -> Response:
    authorize(WORKER)
    settings = box().settings
    worker = request.headers.get("X-Inferbox-Worker") or f"v0@{request.remote_addr}"
    taken = mailbox().take(
        [settings.compat_queue], max_tasks=1, lease_seconds=settings.compat_lease,
        worker_id=options.text("X-Inferbox-Worker", worker, max_length=128), wait=0,
    )  # fmt: skip
    if not taken:
        return Response(status=204)  # the original failed with a 500; its workers saw no task
    lease, blob = taken[0]
    head = f"{compat.worker_id(lease.task_id, lease.lease_id)}|".encode()
    response = Response(chain([head], compat.base64_chunks(stream_blob(blob))), content_type=TEXT)
    response.content_length = len(head) + compat.base64_length(blob.info.size)
    response.headers["X-Inferbox-Task-Id"] = lease.task_id
    return response


@bp.route("/puttaskresult_v0", methods=BOTH)
def puttaskresult_v0() -> Response:
    authorize(WORKER)
    fields = Fields()
    raw_id = fields.text("task_id")
    if raw_id is None or fields.text("result") is None:
        raise errors.InvalidRequest(compat.MISSING_TASK_ID_AND_RESULT)
    result = fields.base64("result", missing=compat.MISSING_TASK_ID_AND_RESULT)
    task_id, lease_id = compat.parse_id(raw_id)
    if lease_id is None:  # an id without a lease: the attempt now running, if any
        task = mailbox().task(task_id, None)
        if task.status == K.SUCCEEDED:
            return text(raw_id)
        if task.status != K.RUNNING:
            raise errors.Conflict(f"task {raw_id} is {task.status}, not running: no attempt "
                                  "to take this result")  # fmt: skip
        lease_id = task.lease_id
    mailbox().complete(task_id, lease_id, io.BytesIO(result), content_type=OCTETS)
    return text(raw_id)


@bp.route("/getresult_v0", methods=BOTH)
def getresult_v0() -> Response:
    principal = authorize(CLIENT)
    raw_id = Fields().text("task_id")
    if raw_id is None:
        raise errors.InvalidRequest(compat.MISSING_TASK_ID)
    try:
        task_id, _ = compat.parse_id(raw_id)
        task = mailbox().task(task_id, owner_filter(principal))
    except errors.TaskNotFound:
        return text(compat.SENTINEL, headers={"X-Inferbox-Status": "unknown"})
    if task.status != K.SUCCEEDED:
        return text(compat.SENTINEL, headers={"X-Inferbox-Status": task.status})
    return _base64_result(task)


def _base64_result(task: Task) -> Response:
    blob = mailbox().open_result(task)
    response = Response(compat.base64_chunks(stream_blob(blob)), content_type=TEXT)
    response.content_length = compat.base64_length(blob.info.size)
    response.headers["X-Inferbox-Status"] = task.status
    response.headers["X-Inferbox-Task-Id"] = task.id
    return response


# -- the test page ------------------------------------------------------------------------------


@bp.route("/showTestPage", methods=BOTH)
def show_test_page() -> Response:
    """Four buttons driving the four functions; needs no key (it holds none: pass ?code=)."""
    response = _static(TEST_PAGE, "text/html; charset=utf-8")
    response.headers.update(_test_page_headers())
    return response


@cache
def _test_page_headers() -> dict[str, str]:
    """The broker's page headers, with a policy that lets the page's own inline script and style
    run by their hashes (the page is one file, as the original was) and nothing else inline."""
    html = (STATIC / TEST_PAGE).read_text(encoding="utf-8")

    def hashes(tag: str) -> str:
        blocks = re.findall(rf"<{tag}>(.*?)</{tag}>", html, re.DOTALL)
        return " ".join("'sha256-{}'".format(base64.b64encode(
            hashlib.sha256(block.encode()).digest()).decode()) for block in blocks)  # fmt: skip

    policy = HTML_HEADERS["Content-Security-Policy"].replace(
        "script-src 'self'", f"script-src 'self' {hashes('script')}"
    ) + f"; style-src 'self' {hashes('style')}"
    return {**HTML_HEADERS, "Content-Security-Policy": policy}


@bp.get("/showTestPage/jquery.js")
def jquery() -> Response:
    """The page's jQuery, shipped in the package: nothing comes from a CDN."""
    return _static(JQUERY, "text/javascript; charset=utf-8")


def _static(name: str, content_type: str) -> Response:
    response = Response((STATIC / name).read_bytes(), content_type=content_type)
    response.headers["Cache-Control"] = "no-cache"
    response.add_etag()
    response.make_conditional(request)
    return response


# -- keys, fields, errors -----------------------------------------------------------------------


def authorize(*roles: str) -> Principal:
    """The caller by function key (``?code=`` or ``x-functions-key``) or bearer token."""
    key = request.args.get("code") or request.headers.get("x-functions-key")
    bearer = request.headers.get("Authorization")
    tokens = box().tokens
    if not key and not bearer and not tokens.is_open:
        raise errors.AuthError("missing function key: pass ?code=KEY or an x-functions-key header")
    try:
        principal = tokens.authenticate(f"Bearer {key}" if key else bearer)
    except errors.AuthError as exc:
        raise errors.AuthError("unknown function key" if key else exc.message) from None
    principal.require(*roles)
    return principal


class Fields:
    """A v0 request's fields: the query string first, else the body read as (lenient) JSON."""

    def __init__(self) -> None:
        self._body: dict[str, Any] | None = None

    def text(self, name: str) -> str | None:
        return self._find(name)[0]

    def base64(self, name: str, *, missing: str) -> bytes:
        value, from_query = self._find(name)
        if value is None:
            raise errors.InvalidRequest(missing)
        return compat.decode_base64(name, value, from_query=from_query)

    def _find(self, name: str) -> tuple[str | None, bool]:
        if name in request.args:
            return request.args[name], True
        value = self._fields().get(name)
        if value is not None and not isinstance(value, str):
            raise errors.InvalidRequest(f"{name} must be a string")
        return value, False

    def _fields(self) -> dict[str, Any]:
        if self._body is None:
            # Whatever the Content-Type: jQuery sends JSON text form-encoded. Never request.form.
            self._body = compat.parse_body(request.get_data(cache=True))
        return self._body


def _text_error(exc: errors.BrokerError) -> Response:
    """The broker's own status for the error (web.STATUS_OF), with its message as the text."""
    response = text(exc.message, error_status(exc))
    if isinstance(exc, errors.TooManyRequests):
        response.headers["Retry-After"] = retry_after(exc)
    return response


def _http_error(exc: HTTPException) -> Response:
    if isinstance(exc, RequestEntityTooLarge):
        return text("the body is larger than the broker's limit (INFERBOX_MAX_PAYLOAD_BYTES)", 413)
    return text(exc.description or exc.name, exc.code or 500)


bp.register_error_handler(errors.BrokerError, _text_error)
bp.register_error_handler(HTTPException, _http_error)
