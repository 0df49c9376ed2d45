"""Handlers: how a worker calls the model code, one task or one batch at a time.

A handler is any callable. Declared with ``@handler(...)`` (or overridden by ``Worker.run``
arguments), it says how it wants to be called:

- ``batched=True``: called once per batch with the list of inputs, or with one stacked numpy
  array when every input is an array of the same shape and dtype; it returns one output per
  input (a list, a tuple or an array whose first axis is the batch). Default: batched when the
  worker's ``batch_size`` is above 1.
- ``raw=True``: gets the payload bytes untouched instead of the decoded value.
- ``result_type="image/png"``: numpy arrays it returns go out as PNG (also ``image/jpeg``,
  ``application/json``); by default arrays go as .npy and PIL images as PNG.
- a second parameter (``def predict(payload, ctx)``) receives a ``TaskContext`` (or a
  ``BatchContext``): progress, cancellation, the task's id and content type.

One bad item fails only its own task: a payload that does not decode fails at once (retrying
cannot help), an output that cannot be encoded fails its task, and when a batch call raises,
each item is run again on its own so that only the culprits fail.
"""

from __future__ import annotations

import inspect
import logging
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, overload

from client_sdk.codec import Encoded, decode, dump_json, encode, stack
from worker.context import BatchContext, TaskContext
from worker.errors import Canceled
from worker.heartbeat import LeaseKeeper
from worker.task import TakenTask

__all__ = ["ERROR_CONTENT_TYPE", "HandlerSpec", "error_document", "execute", "handler", "resolve"]

logger = logging.getLogger("inferbox.worker")

Handler = Callable[..., Any]
F = TypeVar("F", bound=Callable[..., Any])

ERROR_CONTENT_TYPE = "application/vnd.inferbox.error+json"
_TRACEBACK_FRAMES = 5
_MAX_ERROR_CHARS = 4000
_ATTRIBUTE = "__inferbox_handler__"


def error_document(exc: BaseException, *, retryable: bool = True) -> Encoded:
    """The failure body a worker posts for ``exc``: ``{"error", "traceback", "retryable"}``.

    ``error`` reads ``"ValueError: message"``; ``traceback`` holds the last few frames.
    """
    message = str(exc)
    error = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    frames = traceback.format_exception(type(exc), exc, exc.__traceback__, limit=-_TRACEBACK_FRAMES)
    document = {
        "error": error[:_MAX_ERROR_CHARS],
        "traceback": "".join(frames)[-_MAX_ERROR_CHARS:],
        "retryable": retryable,
    }
    return Encoded(dump_json(document), ERROR_CONTENT_TYPE)


def is_error(outcome: Encoded) -> bool:
    return outcome.content_type == ERROR_CONTENT_TYPE


@overload
def handler(fn: F) -> F: ...
@overload
def handler(
    *, batched: bool | None = None, raw: bool | None = None, result_type: str | None = None
) -> Callable[[F], F]: ...
def handler(
    fn: Any = None, *, batched: bool | None = None, raw: bool | None = None,
    result_type: str | None = None,
) -> Any:  # fmt: skip
    """Declare how a function wants to be called (see the module docstring)."""
    declared = {"batched": batched, "raw": raw, "result_type": result_type}

    def mark(target: F) -> F:
        setattr(target, _ATTRIBUTE, {k: v for k, v in declared.items() if v is not None})
        return target

    return mark(fn) if fn is not None else mark


@dataclass(frozen=True)
class HandlerSpec:
    fn: Handler
    batched: bool
    raw: bool
    result_type: str | None
    takes_context: bool


def resolve(
    fn: Handler, *, batch_size: int, batched: bool | None = None, raw: bool | None = None,
    result_type: str | None = None,
) -> HandlerSpec:  # fmt: skip
    """How to call ``fn``: the arguments given here win over what ``@handler`` declared."""
    if not callable(fn):
        raise TypeError(f"a handler must be callable, not {type(fn).__name__}")
    declared = getattr(fn, _ATTRIBUTE, {})
    return HandlerSpec(
        fn=fn,
        batched=_first(batched, declared.get("batched"), batch_size > 1),
        raw=_first(raw, declared.get("raw"), False),
        result_type=result_type or declared.get("result_type"),
        takes_context=_takes_context(fn),
    )


def _first(*values: Any) -> Any:
    return next(value for value in values if value is not None)


