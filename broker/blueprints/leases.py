"""Leases, as workers see them: take tasks, heartbeat, post results, release."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import partial
from typing import Any

from flask import Blueprint, Response, jsonify, request

from storage import Blob

from .. import keys as K
from .. import multipart, options
from ..auth import WORKER, Principal
from ..errors import BrokerError, Conflict, InvalidRequest, TaskNotFound
from ..mailbox import ResultUpload
from ..task import Lease, Task, iso
from ..web import untrusted
from .common import (
    authorize,
    box,
    json_body,
    known_query,
    mailbox,
    option,
    request_body,
    stream_blob,
)

bp = Blueprint("leases", __name__)

ERROR_MEDIA_TYPE = "application/vnd.inferbox.error+json"
MAX_ERROR_DOC = 64 * 1024


@bp.post("/getnexttask")
def getnexttask() -> Response:
    principal = authorize(WORKER)
    known_query("queue", "max_tasks", "wait", "lease", "worker_id")
    body = json_body()
    queues = option("queue", None, body, partial(options.queue_names, default=K.DEFAULT_QUEUE))
    principal.require_queues(queues)
    max_tasks = option("max_tasks", None, body, lambda raw: options.integer(
        "max_tasks", raw, default=1, low=1, high=K.MAX_TASKS_PER_TAKE))  # fmt: skip
    wait = option("wait", None, body,
                  lambda raw: options.wait_seconds(raw, box().settings.max_wait))  # fmt: skip
    lease = option("lease", None, body, lambda raw: options.integer(
        "lease", raw, default=K.DEFAULT_LEASE, low=1, high=K.MAX_LEASE))  # fmt: skip
    worker_id = option("worker_id", "X-Inferbox-Worker", body, lambda raw: options.text(
        "worker_id", raw, default="anonymous", max_length=128))  # fmt: skip
    taken = mailbox().take(queues, max_tasks=max_tasks, lease_seconds=lease,
                           worker_id=worker_id, wait=wait)  # fmt: skip
    if not taken:
        return Response(status=204)
    if max_tasks == 1:
        lease_, blob = taken[0]
        response = Response(stream_blob(blob), content_type=lease_.content_type,
                            headers=_lease_headers(lease_))  # fmt: skip
        response.content_length = blob.info.size
        return untrusted(response)
    return untrusted(_multipart(taken))


def _lease_headers(lease: Lease) -> dict[str, str]:
    return {
        "X-Inferbox-Task-Id": lease.task_id,
        "X-Inferbox-Lease-Id": lease.lease_id,
        "X-Inferbox-Lease-Deadline": iso(lease.deadline) or "",
        "X-Inferbox-Queue": lease.queue,
        "X-Inferbox-Attempt": str(lease.attempt),
    }


def _multipart(taken: list[tuple[Lease, Blob]]) -> Response:
    """RFC 2046 multipart/mixed, one part per task, payload bytes untouched."""
    chunks, length, content_type = multipart.stream([
        multipart.OutPart({"Content-Type": lease.content_type, **_lease_headers(lease)}, blob)
        for lease, blob in taken])  # fmt: skip
    response = Response(chunks, content_type=content_type)
    response.content_length = length
    return response


def _check_queue(principal: Principal, task_id: str) -> None:
    """A worker token limited to some queues may touch only their tasks."""
    if principal.queues:
        principal.require_queues([mailbox().task(task_id, None).queue])


def _lease_id() -> str:
    lease_id = request.headers.get("X-Inferbox-Lease-Id") or request.args.get("lease_id")
    if not lease_id:
        raise InvalidRequest("missing lease id: send the X-Inferbox-Lease-Id header")
    return options.text("lease_id", lease_id, max_length=64)


@bp.post("/tasks/<task_id>/heartbeat")
def heartbeat(task_id: str) -> Response:
    principal = authorize(WORKER)
    known_query("lease_id")
    body = json_body()
    lease_id = body.get("lease_id") or _lease_id()
    lease_id = options.text("lease_id", lease_id, max_length=64)
    progress = options.progress(body.get("progress"))
    _check_queue(principal, options.task_id(task_id))
    deadline, canceled = mailbox().heartbeat(options.task_id(task_id), lease_id, progress)
    return jsonify({"lease_deadline": None if canceled else iso(deadline), "canceled": canceled})


@bp.post("/tasks/<task_id>/release")
def release(task_id: str) -> Response:
    principal = authorize(WORKER)
    known_query("lease_id")
    body = json_body()
    lease_id = options.text("lease_id", body.get("lease_id") or _lease_id(), max_length=64)
    _check_queue(principal, options.task_id(task_id))
    return jsonify(mailbox().release(options.task_id(task_id), lease_id).to_doc())


@bp.post("/puttaskresult/<task_id>")
def puttaskresult(task_id: str) -> Response:
    principal = authorize(WORKER)
    known_query("lease_id")
    task_id = options.task_id(task_id)
    lease_id = _lease_id()
    _check_queue(principal, task_id)
    content_type = request.content_type or "application/octet-stream"
    if _is_error_document(content_type):
        if (request.content_length or 0) > MAX_ERROR_DOC:
            raise InvalidRequest(f"an error document must be at most {MAX_ERROR_DOC} bytes")
        error, retryable = _error_document(request.get_data())
        task = mailbox().fail(task_id, lease_id, error, retryable=retryable)
    else:
        model_version = options.text(
            "X-Inferbox-Model-Version", request.headers.get("X-Inferbox-Model-Version")
        )
        task = mailbox().complete(task_id, lease_id, request_body(), content_type=content_type,
                                  model_version=model_version)  # fmt: skip
    return jsonify(task.to_doc())


@bp.post("/puttaskresults")
def puttaskresults() -> Response:
    """Several results in one request: one multipart/mixed part per task, each recorded alone."""
    principal = authorize(WORKER)
    known_query()
    parts = multipart.parse(request.content_type or "", request_body().read(),
                            max_parts=K.MAX_TASKS_PER_TAKE)  # fmt: skip
    default_version = request.headers.get("X-Inferbox-Model-Version")
    batch = [_ResultPart.read(part, default_version) for part in parts]  # all checked first
    for item in batch:
        _check_queue(principal, item.task_id)
    results = [item.upload() for item in batch if item.error is None]
    completed = iter(mailbox().complete_many(results))
    return jsonify({"results": [
        item.record() if item.error else _result_doc(item.task_id, next(completed))
        for item in batch]})  # fmt: skip


def _result_doc(task_id: str, outcome: Task | BrokerError) -> dict[str, Any]:
    if isinstance(outcome, (Conflict, TaskNotFound)):
        return {"task_id": task_id, "error": outcome.code, "message": outcome.message}
    if isinstance(outcome, BrokerError):
        raise outcome
    return outcome.to_doc()


@dataclass(frozen=True)
class _ResultPart:
    task_id: str
    lease_id: str
    content_type: str
    model_version: str
    body: bytes
    error: tuple[str, bool] | None

    @classmethod
    def read(cls, part: multipart.Part, default_version: str | None) -> _ResultPart:
        headers = part.headers
        lease_id = headers.get("x-inferbox-lease-id")
        if not lease_id:
            raise InvalidRequest("every part needs X-Inferbox-Task-Id and X-Inferbox-Lease-Id")
        content_type = headers.get("content-type") or "application/octet-stream"
        error = None
        if _is_error_document(content_type):
            if len(part.body) > MAX_ERROR_DOC:
                raise InvalidRequest(f"an error document must be at most {MAX_ERROR_DOC} bytes")
            error = _error_document(part.body)
        return cls(
            task_id=options.task_id(headers.get("x-inferbox-task-id", "")),
            lease_id=options.text("lease_id", lease_id, max_length=64),
            content_type=options.text("Content-Type", content_type, max_length=1024),
            model_version=options.text("X-Inferbox-Model-Version",
                                       headers.get("x-inferbox-model-version", default_version)),
            body=part.body, error=error,
        )  # fmt: skip

    def upload(self) -> ResultUpload:
        return ResultUpload(self.task_id, self.lease_id, self.body, self.content_type,
                            self.model_version)  # fmt: skip

    def record(self) -> dict[str, Any]:
        """Fail the attempt with this part's error document: the task's status document, or
        ``{task_id, error, message}`` when refused."""
        assert self.error is not None
        try:
            task = mailbox().fail(self.task_id, self.lease_id, self.error[0],
                                  retryable=self.error[1])  # fmt: skip
        except (Conflict, TaskNotFound) as exc:
            return {"task_id": self.task_id, "error": exc.code, "message": exc.message}
        return task.to_doc()


def _is_error_document(content_type: str) -> bool:
    return content_type.split(";")[0].strip().lower() == ERROR_MEDIA_TYPE


def _error_document(raw: bytes) -> tuple[str, bool]:
    try:
        doc = json.loads(raw or b"{}")
    except ValueError as exc:
        raise InvalidRequest(f"the error document is not valid JSON: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("error"), str) or not doc["error"]:
        raise InvalidRequest('an error document is {"error": "<text>", "retryable": true}')
    retryable = doc.get("retryable", True)
    if not isinstance(retryable, bool):
        raise InvalidRequest("retryable must be true or false")
    error = doc["error"]
    if isinstance(doc.get("traceback"), str) and doc["traceback"]:
        error = f"{error}\n{doc['traceback']}"
    return error, retryable
