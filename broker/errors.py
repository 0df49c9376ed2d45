"""The broker's exceptions.

::

    BrokerError                  base of everything the broker raises on purpose
    ├── InvalidRequest           the caller sent something unusable (HTTP 400)
    │   ├── InvalidQueue         a queue name outside the allowed form
    │   ├── InvalidOption        an option out of range or of the wrong type
    │   ├── WebhookRefused       a webhook URL the SSRF guard refuses
    │   └── SourceRefused        a payload URL the broker may not or cannot read
    ├── AuthError                missing or unknown token (401)
    │   └── Forbidden            a known token whose role may not do this (403)
    ├── TaskNotFound             unknown id, or another owner's task (404)
    ├── Conflict                 the task's state forbids the operation (409)
    │   ├── LeaseLost            the lease expired, went to another worker, or never existed
    │   └── TaskFinished         the task already reached a final state
    ├── PayloadTooLarge          a body over the configured limit (413)
    ├── TooManyRequests          backpressure: try again after ``retry_after`` seconds (429)
    │   ├── QueueFull            the queue holds INFERBOX_MAX_QUEUE_DEPTH tasks already
    │   └── RateLimited          the token submits faster than INFERBOX_SUBMIT_RATE
    └── Unavailable              Redis or blob storage failed (503)
    SettingsError(ValueError)    a bad INFERBOX_* setting, raised at start-up

Each error carries a stable ``code`` (the ``error`` field of the JSON error body) and a message
meant for the caller. The HTTP layer maps classes to status codes; this module knows no HTTP.
"""

from __future__ import annotations

from typing import Any


class BrokerError(Exception):
    code = "error"

    def __init__(self, message: str, **context: Any) -> None:
        super().__init__(message)
        self.message = message
        self.context = context


class InvalidRequest(BrokerError):
    code = "bad_request"


class InvalidQueue(InvalidRequest):
    code = "invalid_queue"


class InvalidOption(InvalidRequest):
    code = "invalid_option"


class WebhookRefused(InvalidRequest):
    code = "webhook_refused"


class SourceRefused(InvalidRequest):
    code = "source_refused"


class AuthError(BrokerError):
    code = "unauthorized"


class Forbidden(AuthError):
    code = "forbidden"


class TaskNotFound(BrokerError):
    code = "not_found"


class Conflict(BrokerError):
    code = "conflict"


class LeaseLost(Conflict):
    code = "lease_lost"


class TaskFinished(Conflict):
    code = "task_finished"


class PayloadTooLarge(BrokerError):
    code = "payload_too_large"


class TooManyRequests(BrokerError):
    code = "too_many_requests"

    def __init__(self, message: str, *, retry_after: float, **context: Any) -> None:
        super().__init__(message, retry_after=retry_after, **context)
        self.retry_after = retry_after


class QueueFull(TooManyRequests):
    code = "queue_full"


class RateLimited(TooManyRequests):
    code = "rate_limited"


class Unavailable(BrokerError):
    code = "unavailable"


class SettingsError(ValueError):
    """A bad ``INFERBOX_*`` setting; raised once, at start-up."""