def _takes_context(fn: Handler) -> bool:
    try:
        parameters = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):  # some builtins have no signature
        return False
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in parameters):
        return False
    if any(p.name == "ctx" for p in parameters):
        return True
    return len([p for p in parameters if p.kind in positional]) >= 2


@dataclass
class Outcome:
    """What a batch produced: one body per task (None: canceled, drop it), the tasks never
    started because the worker is stopping (hand them back), and the model time."""

    bodies: list[Encoded | None]
    unstarted: list[TakenTask]
    busy_seconds: float


def execute(
    spec: HandlerSpec, tasks: list[TakenTask], keeper: LeaseKeeper,
    stopping: Callable[[], bool] = lambda: False,
) -> Outcome:  # fmt: skip
    """Run the handler on ``tasks``; never raises for what the handler does (KeyboardInterrupt
    aside). A per-task handler starts no new task of the batch once ``stopping()``."""
    bodies: list[Encoded | None] = [None] * len(tasks)
    ready: list[int] = []
    inputs: list[Any] = []
    for i, task in enumerate(tasks):
        if keeper.lost(task):
            continue  # canceled before its turn: not worth the model's time
        try:
            inputs.append(task.body if spec.raw else decode(task.body, task.content_type,
                                                            images="array"))  # fmt: skip
            ready.append(i)
        except ValueError as exc:  # it will not decode on any attempt: retrying cannot help
            bodies[i] = error_document(exc, retryable=False)
    contexts = [TaskContext(tasks[i], keeper) for i in ready]
    started = time.perf_counter()
    if spec.batched and inputs:
        outputs = _call_batched(spec, inputs, contexts)
    else:
        outputs = []
        for value, ctx in zip(inputs, contexts, strict=True):
            if stopping():
                break
            outputs.append(_call_one(spec, value, ctx))
    busy = time.perf_counter() - started
    for i, output in zip(ready, outputs, strict=False):
        bodies[i] = _encode(output, spec.result_type)
    unstarted = [tasks[i] for i in ready[len(outputs):]]
    return Outcome(bodies, unstarted, busy)


_CANCELED = object()


def _call_one(spec: HandlerSpec, value: Any, ctx: TaskContext) -> Any:
    try:
        return spec.fn(value, ctx) if spec.takes_context else spec.fn(value)
    except Canceled:
        return _CANCELED
    except Exception as exc:
        logger.warning("task %s: handler raised %s: %s", ctx.task_id, type(exc).__name__, exc)
        return exc


def _call_batched(spec: HandlerSpec, inputs: list[Any], contexts: list[TaskContext]) -> list[Any]:
    try:
        return _batch_call(spec, inputs, contexts)
    except Canceled:
        return [_CANCELED] * len(inputs)
    except Exception as exc:
        if len(inputs) == 1:
            logger.warning("task %s: handler raised %s: %s", contexts[0].task_id,
                           type(exc).__name__, exc)  # fmt: skip
            return [exc]
        logger.warning("a batch of %d raised %s: %s; running its items one by one",
                       len(inputs), type(exc).__name__, exc)  # fmt: skip
    outputs = []
    for value, ctx in zip(inputs, contexts, strict=True):
        outputs.extend(_call_batched(spec, [value], [ctx]))
    return outputs


def _batch_call(spec: HandlerSpec, inputs: list[Any], contexts: list[TaskContext]) -> list[Any]:
    batch = inputs if spec.raw else stack(inputs)
    result = spec.fn(batch, BatchContext(contexts)) if spec.takes_context else spec.fn(batch)
    if isinstance(result, (str, bytes, dict)) or not hasattr(result, "__len__"):
        raise TypeError("a batch handler must return a list, tuple or array with one output per "
                        f"input, not {type(result).__name__}")  # fmt: skip
    outputs = list(result)
    if len(outputs) != len(inputs):
        raise ValueError(f"the batch handler returned {len(outputs)} outputs for "
                         f"{len(inputs)} inputs")  # fmt: skip
    return outputs


def _encode(output: Any, result_type: str | None) -> Encoded | None:
    if output is _CANCELED:
        return None
    if isinstance(output, BaseException):
        return error_document(output)
    try:
        return encode(output, array_type=result_type)
    except (TypeError, ValueError) as exc:
        return error_document(exc)
