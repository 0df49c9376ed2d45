"""Tasks in batches, as clients see them: submit many in one request, collect many results.

The client-side twins of the workers' batched take and results (docs/api.md, "Batches"): one
``POST /predictbatch`` queues up to ``MAX_TASKS_PER_TAKE`` payloads, one ``POST /getresults``
long-polls for whichever of up to as many tasks end first.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Response, jsonify, request

from storage import Blob

from .. import keys as K
from .. import multipart, options
from ..auth import CLIENT
from ..errors import InvalidOption, InvalidRequest, TaskNotFound
from ..mailbox import PayloadUpload
from ..sources import REFERENCE_TYPE
from ..task import Task
from ..web import untrusted
from .common import (
    authorize,
    box,
    json_body,
    known_fields,
    known_query,
    mailbox,
    owner_filter,
    request_body,
    result_headers,
)
from .tasks import submit_options

bp = Blueprint("batches", __name__)


@bp.post("/predictbatch")
def predictbatch() -> Response:
    """Queue every part of a multipart/mixed body as one task, all with the same options.

    Every part is checked before anything is stored; the answer lists one status document per
    part, in order, each with ``replayed`` (true when its Idempotency-Key named a task already).
    """
    principal = authorize(CLIENT)
    known_query("queue", "priority", "max_attempts", "ttl")
    queue, priority, max_attempts, ttl = submit_options(principal)
    parts = multipart.parse(request.content_type or "", request_body().read(),
                            max_parts=K.MAX_TASKS_PER_TAKE)  # fmt: skip
    uploads = [_upload(part) for part in parts]
    submitted = mailbox().submit_many(uploads, queue=queue, owner=principal.owner,
                                      priority=priority, max_attempts=max_attempts, ttl=ttl)
    response = jsonify({"tasks": [task.to_doc() | {"replayed": not created}
                                  for task, created in submitted]})  # fmt: skip
    response.status_code = 202
    return response


def _upload(part: multipart.Part) -> PayloadUpload:
    content_type = options.text("Content-Type", part.headers.get("content-type"),
                                default="application/octet-stream", max_length=1024)
    if content_type.split(";")[0].strip().lower() == REFERENCE_TYPE:
        raise InvalidRequest("payload references are taken one at a time, by POST /predict")
    key = options.text("Idempotency-Key", part.headers.get("idempotency-key"))
    return PayloadUpload(part.body, content_type, key or None)


@bp.post("/getresults")
def getresults() -> Response:
    """The outcomes of those of ``task_ids`` that ended, as soon as one has (or ``wait`` ran out).

    200 multipart/mixed: one part per final or unknown task (a succeeded task's result bytes,
    the status document of a failed, canceled or expired one, a not_found error document);
    tasks still queued or running are left out. 204 when none ended within ``wait``.
    """
    principal = authorize(CLIENT)
    known_query()
    body = json_body()
    known_fields(body, "task_ids", "wait")
    task_ids = _task_ids(body.get("task_ids"))
    wait = body.get("wait", 0)
    if isinstance(wait, bool) or not isinstance(wait, (int, float)):
        raise InvalidOption("wait must be a number of seconds (leave it out for 0)")
    wait = options.wait_seconds(wait, box().settings.max_wait)
    known = [task_id for task_id in task_ids if options.TASK_ID.fullmatch(task_id)]
    if len(known) < len(task_ids):
        wait = 0  # a malformed id is unknown: that answer is ready now
    found = dict(zip(known, mailbox().wait_any(known, owner_filter(principal), wait),
                     strict=True))  # fmt: skip
    parts = _outcome_parts(task_ids, found)
    if not parts:
        return Response(status=204)
    chunks, length, content_type = multipart.stream(parts)
    response = Response(chunks, content_type=content_type)
    response.content_length = length
    return untrusted(response)


def _task_ids(raw: Any) -> list[str]:
    """1 to MAX_TASKS_PER_TAKE ids, duplicates dropped, order kept."""
    limit = K.MAX_TASKS_PER_TAKE
    if (not isinstance(raw, list) or not 1 <= len(raw) <= limit
            or not all(isinstance(item, str) for item in raw)):  # fmt: skip
        raise InvalidOption(f"task_ids must be a list of 1 to {limit} task ids (strings)")
    return list(dict.fromkeys(options.text("task_ids[]", item, max_length=64) or "-"
                              for item in raw))  # fmt: skip


def _outcome_parts(task_ids: list[str], found: dict[str, Task | None]) -> list[multipart.OutPart]:
    succeeded = [task for task in found.values() if task is not None and task.status == K.SUCCEEDED]
    results = dict(zip((task.id for task in succeeded), mailbox().open_results(succeeded),
                       strict=True))  # fmt: skip
    parts: list[multipart.OutPart] = []
    for task_id in task_ids:
        task = found.get(task_id)
        if task is None:
            parts.append(_document_part(task_id, TaskNotFound.code, {
                "error": TaskNotFound.code, "message": f"no task {task_id}"}))  # fmt: skip
        elif task.status == K.SUCCEEDED:
            parts.append(_result_part(task, results[task.id]))
        elif task.is_final:
            parts.append(_document_part(task_id, task.status, task.to_doc()))
    return parts


def _document_part(task_id: str, status: str, doc: dict[str, Any]) -> multipart.OutPart:
    headers = {"Content-Type": "application/json", "X-Inferbox-Task-Id": task_id,
               "X-Inferbox-Status": status}  # fmt: skip
    return multipart.OutPart(headers, json.dumps(doc).encode())


def _result_part(task: Task, result: Blob) -> multipart.OutPart:
    headers = {"Content-Type": task.result_content_type or "application/octet-stream",
               **result_headers(task), "X-Inferbox-Status": task.status}  # fmt: skip
    return multipart.OutPart(headers, result)
