"""The OpenAPI 3.1 document served at ``/openapi.json``; docs/api.md is its prose twin.

``tests/unit/test_openapi.py`` keeps it honest: the spec validates, and its paths and methods are
exactly the routes the app registers.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from . import keys as K

JSON = "application/json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema_name: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": _ref(schema_name)}}}


def _error(description: str) -> dict[str, Any]:
    return _json("Error", description)


def _binary(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    # No schema: the bytes go out exactly as stored, with the Content-Type their sender chose
    # (which they need not honour), so there is nothing to validate them against.
    response: dict[str, Any] = {"description": description + " (raw bytes)", "content": {"*/*": {}}}
    if headers:
        response["headers"] = headers
    return response


def _param(name: str, where: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": where, "schema": schema, "description": description,
            "required": where == "path"}  # fmt: skip


def _string_header(description: str) -> dict[str, Any]:
    return {"schema": {"type": "string"}, "description": description}


NAME = "[A-Za-z0-9][A-Za-z0-9._-]{0,63}"
QUEUE = {"type": "string", "pattern": f"^{NAME}$"}
QUEUES = {"type": "string", "pattern": f"^{NAME}(,{NAME})*$"}


def _printable(max_length: int) -> dict[str, Any]:
    return {"type": "string", "pattern": f"^[\\x20-\\x7e]{{0,{max_length}}}$"}


def _integer(low: int, high: int) -> dict[str, Any]:
    return {"type": "integer", "minimum": low, "maximum": high}


TASK_ID = _param("task_id", "path", {"type": "string"},
                 "the task id (22 base64url characters; anything else is unknown)")
AUTH_ERRORS = {"401": _error("missing or unknown token"), "403": _error("wrong role")}
RETRY_AFTER = {"Retry-After": {"schema": {"type": "integer", "minimum": 1},
                               "description": "seconds to wait before trying again"}}
LEASE_HEADERS = {
    "X-Inferbox-Task-Id": _string_header("task id"),
    "X-Inferbox-Lease-Id": _string_header("lease id, sent back with heartbeats and the result"),
    "X-Inferbox-Lease-Deadline": _string_header("when the lease ends (ISO 8601)"),
    "X-Inferbox-Queue": _string_header("the task's queue"),
    "X-Inferbox-Attempt": _string_header("attempt number, from 1"),
}
RESULT_HEADERS = {
    "X-Inferbox-Task-Id": _string_header("task id"),
    "X-Inferbox-Model-Version": _string_header("the worker's model version"),
}

HTML_PAGE = {"description": "HTML", "content": {"text/html": {"schema": {"type": "string"}}}}
NULLABLE_TIME = {"type": ["string", "null"], "format": "date-time"}
SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object", "required": ["error", "message"],
        "properties": {"error": {"type": "string"}, "message": {"type": "string"},
                       "retry_after": {"type": "number", "minimum": 0}},
    },
    "Progress": {
        "type": ["object", "null"],
        "properties": {"fraction": {"type": "number", "minimum": 0, "maximum": 1},
                       "message": {"type": "string", "maxLength": 500}},
    },
    "Task": {
        "type": "object",
        "required": ["task_id", "status", "queue", "attempts", "max_attempts", "created_at"],
        "properties": {
            "task_id": {"type": "string"},
            "status": {"enum": ["queued", "running", "succeeded", "failed", "canceled",
                                "expired"]},
            "queue": {"type": "string"},
            "priority": {"type": "integer", "minimum": 0, "maximum": K.MAX_PRIORITY},
            "attempts": {"type": "integer"}, "max_attempts": {"type": "integer"},
            "created_at": {"type": "string", "format": "date-time"},
            "started_at": NULLABLE_TIME, "finished_at": NULLABLE_TIME, "expires_at": NULLABLE_TIME,
            "worker_id": {"type": ["string", "null"]},
            "model_version": {"type": ["string", "null"]},
            "progress": _ref("Progress"),
            "error": {"type": ["string", "null"]},
            "content_type": {"type": "string"}, "size": {"type": "integer"},
            "result_content_type": {"type": ["string", "null"]},
            "result_size": {"type": ["integer", "null"]},
            "webhook": _ref("Webhook"),
        },
    },
    "Webhook": {
        "type": ["object", "null"],
        "properties": {
            "url": {"type": "string"},
            "events": {"type": "array", "items": {"enum": list(K.WEBHOOK_EVENTS)}},
            "deliveries": {"type": "array", "items": {
                "type": "object",
                "properties": {"id": {"type": "string"}, "event": {"type": "string"},
                               "attempt": {"type": "integer"}, "at": {"type": "string"},
                               "status_code": {"type": ["integer", "null"]},
                               "error": {"type": ["string", "null"]},
                               "outcome": {"enum": ["delivered", "retrying", "failed"]}},
            }},
        },
    },
    "Activity": {
        "type": "object",
        "properties": {
            "queues": {"type": "array", "items": {"type": "object", "properties": {
                "name": {"type": "string"}, "depth": {"type": "integer"},
                "in_flight": {"type": "integer"},
                "oldest_age_seconds": {"type": ["number", "null"]},
                "finished_per_minute": {"type": "number"},
                **{name: {"type": "integer"} for name in K.COUNTERS}}}},
            "workers": {"type": "array", "items": {"type": "object", "properties": {
                "worker_id": {"type": "string"},
                "queues": {"type": "array", "items": {"type": "string"}},
                "last_seen": {"type": "string", "format": "date-time"},
                "alive": {"type": "boolean"}, "tasks_done": {"type": "integer"},
                "tasks_failed": {"type": "integer"}, "model_version": {"type": "string"}}}},
            "failures": {"type": "array", "items": {"type": "object", "properties": {
                "task_id": {"type": "string"}, "queue": {"type": "string"},
                "worker_id": {"type": "string"}, "attempt": {"type": "integer"},
                "error": {"type": "string"}, "final": {"type": "boolean"},
                "at": {"type": "string", "format": "date-time"}}}},
            "webhook_backlog": {"type": "integer"},
        },
    },
    "PayloadRef": {
        "type": "object", "required": ["url"],
        "properties": {"url": {"type": "string", "maxLength": 2048,
                               "description": "a blob under INFERBOX_PAYLOAD_SOURCES"},
                       "content_type": {"type": "string",
                                        "description": "the payload's type (default: the "
                                                       "blob's, or guessed from its name)"}},
    },
    "Heartbeat": {
        "type": "object", "required": ["lease_id"],
        "properties": {"lease_id": {**_printable(64), "minLength": 1},
                       "progress": _ref("Progress")},
    },
    "Results": {
        "type": "object", "required": ["results"],
        "properties": {"results": {"type": "array", "items": {"oneOf": [
            _ref("Task"),
            {"type": "object", "required": ["task_id", "error", "message"],
             "properties": {"task_id": {"type": "string"}, "error": {"type": "string"},
                            "message": {"type": "string"}}}]}}},
    },
    "Batch": {
        "type": "object", "required": ["tasks"],
        "properties": {"tasks": {"type": "array", "items": {"allOf": [
            _ref("Task"),
            {"type": "object", "required": ["replayed"],
             "properties": {"replayed": {"type": "boolean"}}}]}}},
    },
    "ResultsQuery": {
        "type": "object", "required": ["task_ids"], "additionalProperties": False,
        "properties": {
            "task_ids": {"type": "array", "items": _printable(64), "minItems": 1,
                         "maxItems": K.MAX_TASKS_PER_TAKE},
            "wait": {"type": "number", "minimum": 0},
        },
    },
    "Release": {
        "type": "object", "required": ["lease_id"],
        "properties": {"lease_id": {**_printable(64), "minLength": 1}},
    },
    "HeartbeatAnswer": {
        "type": "object", "required": ["canceled"],
        "properties": {"lease_deadline": NULLABLE_TIME, "canceled": {"type": "boolean"}},
    },
    "ErrorDocument": {
        "type": "object", "required": ["error"],
        "properties": {"error": {"type": "string", "minLength": 1},
                       "traceback": {"type": "string"},
                       "retryable": {"type": "boolean", "default": True}},
    },
    "TakeOptions": {
        "type": "object",
        "properties": {
            "queue": {"oneOf": [QUEUES, {"type": "array", "items": QUEUE, "minItems": 1}]},
            "max_tasks": _integer(1, K.MAX_TASKS_PER_TAKE),
            "wait": {"type": "number", "minimum": 0},
            "lease": _integer(1, K.MAX_LEASE),
            "worker_id": _printable(128),
        },
    },
    "Queues": {
        "type": "object",
        "properties": {"queues": {"type": "array", "items": {
            "type": "object",
            "properties": {"name": {"type": "string"}, "depth": {"type": "integer"},
                           "in_flight": {"type": "integer"},
                           "oldest_age_seconds": {"type": ["number", "null"]}},
        }}},
    },
    "Health": {
        "type": "object",
        "properties": {"status": {"type": "string"}, "redis": {"type": "string"},
                       "storage": {"type": "string"}},
    },
}  # fmt: skip


WEBHOOK_EVENTS = r"^(completed|failed|progress)(,(completed|failed|progress))*$"


def _submit_options() -> list[tuple[str, dict[str, Any], str]]:
    """The options every submit takes, one task or a batch."""
    return [("queue", QUEUE, "queue (model) name, default 'default'"),
            ("priority", _integer(0, K.MAX_PRIORITY), "0-9, higher first"),
            ("max_attempts", _integer(1, K.MAX_ATTEMPTS_LIMIT), "attempts"),
            ("ttl", _integer(1, K.MAX_TTL), "seconds it may wait queued")]


def _predict() -> dict[str, Any]:
    options = [*_submit_options(),
               ("webhook", {"type": "string", "format": "uri", "pattern": "^https?://",
                            "maxLength": K.WEBHOOK_MAX_URL},
                "http(s) URL to POST signed events to (or X-Inferbox-Webhook); refused (400) "
                "when the SSRF guard forbids its address"),
               ("webhook_events", {"type": "string", "pattern": WEBHOOK_EVENTS},
                "comma-separated: completed, failed, progress (default completed,failed); "
                "checked even without webhook, and then unused"),
               ("wait", {"type": "number", "minimum": 0},
                "hold the request up to this many seconds and answer as /getresult would")]
    # fmt: skip
    headers = [("Idempotency-Key", _printable(255), "same key, same task")]
    return {"post": {
        "summary": "Submit a task: the body is the payload, with its Content-Type",
        "description": "Each option may come as a header instead: X-Inferbox-Queue, "
                       "X-Inferbox-Priority, X-Inferbox-Max-Attempts, X-Inferbox-Ttl, "
                       "X-Inferbox-Webhook, X-Inferbox-Webhook-Events.",
        "parameters": [_param(name, "query", schema, text) for name, schema, text in options]
        + [_param(name, "header", schema, text) for name, schema, text in headers],
        "requestBody": {"content": {
            "application/vnd.inferbox.payload-ref+json": {"schema": _ref("PayloadRef")},
            "*/*": {"schema": {"type": "string", "format": "binary"}}}},
        "responses": {
            "200": _binary("with wait: the task succeeded within it; the result bytes", {
                **RESULT_HEADERS, "Location": _string_header("/tasks/<id>")}),
            "202": _json("Task", "queued (or replayed for a known Idempotency-Key); with wait: "
                                 "still queued or running when it ran out"),
            "400": _error("bad option or queue name, a webhook URL the guard refuses, or a "
                          "payload reference the broker may not or cannot read"),
            **AUTH_ERRORS,
            "409": _json("Task", "with wait: canceled meanwhile"),
            "410": _json("Task", "with wait: expired meanwhile"),
            "413": _error("payload over the limit"),
            "424": _json("Task", "with wait: failed within it"),
            "429": {**_error("the queue is full or the token submits too fast"),
                    "headers": RETRY_AFTER},
            "503": _error("Redis or storage failed"),
        },
    }}  # fmt: skip


def _getresult() -> dict[str, Any]:
    return {"get": {
        "summary": "The result bytes once succeeded; otherwise the status document",
        "parameters": [TASK_ID, _param("wait", "query", {"type": "number", "minimum": 0},
                                       "long-poll up to this many seconds (capped)")],
        "responses": {
            "200": _binary("the result, with the worker's Content-Type", RESULT_HEADERS),
            "202": _json("Task", "still queued or running"),
            "400": _error("bad wait"), **AUTH_ERRORS,
            "404": _error("unknown task"), "409": _json("Task", "canceled"),
            "410": _json("Task", "expired"), "424": _json("Task", "failed"),
            "503": _error("Redis or storage failed"),
        },
    }}  # fmt: skip


def _batch_ops() -> dict[str, Any]:
    options = _submit_options()
    # OpenAPI 3.1 cannot describe multipart/mixed framing: the bodies are declared as bytes.
    predictbatch = {"post": {
        "summary": "Submit several tasks at once: one multipart/mixed part per payload",
        "description": "The body is multipart/mixed; boundary=... (RFC 2046) with 1 to "
                       f"{K.MAX_TASKS_PER_TAKE} parts, each a payload with its own Content-Type "
                       "and optionally its own Idempotency-Key. The options apply to every "
                       "task (or come as the X-Inferbox-* headers of /predict). Every part is "
                       "checked before anything is stored; a refusal stores nothing.",
        "parameters": [_param(name, "query", schema, text) for name, schema, text in options],
        "requestBody": {"required": True, "content": {"multipart/mixed": {
            "schema": {"type": "string", "format": "binary"}}}},
        "responses": {
            "202": _json("Batch", "queued: one status document per part, in order; replayed "
                                  "for a part whose Idempotency-Key named a task already"),
            "400": _error("bad framing, option, queue name or part header"), **AUTH_ERRORS,
            "413": _error("body over the payload limit"),
            "429": {**_error("the queue has no room for the whole batch, or the token "
                             "submits too fast (every task counts)"), "headers": RETRY_AFTER},
            "503": _error("Redis or storage failed"),
        },
    }}  # fmt: skip
    getresults = {"post": {
        "summary": "Collect the outcomes of several tasks, long-polling until one has ended",
        "description": "Answers as soon as one of task_ids has ended (or is unknown), or when "
                       "wait runs out: multipart/mixed with one part per such task, carrying "
                       "X-Inferbox-Task-Id and X-Inferbox-Status (succeeded: the result bytes "
                       "with the worker's Content-Type and X-Inferbox-Model-Version; failed, "
                       "canceled, expired: the status document; not_found, also for another "
                       "owner's task: an error document). Tasks still queued or running are left "
                       "out: ask again for them.",
        "requestBody": {"required": True, "content": {JSON: {"schema": _ref("ResultsQuery")}}},
        "responses": {
            "200": {"description": "one part per ended or unknown task",
                    "content": {"multipart/mixed": {
                        "schema": {"type": "string", "format": "binary"}}}},
            "204": {"description": "none of the tasks ended within wait"},
            "400": _error("bad task_ids or wait"), **AUTH_ERRORS,
            "503": _error("Redis or storage failed"),
        },
    }}  # fmt: skip
    return {"/predictbatch": predictbatch, "/getresults": getresults}


# The spec language cannot say "in the body, or else in a header or the query string", so the
# body form (the one the worker uses) is the documented one and the others are told in prose.
LEASE_ID_ELSEWHERE = ("Without a lease_id in the body, the lease id is read from the "
                      "X-Inferbox-Lease-Id header, else from ?lease_id=.")


def _task_ops() -> dict[str, Any]:
    status = {"get": {
        "summary": "The status document", "parameters": [TASK_ID],
        "responses": {"200": _json("Task", "the task"), **AUTH_ERRORS,
                      "404": _error("unknown task")},
    }}
    cancel = {"post": {
        "summary": "Cancel a queued or running task", "parameters": [TASK_ID],
        "responses": {"200": _json("Task", "canceled"), **AUTH_ERRORS,
                      "404": _error("unknown task"), "409": _error("already final")},
    }}
    heartbeat = {"post": {
        "summary": "Extend the lease; report progress; learn of a cancel", "parameters": [TASK_ID],
        "description": LEASE_ID_ELSEWHERE,
        "requestBody": {"required": True, "content": {JSON: {"schema": _ref("Heartbeat")}}},
        "responses": {"200": _json("HeartbeatAnswer", "lease extended, or canceled: true"),
                      "400": _error("missing lease id or bad progress"), **AUTH_ERRORS,
                      "404": _error("unknown task"), "409": _error("lease lost")},
    }}
    release = {"post": {
        "summary": "Give the task back to its queue without counting the attempt",
        "description": LEASE_ID_ELSEWHERE, "parameters": [TASK_ID],
        "requestBody": {"required": True, "content": {JSON: {"schema": _ref("Release")}}},
        "responses": {"200": _json("Task", "queued again, at its old place"),
                      "400": _error("missing lease id"), **AUTH_ERRORS,
                      "404": _error("unknown task"), "409": _error("lease lost or task final")},
    }}
    return {"/tasks/{task_id}": status, "/tasks/{task_id}/cancel": cancel,
            "/tasks/{task_id}/heartbeat": heartbeat,
            "/tasks/{task_id}/release": release}  # fmt: skip


def _worker_ops() -> dict[str, Any]:
    take = {"post": {
        "summary": "Take up to max_tasks tasks, long-polling up to wait seconds",
        "parameters": [_param(name, "query", schema, text) for name, schema, text in (
            ("queue", QUEUES, "queue name(s), comma-separated"),
            ("max_tasks", _integer(1, K.MAX_TASKS_PER_TAKE), "tasks to take at most"),
            ("wait", {"type": "number", "minimum": 0}, "seconds to long-poll (capped)"),
            ("lease", _integer(1, K.MAX_LEASE), "lease seconds"),
            ("worker_id", _printable(128), "recorded on the task (or X-Inferbox-Worker)"))],
        "requestBody": {"content": {JSON: {"schema": _ref("TakeOptions")}}},
        "responses": {
            "200": _binary("one payload with lease headers (max_tasks=1), or multipart/mixed "
                           "with one part per task", LEASE_HEADERS),
            "204": {"description": "nothing to do within wait"},
            "400": _error("bad option"), **AUTH_ERRORS,
        },
    }}
    put = {"post": {
        "summary": "Post the attempt's result bytes, or an error document",
        "parameters": [TASK_ID,
                       {**_param("X-Inferbox-Lease-Id", "header",
                                 {**_printable(64), "minLength": 1},
                                 "the lease id (or ?lease_id=)"), "required": True},
                       _param("X-Inferbox-Model-Version", "header", _printable(255),
                              "stored with the result")],
        "requestBody": {"content": {
            "application/vnd.inferbox.error+json": {"schema": _ref("ErrorDocument")},
            "*/*": {"schema": {"type": "string", "format": "binary"}}}},
        "responses": {"200": _json("Task", "recorded (or already recorded by this lease)"),
                      "400": _error("missing lease id or bad error document"), **AUTH_ERRORS,
                      "404": _error("unknown task"), "409": _error("lease lost or task final"),
                      "413": _error("result over the limit")},
    }}
    # OpenAPI 3.1 cannot describe multipart/mixed framing (the boundary, 1 to 100 unnamed
    # parts, each with its own headers): the body is declared as bytes and told in prose.
    put_many = {"post": {
        "summary": "Post several results at once: one multipart/mixed part per task",
        "description": "The body is multipart/mixed; boundary=... (RFC 2046) with 1 to "
                       f"{K.MAX_TASKS_PER_TAKE} parts, each with X-Inferbox-Task-Id, "
                       "X-Inferbox-Lease-Id, its own Content-Type (the result bytes, or an error "
                       "document as application/vnd.inferbox.error+json) and optionally "
                       "X-Inferbox-Model-Version.",
        "parameters": [_param("X-Inferbox-Model-Version", "header", _printable(255),
                              "stored with every result whose part does not say otherwise")],
        "requestBody": {"required": True, "content": {"multipart/mixed": {
            "schema": {"type": "string", "format": "binary"}}}},
        "responses": {"200": _json("Results", "one entry per part, in order"),
                      "400": _error("bad framing, or a part without task and lease ids"),
                      **AUTH_ERRORS, "413": _error("body over the limit")},
    }}
    return {"/getnexttask": take, "/puttaskresult/{task_id}": put,
            "/puttaskresults": put_many}  # fmt: skip


def _operator_ops() -> dict[str, Any]:
    return {
        "/healthz": {"get": {"summary": "Liveness and dependencies", "security": [], "responses": {
            "200": _json("Health", "healthy"), "503": _json("Health", "Redis or storage down")}}},
        "/queues": {"get": {"summary": "Per-queue depth, in flight, oldest age", "responses": {
            "200": _json("Queues", "every queue used so far"), **AUTH_ERRORS}}},
        "/activity": {"get": {"summary": "Queues with counters and throughput, workers seen "
                                         "recently, recent failures", "responses": {
            "200": _json("Activity", "what the dashboard shows"), **AUTH_ERRORS}}},
        "/metrics": {"get": {"summary": "Prometheus metrics, computed from Redis", "responses": {
            "200": {"description": "Prometheus text format",
                    "content": {"text/plain": {"schema": {"type": "string"}}}},
            **AUTH_ERRORS}}},
        "/": {"get": {"summary": "The 'try it' page", "security": [],
                      "responses": {"200": HTML_PAGE}}},
        "/dashboard": {"get": {"summary": "The dashboard page (its data needs an admin token)",
                               "security": [], "responses": {"200": HTML_PAGE}}},
        "/openapi.json": {"get": {"summary": "This document", "security": [], "responses": {
            "200": {"description": "OpenAPI 3.1", "content": {JSON: {"schema": {}}}}}}},
    }  # fmt: skip


def _text(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description, "content": {"text/plain": {"schema": {"type": "string"}}},
    }
    if headers:
        response["headers"] = headers
    return response


V0_SECURITY: list[dict[str, list[str]]] = [
    {"functionKey": []}, {"functionKeyHeader": []}, {"bearer": []},
]
V0_ERRORS = {"401": _text("missing or unknown function key"), "403": _text("wrong role"),
             "503": _text("Redis or storage failed")}  # fmt: skip
V0_FIELDS_RULE = (
    "Each field is read from the query string; only a field that is not there is read from the "
    "body, parsed as JSON whatever its Content-Type, leniently (single quotes, unquoted names, "
    "trailing commas), and other body fields are ignored. A field in neither place is 400. "
    "(The spec language cannot say 'in one of the two', so both are optional below.)"
)
V0_TASK_ID = _string_header("the native task id")


def _base64(char: str, space: str) -> dict[str, Any]:
    """Standard base64 with padding, whitespace (``space``) anywhere ignored, as
    ``compat.decode_base64`` reads it."""
    c = f"{char}{space}*"
    return {"type": "string", "pattern": f"^{space}*(?:(?:{c}){{4}})*"
                                         f"(?:(?:{c}){{2}}={space}*={space}*|(?:{c}){{3}}={space}*)?$"}


# In the body, any whitespace is ignored; in the query string a space is the '+' that URL
# decoding made of an unescaped '+', and other whitespace is ignored.
V0_BASE64 = {"body": _base64("[A-Za-z0-9+/]", r"\s"), "query": _base64("[A-Za-z0-9+/ ]", r"[^\S ]")}
V0_TEXT = {"body": {"type": "string"}, "query": {"type": "string"}}


def _v0(summary: str, fields: dict[str, tuple[dict[str, Any], str]], responses: dict[str, Any],
        headers: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """GET and POST alike: each field in the query string, else in a (lenient) JSON body."""
    operation: dict[str, Any] = {
        "summary": summary, "security": V0_SECURITY,
        "parameters": [_param(name, "query", schemas["query"], text)
                       for name, (schemas, text) in fields.items()] + (headers or []),
        "responses": {**responses, **V0_ERRORS},
    }
    if fields:
        operation["description"] = V0_FIELDS_RULE
        body = {"type": "object",
                "properties": {name: schemas["body"] for name, (schemas, _) in fields.items()}}
        # The body is JSON text under any Content-Type label (jQuery labels it form-encoded):
        # the label is not looked at, so the one representation is JSON's.
        operation["requestBody"] = {
            "description": "JSON text, whatever the Content-Type says",
            "content": {JSON: {"schema": body}}}
    return {"get": operation, "post": operation}  # fmt: skip


def _compat_ops() -> dict[str, Any]:
    """The original Azure Functions (docs/compat-azureml.md)."""
    conditional = {"description": "not modified (If-None-Match named its ETag)"}
    page = {"description": "the test page", "content": {"text/html": {"schema": {}}}}
    too_large = _text("body over INFERBOX_MAX_PAYLOAD_BYTES")
    return {
        "/api/predict_v0": _v0(
            "v0: submit base64 payload bytes; answers the task id as text",
            {"payload": (V0_BASE64, "standard base64 of the payload bytes")},
            {"200": _text("<guid>.payload", {"X-Inferbox-Task-Id": V0_TASK_ID}),
             "400": _text("no payload, or not base64"),
             "413": _text("payload or body over the limit"),
             "429": _text("the queue is full or the key submits too fast", RETRY_AFTER)}),
        "/api/getnexttask_v0": _v0(
            "v0: take the next task with a lease (INFERBOX_COMPAT_LEASE)", {},
            {"200": _text("<guid>.<lease>.payload|<base64 payload>",
                          {"X-Inferbox-Task-Id": V0_TASK_ID}),
             "204": {"description": "no task available"},
             "400": _text("X-Inferbox-Worker is not printable text")},
            [_param("X-Inferbox-Worker", "header", _printable(128),
                    "recorded on the task (default v0@<client address>)")]),
        "/api/puttaskresult_v0": _v0(
            "v0: post a base64 result; echoes the task id",
            {"task_id": (V0_TEXT, "the id getnexttask_v0 gave"),
             "result": (V0_BASE64, "standard base64 of the result")},
            {"200": _text("the task id, echoed"), "400": _text("missing field or not base64"),
             "404": _text("unknown task"), "409": _text("lease lost or task final"),
             "413": too_large}),
        "/api/getresult_v0": _v0(
            "v0: the base64 result, or the base64 of 'task_id not found!'",
            {"task_id": (V0_TEXT, "the id predict_v0 gave")},
            {"200": _text("base64 of the result bytes, or dGFza19pZCBub3QgZm91bmQh", {
                "X-Inferbox-Status": _string_header("the task's status, or unknown"),
                "X-Inferbox-Task-Id": _string_header("the native task id, once succeeded")}),
             "400": _text("missing task_id"), "413": too_large}),
        "/api/showTestPage": {method: {"summary": "v0: the test page (no key needed)",
                                       "security": [],
                                       "responses": {"200": page, "304": conditional}}
                              for method in ("get", "post")},
        "/api/showTestPage/jquery.js": {"get": {
            "summary": "the test page's jQuery, shipped in the package", "security": [],
            "responses": {"200": {"description": "jQuery 3.7.1",
                                  "content": {"text/javascript": {"schema": {}}}},
                          "304": conditional}}},
    }  # fmt: skip


@cache
def spec() -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        release = version("inferbox")
    except PackageNotFoundError:
        release = "0+unknown"
    return {
        "openapi": "3.1.0",
        "info": {"title": "inferbox broker", "version": release,
                 "description": "Submit payloads, let pull-based workers run the model, fetch "
                                "results by id. Prose reference: docs/api.md."},
        "components": {"schemas": SCHEMAS, "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer"},
            "functionKey": {"type": "apiKey", "in": "query", "name": "code"},
            "functionKeyHeader": {"type": "apiKey", "in": "header", "name": "x-functions-key"}}},
        "security": [{"bearer": []}],
        "paths": {"/predict": _predict(), "/getresult/{task_id}": _getresult(), **_batch_ops(),
                  **_task_ops(), **_worker_ops(), **_operator_ops(), **_compat_ops()},
    }  # fmt: skip
