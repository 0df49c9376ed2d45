"""The inferbox client: submit payloads to a broker, follow the tasks, fetch their results.

``Client`` holds the connection and does every request; ``Task`` is a handle on one task id
whose methods hand off to its ``Client``::

    with Client("http://localhost:8000", token="...") as client:
        task = client.submit({"pixels": [...]}, queue="digits")
        print(task.result(timeout=30))
"""

from __future__ import annotations

import json
import math
import os
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence, Sized
from contextlib import nullcontext
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from types import TracebackType
from typing import Any

import requests

from client_sdk.backoff import Backoff
from client_sdk.codec import BINARY, Encoded, ImageAs, decode, encode, file_type
from client_sdk.errors import (
    APIError,
    BrokerUnavailable,
    NotFound,
    ProtocolError,
    TaskCanceled,
    TaskError,
    TaskExpired,
    TaskFailed,
    TaskTimeout,
    TooManyRequests,
)
from client_sdk.http import (
    RETRY_STATUSES,
    Part,
    json_document,
    make_session,
    multipart_body,
    parse_multipart,
    raise_for_error,
    send,
    task_url,
)

__all__ = ["Client", "Task"]

# The broker holds a long poll for at most INFERBOX_MAX_WAIT seconds (60 by default).
MAX_WAIT = 60
# The longest Retry-After a submit sleeps through before its next try.
MAX_RETRY_AFTER = 60.0
# A 202 that comes back sooner than this although we asked to wait means the broker did not
# hold the request; pausing keeps such a broker from being polled in a tight loop.
_MIN_POLL_INTERVAL = 1.0

# The most tasks one /predictbatch or /getresults request may name (the broker's limit).
MAX_BATCH = 100
# Payloads per /predictbatch that Client.map sends at most.
MAP_CHUNK = 64

_OUTCOME_ERRORS: dict[int, type[TaskError]] = {
    424: TaskFailed,
    409: TaskCanceled,
    410: TaskExpired,
}
_STATUS_ERRORS: dict[str, type[TaskError]] = {
    "failed": TaskFailed,
    "canceled": TaskCanceled,
    "expired": TaskExpired,
}


