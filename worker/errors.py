"""Errors of the ``worker`` package, and its one control signal.

The worker also raises the client SDK's errors (``client_sdk.errors``) for what the broker
answers; its own are rooted under the same base, so ``except InferboxError`` catches all::

    InferboxError                 (client_sdk.errors)
    └── WorkerError
        └── HandlerLoadError      --handler / --keras does not name a usable handler or model

    Canceled                      a control signal, not an error: ``ctx.check()`` raises it
                                  in a handler whose task was canceled (or whose lease was
                                  lost); the worker drops that task's result and goes on

``Worker.run`` never raises for a broker that is away (it backs off and retries) nor for a
handler that raises (the task fails and the loop goes on); it raises ``AuthError``,
``BadRequest`` or ``NotFound`` from the take when retrying could not help.
"""

from __future__ import annotations

from client_sdk.errors import InferboxError

__all__ = ["Canceled", "HandlerLoadError", "WorkerError"]


class WorkerError(InferboxError):
    """Base of the errors the ``worker`` package raises itself."""


class HandlerLoadError(WorkerError):
    """A handler spec or model file is malformed, does not import, or is not usable."""


class Canceled(Exception):  # noqa: N818 - a signal, named for what happened
    """Raised by ``ctx.check()``: stop working on this task, nobody wants its result."""
