"""HTTP policy that every response passes through: security headers and CORS.

- Every response says ``X-Content-Type-Options: nosniff``.
- Payloads and results go out with ``Content-Security-Policy: sandbox; default-src 'none'``
  (:func:`untrusted`): their bytes and Content-Type come from callers, so a result that is HTML
  opened in a browser must not run script on the broker's origin.
- HTML pages get a strict Content-Security-Policy, ``X-Frame-Options: DENY``,
  ``Referrer-Policy: no-referrer`` and ``Cross-Origin-Opener-Policy: same-origin`` unless the
  view set its own policy.
- Errors: :func:`error_status` maps the broker's exceptions to HTTP status codes, one table for
  the JSON errors of the native API and the text errors of the v0 endpoints.
- CORS is off unless ``INFERBOX_CORS_ORIGINS`` lists origins (or ``*``): then a request from a
  listed origin gets ``Access-Control-Allow-Origin`` for it, and preflights are answered. Tokens
  travel in the Authorization header, never in cookies, so credentials are never allowed.
"""

from __future__ import annotations

import math

from flask import Flask, Response, request

from . import errors

STATUS_OF = (  # most specific first
    (errors.Forbidden, 403),
    (errors.AuthError, 401),
    (errors.InvalidRequest, 400),
    (errors.TaskNotFound, 404),
    (errors.Conflict, 409),
    (errors.PayloadTooLarge, 413),
    (errors.TooManyRequests, 429),
    (errors.Unavailable, 503),
)
UNTRUSTED_CSP = "sandbox; default-src 'none'"
HTML_HEADERS = {
    # img-src blob: lets the "try it" page show an image result it fetched (with the token) and
    # turned into an object URL itself; nothing else loads from blob: or elsewhere.
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; img-src 'self' blob:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}
CORS_ALLOW_HEADERS = ", ".join((
    "Authorization", "Content-Type", "Idempotency-Key", "X-Inferbox-Queue", "X-Inferbox-Priority",
    "X-Inferbox-Max-Attempts", "X-Inferbox-Ttl", "X-Inferbox-Lease-Id", "X-Inferbox-Worker",
    "X-Inferbox-Model-Version",
))  # fmt: skip
CORS_EXPOSE_HEADERS = ", ".join((
    "Location", "Retry-After", "Idempotent-Replayed", "X-Inferbox-Task-Id",
    "X-Inferbox-Model-Version",
))  # fmt: skip
CORS_MAX_AGE = "600"


def error_status(exc: errors.BrokerError) -> int:
    """The HTTP status of a broker error."""
    return next(code for cls, code in STATUS_OF if isinstance(exc, cls))


def retry_after(exc: errors.TooManyRequests) -> str:
    """The Retry-After header of a 429: whole seconds, at least 1."""
    return str(max(1, math.ceil(exc.retry_after)))


def untrusted(response: Response) -> Response:
    """Mark a response whose body and Content-Type a caller chose (a payload or a result)."""
    response.headers["Content-Security-Policy"] = UNTRUSTED_CSP
    return response


def install(app: Flask, cors_origins: tuple[str, ...]) -> None:
    """Register the after-request hooks on ``app``."""
    allowed = frozenset(cors_origins)

    @app.after_request
    def _policy(response: Response) -> Response:
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        if response.mimetype == "text/html" and "Content-Security-Policy" not in response.headers:
            for name, value in HTML_HEADERS.items():
                response.headers.setdefault(name, value)
        origin = (request.headers.get("Origin") or "").lower()
        if origin and allowed and ("*" in allowed or origin in allowed):
            _allow(response, "*" if "*" in allowed else origin)
        return response


def _allow(response: Response, origin: str) -> None:
    response.headers["Access-Control-Allow-Origin"] = origin
    response.vary.add("Origin")
    response.headers["Access-Control-Expose-Headers"] = CORS_EXPOSE_HEADERS
    if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
        response.headers["Access-Control-Allow-Methods"] = "GET, POST"
        response.headers["Access-Control-Allow-Headers"] = CORS_ALLOW_HEADERS
        response.headers["Access-Control-Max-Age"] = CORS_MAX_AGE
