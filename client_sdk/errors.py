"""Every error the inferbox client SDK raises.

One base, two families: the broker refused or could not answer a request (``APIError``), or a
request worked and the task's outcome is not a result (``TaskError``)::

    InferboxError
    ├── APIError                  a non-2xx answer, or no answer at all
    │   ├── BadRequest            400: a malformed request or an invalid option
    │   ├── AuthError             401/403: missing, unknown or under-privileged token
    │   ├── NotFound              404: unknown task id (or another client's)
    │   ├── Conflict              409: the task is not in a state that allows this
    │   │   └── LeaseLost         409 lease_lost: the worker's lease is no longer valid
    │   ├── PayloadTooLarge       413: the body is over the broker's limit
    │   ├── TooManyRequests       429: a full queue or a submit rate limit; see retry_after
    │   └── BrokerUnavailable     5xx, or the connection failed after retries
    ├── TaskError                 the task ended (or is still going) without a result
    │   ├── TaskFailed            the task ended ``failed``; ``.error`` is the worker's text
    │   ├── TaskCanceled          the task ended ``canceled``
    │   ├── TaskExpired           the task waited in its queue past its ttl
    │   └── TaskTimeout           the wait ran out; the task may still finish
    ├── ProtocolError             the broker's answer does not follow docs/api.md
    └── WebhookVerificationError  a webhook delivery's signature or timestamp does not check out

Status codes without a class of their own (405, 415, ...) raise plain ``APIError``.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "APIError",
    "AuthError",
    "BadRequest",
    "BrokerUnavailable",
    "Conflict",
    "InferboxError",
    "LeaseLost",
    "NotFound",
    "PayloadTooLarge",
    "ProtocolError",
    "TaskCanceled",
    "TaskError",
    "TaskExpired",
    "TaskFailed",
    "TaskTimeout",
    "TooManyRequests",
    "WebhookVerificationError",
]


class InferboxError(Exception):
    """Base of every error raised by ``client_sdk`` (and by ``worker``)."""


class APIError(InferboxError):
    """The broker answered with an error status, or could not be reached.

    ``status_code`` is the HTTP status (``None`` when no answer came back), ``error`` the
    machine-readable code from the body (``not_found``, ``lease_lost``, ...), ``message`` the
    human-readable text, and ``body`` the decoded JSON body (or the raw text when it was not
    JSON, ``None`` when there was none). ``retry_after`` is the answer's ``Retry-After`` in
    seconds, ``None`` without one.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        error: str = "",
        body: Any = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.error = error
        self.message = message
        self.body = body
        self.retry_after = retry_after

    def __str__(self) -> str:
        prefix = "" if self.status_code is None else f"{self.status_code} "
        code = f"{self.error}: " if self.error else ""
        return f"{prefix}{code}{self.message}"


class BadRequest(APIError):
    """400: the broker rejected the request as malformed or an option as invalid."""


class AuthError(APIError):
    """401 or 403: the token is missing, unknown, or lacks the role this call needs."""


class NotFound(APIError):
    """404: no such task, or it belongs to another client."""


class Conflict(APIError):
    """409: the task's state does not allow this (for example it already finished)."""


class LeaseLost(Conflict):
    """409 ``lease_lost``: the lease expired or the task moved on; the worker must drop it."""


class PayloadTooLarge(APIError):
    """413: the body exceeds the broker's payload limit; nothing was stored."""


class TooManyRequests(APIError):
    """429: the queue is full (``queue_full``) or the token submits too fast (``rate_limited``).

    ``retry_after`` says how many seconds to wait; ``Client.submit`` waits that long by itself
    before it gives up and raises this.
    """


class BrokerUnavailable(APIError):
    """The broker could not serve the request: a 5xx answer, or no connection after retries.

    ``status_code`` is ``None`` when the connection itself failed; the underlying
    ``requests`` exception is chained as ``__cause__``.
    """


class TaskError(InferboxError):
    """The task has no result to give: it failed, was canceled, expired, or is not done yet.

    ``task_id`` names the task and ``doc`` is the last status document the broker sent.
    """

    def __init__(self, message: str, *, task_id: str, doc: dict[str, Any]) -> None:
        super().__init__(message)
        self.task_id = task_id
        self.doc = doc


class TaskFailed(TaskError):
    """The task ended ``failed``; ``error`` is the last attempt's error text from the worker."""

    def __init__(self, message: str, *, task_id: str, doc: dict[str, Any]) -> None:
        super().__init__(message, task_id=task_id, doc=doc)
        self.error: str = str(doc.get("error") or "")


class TaskCanceled(TaskError):
    """The task ended ``canceled``: a client canceled it before it produced a result."""


class TaskExpired(TaskError):
    """The task ended ``expired``: it waited in its queue longer than its ttl."""


class TaskTimeout(TaskError):
    """The caller's timeout ran out first; the task is still queued or running."""


class ProtocolError(InferboxError):
    """The broker's answer is malformed: a missing header, an unparsable body, bad framing."""


class WebhookVerificationError(InferboxError):
    """A webhook delivery is not to be trusted: missing headers, a stale timestamp or a
    signature that does not match (see ``client_sdk.webhooks.verify``)."""
