"""Errors of the ``worker`` package.

The worker also raises the client SDK's errors (``client_sdk.errors``) for what the broker
answers; its own are rooted under the same base, so ``except InferboxError`` catches all::

    InferboxError                 (client_sdk.errors)
    └── WorkerError
        └── HandlerLoadError      --handler does not name an importable callable

``Worker.run`` never raises for a broker that is away (it backs off and retries) nor for a
handler that raises (the task fails and the loop goes on); it raises ``AuthError``,
``BadRequest`` or ``NotFound`` from the take when retrying could not help.
"""

from __future__ import annotations

from client_sdk.errors import InferboxError

__all__ = ["HandlerLoadError", "WorkerError"]


class WorkerError(InferboxError):
    """Base of the errors the ``worker`` package raises itself."""


class HandlerLoadError(WorkerError):
    """A ``module:function`` handler spec is malformed, does not import, or is not callable."""