class Client:
    """A connection to one inferbox broker.

    ``url`` is the broker's base URL, ``token`` the bearer token (``None`` for an open
    broker), ``timeout`` the seconds to wait for the broker to answer a request (a long
    poll's own wait is added on top), ``retries`` how many times a failed connection (and, for
    safe requests, a 502/503/504) is retried. Not shareable across processes; usable from
    several threads as ``requests.Session`` is. Close it, or use it as a context manager.
    """

    def __init__(
        self, url: str, token: str | None = None, *, timeout: float = 30.0, retries: int = 3
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"broker URL must start with http:// or https://, got {url!r}")
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.retries = retries
        self._session = make_session(token, retries=retries, pool_size=64, base_url=self.url)

    def __repr__(self) -> str:
        return f"Client({self.url!r})"

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Release the pooled connections. The client must not be used afterwards."""
        self._session.close()

    def submit(
        self,
        payload: Any,
        *,
        queue: str = "default",
        content_type: str | None = None,
        priority: int | None = None,
        max_attempts: int | None = None,
        ttl: int | None = None,
        idempotency_key: str | None = None,
        wait: float | None = None,
    ) -> Task:
        """Queue ``payload`` for the workers of ``queue`` and return its ``Task``.

        ``bytes`` go as ``application/octet-stream``, ``str`` as UTF-8 ``text/plain``,
        ``dict``/``list`` (and other JSON values) as ``application/json``, numpy arrays as
        ``.npy``, PIL images as PNG, a ``pathlib.Path`` as the file's bytes typed by its
        extension, streamed from the file (a ``str`` is always text, never a path);
        ``content_type`` overrides the header, not the encoding. ``priority`` (0-9),
        ``max_attempts`` (1-100) and ``ttl`` (seconds) default to the broker's defaults when
        ``None``.

        Every submit carries an ``Idempotency-Key`` (a fresh UUID unless one is given), so a
        submit that failed on the connection or with 502/503/504 is retried with the same key
        and can never create the task twice. A ``429`` (full queue, rate limit) is retried too,
        after the ``Retry-After`` the broker sent, as is a 503 that sends one. Raises
        ``BadRequest`` for an invalid option, ``PayloadTooLarge``, ``AuthError``, or
        ``TooManyRequests`` / ``BrokerUnavailable`` once ``retries`` run out.

        ``wait`` (seconds, at most ``MAX_WAIT``) makes it the synchronous form
        (``POST /predict?wait=``): the broker holds the request until the task ends or the wait
        runs out. A task that ended meanwhile comes back with its outcome in hand, so
        ``result()`` answers (or raises) without another request.
        """
        body: bytes | Path
        if isinstance(payload, os.PathLike):  # streamed from the file, never read whole
            body, default_type = Path(payload), file_type(payload)
        else:
            body, default_type = encode(payload)
        headers = {
            "Content-Type": content_type or default_type,
            "Idempotency-Key": idempotency_key or uuid.uuid4().hex,
        }
        params = _submit_params(queue, priority, max_attempts, ttl)
        hold = 0.0 if wait is None else round(min(MAX_WAIT, max(0.0, wait)), 3)
        if hold:
            params["wait"] = hold
        response = self._post_predict(body, headers, params, hold)
        if response.status_code != 202:  # the synchronous form's outcome: the task has ended
            ended = response.headers.get("X-Inferbox-Task-Id") or ""
            if not ended:
                raise ProtocolError("the broker answered the submit without a task id")
            outcome_doc = _status_document(response) if response.status_code != 200 else None
            return Task(self, ended, outcome_doc, outcome=response)
        document = json_document(response)
        task_id = document.get("task_id")
        if not isinstance(task_id, str) or not task_id:
            raise ProtocolError("the broker accepted the task but sent no task_id")
        return Task(self, task_id, document)

    def _post_predict(
        self, body: bytes | Path, headers: dict[str, str], params: dict[str, Any],
        wait: float = 0.0,
    ) -> requests.Response:  # fmt: skip
        def attempt() -> requests.Response:
            with body.open("rb") if isinstance(body, Path) else nullcontext(body) as data:
                response = send(self._session, "POST", task_url(self.url, "predict"),
                                params=params, headers=headers, data=data,
                                timeout=self.timeout + wait)  # fmt: skip
            if not (wait and _is_outcome(response)):
                raise_for_error(response)
            return response

        return self._retrying(attempt)

    def submit_many(
        self, payloads: Iterable[Any], *, queue: str = "default",
        content_type: str | None = None, priority: int | None = None,
        max_attempts: int | None = None, ttl: int | None = None,
    ) -> list[Task]:  # fmt: skip
        """Queue every payload, all with the same options, and return their ``Task``s in order.

        Like ``submit`` for each payload (same encodings, options and errors), but in one
        ``POST /predictbatch`` per ``MAX_BATCH`` payloads. Each payload carries its own
        ``Idempotency-Key``, so a batch retried after a connection failure, a 502/503/504 or a
        ``429`` (after its ``Retry-After``) never queues a task twice. A batch the broker
        refuses (a bad option, a full queue once retries run out) queues none of its tasks;
        earlier batches stay queued.
        """
        params = _submit_params(queue, priority, max_attempts, ttl)
        source = iter(payloads)
        tasks: list[Task] = []
        while chunk := list(islice(source, MAX_BATCH)):
            tasks += self._post_batch(chunk, content_type, params)
        return tasks

    def _post_batch(
        self, payloads: Sequence[Any], content_type: str | None, params: dict[str, Any]
    ) -> list[Task]:
        parts = []
        for payload in payloads:
            body, default_type = encode(payload)
            headers = {"Content-Type": content_type or default_type,
                       "Idempotency-Key": uuid.uuid4().hex}  # fmt: skip
            parts.append((headers, body))
        body, multipart_type = multipart_body(parts)
        response = self._retrying(lambda: self._checked(send(
            self._session, "POST", task_url(self.url, "predictbatch"), params=params,
            headers={"Content-Type": multipart_type}, data=body, timeout=self.timeout)))
        documents = json_document(response).get("tasks")
        if not isinstance(documents, list) or len(documents) != len(payloads):
            raise ProtocolError("the broker's answer does not list one task per payload")
        tasks = []
        for document in documents:
            task_id = document.get("task_id") if isinstance(document, dict) else None
            if not isinstance(task_id, str) or not task_id:
                raise ProtocolError("the broker accepted a batch but sent a task without an id")
            tasks.append(Task(self, task_id, document))
        return tasks

    def _retrying(self, attempt: Callable[[], requests.Response]) -> requests.Response:
        """``attempt()`` again, as ``submit`` retries: after a connection failure, a 502/503/504
        or a 429, sleeping the ``Retry-After`` when the broker sent one."""
        backoff = Backoff(base=0.5, cap=8.0)
        while True:
            try:
                return attempt()
            except (BrokerUnavailable, TooManyRequests) as exc:
                if backoff.attempts >= self.retries or not _worth_retrying(exc):
                    raise
                delay = backoff.next_delay()  # counts the attempt
                time.sleep(min(exc.retry_after, MAX_RETRY_AFTER) if exc.retry_after else delay)

    @staticmethod
    def _checked(response: requests.Response) -> requests.Response:
        raise_for_error(response)
        return response

    def _get_results(self, task_ids: Sequence[str], wait: int) -> list[Part]:
        """The parts of ``POST /getresults``: one per task of ``task_ids`` that ended (or is
        unknown) within ``wait`` seconds; [] when none did."""
        response = self._retrying(lambda: self._checked(send(
            self._session, "POST", task_url(self.url, "getresults"),
            json={"task_ids": list(task_ids), "wait": wait}, timeout=self.timeout + wait)))
        if response.status_code == 204:
            return []
        return parse_multipart(response.headers.get("Content-Type") or "", response.content)

    def task(self, task_id: str) -> Task:
        """A handle on an existing task. No request is made until a method is called."""
        if not task_id:
            raise ValueError("task_id must be a non-empty string")
        return Task(self, task_id)

    def status(self, task_id: str) -> dict[str, Any]:
        """The task's status document (see docs/api.md); ``NotFound`` for an unknown id."""
        response = send(
            self._session, "GET", task_url(self.url, "tasks", task_id), timeout=self.timeout
        )
        raise_for_error(response)
        return json_document(response)

    def cancel(self, task_id: str) -> dict[str, Any]:
        """Cancel the task and return its status document.

        A queued task never runs; a running one is dropped by its worker. Raises
        ``Conflict`` when the task had already finished otherwise.
        """
        url = task_url(self.url, "tasks", task_id, "cancel")
        response = send(self._session, "POST", url, timeout=self.timeout)
        raise_for_error(response)
        return json_document(response)

    def predict(
        self, payload: Any, *, queue: str = "default", timeout: float | None = None,
        image: ImageAs = "bytes", **options: Any,
    ) -> Any:  # fmt: skip
        """The decoded result of ``payload``, waiting up to ``timeout`` seconds (``None``: as
        long as it takes). One request when the worker answers within ``MAX_WAIT`` seconds
        (``POST /predict?wait=``), long polls by id after that. Raises like ``result``;
        ``options`` are those of ``submit``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        task = self.submit(payload, queue=queue, wait=MAX_WAIT if timeout is None else timeout,
                           **options)  # fmt: skip
        if deadline is not None and not task.finished and time.monotonic() >= deadline:
            status = (task._document or {}).get("status", "unfinished")
            message = f"task {task.id} is still {status} after {timeout} s"
            raise TaskTimeout(message, task_id=task.id, doc=task._document or {})
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        return task.result(remaining, image=image)

    def map(
        self, payloads: Iterable[Any], *, queue: str = "default", concurrency: int = 64,
        timeout: float | None = None, progress: bool = False, return_exceptions: bool = False,
        image: ImageAs = "bytes", **options: Any,
    ) -> Iterator[Any]:  # fmt: skip
        """Results of ``payloads``, in input order, with up to ``concurrency`` tasks in flight.

        Payloads are read lazily, so the input may be a generator of any length. A task that
        fails raises its ``TaskError`` when its turn comes (``return_exceptions=True`` yields
        the exception instead and goes on). ``progress`` shows a tqdm bar. ``timeout`` applies
        to each result (a task still unfinished then gives ``TaskTimeout`` and goes on at the
        broker); ``options`` are those of ``submit_many``. Tasks are submitted up to
        ``MAP_CHUNK`` per request (``submit_many``) and collected with long polls that each
        bring back whichever results are ready (``POST /getresults``): a few requests per
        batch of tasks, not two per task.
        """
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        bar = _progress_bar(payloads, enabled=progress)
        source = iter(payloads)
        window: deque[_InFlight] = deque()  # in input order; finished ones wait for their turn
        outcomes: dict[str, Any] = {}
        try:
            while True:
                while len(window) < concurrency and (chunk := list(islice(
                        source, min(MAP_CHUNK, concurrency - len(window))))):  # fmt: skip
                    deadline = None if timeout is None else time.monotonic() + timeout
                    tasks = self.submit_many(chunk, queue=queue, **options)
                    window.extend(_InFlight(task.id, deadline) for task in tasks)
                if not window:
                    return
                if window[0].task_id not in outcomes:
                    self._collect(window, outcomes, timeout, image)
                while window and window[0].task_id in outcomes:
                    done = window.popleft()
                    yield _map_outcome(outcomes.pop(done.task_id), return_exceptions, bar)
        finally:
            if bar is not None:
                bar.close()

    def _collect(
        self, window: Sequence[_InFlight], outcomes: dict[str, Any], timeout: float | None,
        image: ImageAs,
    ) -> None:  # fmt: skip
        """One long poll for the oldest unfinished tasks of ``window``: record the outcomes
        that came back, and a ``TaskTimeout`` for each task whose deadline passed."""
        asking = [item for item in window if item.task_id not in outcomes][:MAX_BATCH]
        deadlines = [item.deadline for item in asking if item.deadline is not None]
        deadline = min(deadlines) if deadlines else None
        wait = _wait_seconds(deadline)
        asked_at = time.monotonic()
        parts = self._get_results([item.task_id for item in asking], wait)
        wanted = {item.task_id for item in asking}
        for part in parts:
            task_id = part.headers.get("X-Inferbox-Task-Id") or ""
            if task_id in wanted:
                outcomes[task_id] = _part_outcome(task_id, part, image)
        now = time.monotonic()
        for item in asking:
            if item.task_id not in outcomes and item.deadline is not None and now >= item.deadline:
                message = f"task {item.task_id} is still unfinished after {timeout} s"
                outcomes[item.task_id] = TaskTimeout(message, task_id=item.task_id, doc={})
        if not parts:
            _pace(time.monotonic() - asked_at, wait, deadline)

    def result(
        self, task_id: str, timeout: float | None = None, *, image: ImageAs = "bytes",
        raw: bool = False,
    ) -> Any:  # fmt: skip
        """Wait for the task to finish and return its result, decoded by Content-Type.

        ``application/json`` gives the parsed value, ``text/*`` a ``str``,
        ``application/x-npy`` a numpy array, images ``bytes`` unless ``image`` asks for
        ``"pil"`` (a PIL image) or ``"array"`` (a numpy array), anything else ``bytes``;
        ``raw=True`` gives ``Encoded(body, content_type)`` whatever the type. Waits with
        long polls (no fixed-interval polling) for at most ``timeout`` seconds (``None``: as
        long as it takes; ``0``: just look). Raises ``TaskFailed``, ``TaskCanceled`` or
        ``TaskExpired`` for those outcomes, ``TaskTimeout`` when the time runs out first (the
        task goes on), ``NotFound`` for an unknown id.
        """
        return _final_outcome(task_id, self._await_outcome(task_id, timeout), image=image,
                              raw=raw)  # fmt: skip

    def _await_outcome(self, task_id: str, timeout: float | None) -> requests.Response:
        """The first answer of ``GET /getresult`` that is not ``202``, long-polling for it."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait = _wait_seconds(deadline)
            asked_at = time.monotonic()
            response = self._get_result(task_id, wait)
            if response.status_code != 202:
                return response
            document = json_document(response)
            if deadline is not None and time.monotonic() >= deadline:
                status = document.get("status", "unfinished")
                message = f"task {task_id} is still {status} after {timeout} s"
                raise TaskTimeout(message, task_id=task_id, doc=document)
            _pace(time.monotonic() - asked_at, wait, deadline)

    def _get_result(self, task_id: str, wait: int) -> requests.Response:
        return send(
            self._session,
            "GET",
            task_url(self.url, "getresult", task_id),
            params={"wait": wait},
            timeout=self.timeout + wait,
        )


class Task:
    """A handle on one task. Its methods ask the broker through the ``Client`` that made it."""

    def __init__(
        self, client: Client, task_id: str, document: dict[str, Any] | None = None, *,
        outcome: requests.Response | None = None,
    ) -> None:  # fmt: skip
        self._client = client
        self._id = task_id
        self._document = document
        self._final = outcome  # the final answer, once known: final answers never change

    def __repr__(self) -> str:
        return f"Task({self._id!r})"

    @property
    def id(self) -> str:
        """The task id the broker assigned."""
        return self._id

    @property
    def queue(self) -> str:
        """The task's queue; fetched from the broker once if this handle does not know it."""
        document = self._document if self._document is not None else self.info()
        return str(document.get("queue", ""))

    def info(self) -> dict[str, Any]:
        """The task's current status document (fetched now; see docs/api.md)."""
        self._document = self._client.status(self._id)
        return self._document

    def status(self) -> str:
        """The task's current status: queued, running, succeeded, failed, canceled, expired."""
        return str(self.info().get("status", ""))

    @property
    def finished(self) -> bool:
        """Whether this handle already holds the task's outcome (no request is made)."""
        return self._final is not None

    @property
    def model_version(self) -> str | None:
        """The model version the worker declared with the result, once this handle has seen
        the result or a status document that names it; else ``None``."""
        if self._final is not None and self._final.status_code == 200:
            return self._final.headers.get("X-Inferbox-Model-Version") or None
        return (self._document or {}).get("model_version") or None

    def result(
        self, timeout: float | None = None, *, image: ImageAs = "bytes", raw: bool = False
    ) -> Any:
        """The decoded result, waiting up to ``timeout`` seconds; see ``Client.result``.

        The outcome is kept once known: asking again makes no request."""
        response = self._final  # (a Response is falsy for 4xx: compare with None)
        if response is None:
            response = self._client._await_outcome(self._id, timeout)
        if _is_outcome(response):
            self._final = response
        return _final_outcome(self._id, response, image=image, raw=raw)

    def cancel(self) -> dict[str, Any]:
        """Cancel the task and return its status document; see ``Client.cancel``."""
        self._document = self._client.cancel(self._id)
        return self._document


def _worth_retrying(exc: APIError) -> bool:
    """No answer at all, a gateway saying the broker is briefly away, or backpressure."""
    return exc.status_code is None or exc.status_code in RETRY_STATUSES or exc.status_code == 429


def _submit_params(queue: str, priority: int | None, max_attempts: int | None,
                   ttl: int | None) -> dict[str, Any]:  # fmt: skip
    """The query string of a submit: the queue, and each option that is not left to the
    broker's default."""
    options = {"priority": priority, "max_attempts": max_attempts, "ttl": ttl}
    return {"queue": queue, **{name: value for name, value in options.items() if value is not None}}


def _wait_seconds(deadline: float | None) -> int:
    """The ``?wait=`` for the next long poll: what is left of the deadline, whole seconds."""
    if deadline is None:
        return MAX_WAIT
    return min(MAX_WAIT, max(0, math.ceil(deadline - time.monotonic())))


def _pace(elapsed: float, wait: int, deadline: float | None) -> None:
    """Pause when a long poll came back early without a final answer."""
    if wait <= 0 or elapsed >= _MIN_POLL_INTERVAL:
        return
    pause = _MIN_POLL_INTERVAL - elapsed
    if deadline is not None:
        pause = min(pause, max(0.0, deadline - time.monotonic()))
    time.sleep(pause)


def _is_outcome(response: requests.Response) -> bool:
    """A final answer of a task: its result, or the status document of how it ended."""
    if response.status_code == 200:
        return True
    return response.status_code in _OUTCOME_ERRORS and _status_document(response) is not None


def _status_document(response: requests.Response) -> dict[str, Any] | None:
    try:
        document = response.json()
    except ValueError:
        return None
    return document if isinstance(document, dict) and "status" in document else None


def _progress_bar(payloads: Iterable[Any], *, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    total = len(payloads) if isinstance(payloads, Sized) else None
    return tqdm(total=total, unit=" tasks", dynamic_ncols=True)


@dataclass(frozen=True)
class _InFlight:
    """A task of ``Client.map`` whose result is not yet yielded."""

    task_id: str
    deadline: float | None  # monotonic; None: no timeout


def _map_outcome(outcome: Any, return_exceptions: bool, bar: Any) -> Any:
    """The value to yield for one task of ``map``; raises its error unless it is a
    ``TaskError`` to be returned."""
    if bar is not None:
        bar.update(1)
    if isinstance(outcome, TaskError) and return_exceptions:
        return outcome
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


def _part_outcome(task_id: str, part: Part, image: ImageAs) -> Any:
    """The decoded result a part of ``/getresults`` carries, or the exception it stands for."""
    status = part.headers.get("X-Inferbox-Status") or ""
    if status == "succeeded":
        try:
            return decode(part.body, part.headers.get("Content-Type"), images=image)
        except ValueError:
            return ProtocolError(f"task {task_id}: result does not match its type")
    if status == "not_found":
        return NotFound(f"no task {task_id}", status_code=404, error="not_found")
    error_class = _STATUS_ERRORS.get(status)
    try:
        document = json.loads(part.body)
    except ValueError:
        document = None
    if error_class is None or not isinstance(document, dict):
        return ProtocolError(f"task {task_id}: unexpected /getresults part ({status or 'no'} "
                             "status)")  # fmt: skip
    return _task_error(task_id, error_class, document)


def _task_error(task_id: str, error_class: type[TaskError], document: dict[str, Any]) -> TaskError:
    message = f"task {task_id} {document.get('status')}"
    if error_class is TaskFailed:
        message += f": {document.get('error') or 'no error text'}"
    return error_class(message, task_id=task_id, doc=document)


def _final_outcome(
    task_id: str, response: requests.Response, *, image: ImageAs = "bytes", raw: bool = False
) -> Any:
    """The decoded result of a 200 answer; the matching exception for any other."""
    if response.status_code == 200:
        if raw:
            return Encoded(response.content, response.headers.get("Content-Type") or BINARY)
        try:
            return decode(response.content, response.headers.get("Content-Type"), images=image)
        except ValueError as exc:
            raise ProtocolError(f"task {task_id}: result does not match its type") from exc
    error_class = _OUTCOME_ERRORS.get(response.status_code)
    document = _status_document(response)
    if error_class is None or document is None:
        raise_for_error(response)
        raise ProtocolError(f"unexpected {response.status_code} answer for task {task_id}")
    raise _task_error(task_id, error_class, document)
