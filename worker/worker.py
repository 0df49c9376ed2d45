"""The worker loop: take a task, run the handler on it, post what it returned.

::

    from worker import Worker

    def predict(payload):              # the decoded payload: object, str or bytes
        return {"label": "cat"}        # JSON, str, bytes or a numpy array

    Worker("http://localhost:8000", token="...", queue="images").run(predict)
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

from client_sdk.backoff import Backoff
from client_sdk.codec import Encoded, dump_json, encode
from client_sdk.errors import (
    APIError,
    BrokerUnavailable,
    Conflict,
    PayloadTooLarge,
    ProtocolError,
)
from client_sdk.http import make_session, raise_for_error, send, task_url
from worker.heartbeat import Heartbeat
from worker.task import TakenTask, taken_tasks

__all__ = ["ERROR_CONTENT_TYPE", "Handler", "Worker", "error_document"]

logger = logging.getLogger("inferbox.worker")

Handler = Callable[[Any], Any]

ERROR_CONTENT_TYPE = "application/vnd.inferbox.error+json"
_TRACEBACK_FRAMES = 5
_MAX_ERROR_CHARS = 4000


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


def _is_error(outcome: Encoded) -> bool:
    return outcome.content_type == ERROR_CONTENT_TYPE


class Worker:
    """A pull-based worker for one broker and one or more queues.

    ``queue`` is a name or a sequence of names (taken in that order); ``worker_id`` is
    recorded on the tasks (default ``<hostname>-<pid>``); ``lease`` is the lease length in
    seconds, renewed by a heartbeat every ``lease / 3`` seconds while the handler runs;
    ``wait`` is how long one take long-polls for work; ``model_version`` is sent with every
    result; ``timeout`` is the seconds to wait for the broker to answer a request.
    """

    def __init__(
        self,
        url: str,
        token: str | None = None,
        queue: str | Sequence[str] = "default",
        *,
        worker_id: str | None = None,
        lease: int = 60,
        wait: int = 20,
        model_version: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"broker URL must start with http:// or https://, got {url!r}")
        if not 1 <= lease <= 3600:
            raise ValueError(f"lease must be 1-3600 seconds, got {lease}")
        if wait < 0:
            raise ValueError(f"wait must be >= 0 seconds, got {wait}")
        self.url = url.rstrip("/")
        self.queue = queue if isinstance(queue, str) else ",".join(queue)
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}"
        self.lease = lease
        self.wait = wait
        self.model_version = model_version
        self.timeout = timeout
        self._session = make_session(token)
        # Heartbeats run on their own thread; a Session is not meant to be shared across
        # threads, and a missed beat is simply retried at the next tick.
        self._heartbeat_session = make_session(token, retries=0)
        self._stopping = threading.Event()

    def __repr__(self) -> str:
        return f"Worker({self.url!r}, queue={self.queue!r}, worker_id={self.worker_id!r})"

    def __enter__(self) -> Worker:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Release the pooled connections."""
        self._session.close()
        self._heartbeat_session.close()

    @property
    def stopping(self) -> bool:
        """Whether ``stop()`` was called and ``run`` has not yet returned."""
        return self._stopping.is_set()

    def stop(self) -> None:
        """Ask ``run`` to return once the task in hand is done (or the current poll ends).

        Safe to call from any thread and from a signal handler.
        """
        self._stopping.set()

    def run(self, handler: Handler, *, max_tasks: int | None = None) -> None:
        """Take and handle tasks until ``stop()`` is called or ``max_tasks`` were handled.

        ``handler`` gets each payload decoded (JSON -> object, text -> str, else bytes) and
        its return value is posted as the result. An exception in the handler becomes the
        task's failure and the loop goes on; a broker that is away is retried with backoff,
        forever. Raises the ``APIError`` of a take that retrying cannot fix (``AuthError``,
        ``BadRequest``, ``NotFound``).
        """
        logger.info("worker %s started: broker %s, queue %s", self.worker_id, self.url, self.queue)
        handled = 0
        backoff = Backoff(base=0.5, cap=30.0)
        try:
            while not self.stopping and (max_tasks is None or handled < max_tasks):
                for task in self._poll(backoff):
                    self._handle(task, handler)
                    handled += 1
        finally:
            self._stopping.clear()
            logger.info("worker %s stopped after %d task(s)", self.worker_id, handled)

    def _sleep(self, seconds: float) -> None:
        """Wait ``seconds``, or less if ``stop()`` is called meanwhile."""
        self._stopping.wait(seconds)

    def _poll(self, backoff: Backoff) -> list[TakenTask]:
        """One take; an empty list when there was no work or the broker is away."""
        try:
            tasks = self._take()
        except (BrokerUnavailable, ProtocolError) as exc:
            delay = backoff.next_delay()
            logger.warning("cannot take tasks (%s); retrying in %.1f s", exc, delay)
            self._sleep(delay)
            return []
        backoff.reset()
        return tasks

    def _take(self) -> list[TakenTask]:
        params = {
            "queue": self.queue,
            "max_tasks": 1,
            "wait": self.wait,
            "lease": self.lease,
            "worker_id": self.worker_id,
        }
        response = send(
            self._session,
            "POST",
            task_url(self.url, "getnexttask"),
            params=params,
            timeout=self.timeout + self.wait,
        )
        if response.status_code == 204:
            return []
        raise_for_error(response)
        return taken_tasks(response)

    def _handle(self, task: TakenTask, handler: Handler) -> None:
        started = time.monotonic()
        url = task_url(self.url, "tasks", task.id, "heartbeat")
        beat = Heartbeat(
            self._heartbeat_session, url, task.lease_id, lease=self.lease, timeout=self.timeout
        )
        with beat:
            outcome = self._execute(task, handler)
            if beat.lost:
                logger.warning("task %s: %s; dropping its result", task.id, beat.reason)
                verdict = "dropped"
            else:
                verdict = self._deliver(task, outcome, beat)
        kind = "failed" if _is_error(outcome) else "succeeded"
        elapsed = time.monotonic() - started
        logger.debug(
            "task %s (queue %s, attempt %d) %s, result %s in %.3f s",
            *(task.id, task.queue, task.attempt, kind, verdict, elapsed),
        )

    def _execute(self, task: TakenTask, handler: Handler) -> Encoded:
        """The body to post for ``task``: the encoded result, or an error document."""
        try:
            payload = task.payload()
        except ValueError as exc:
            # The payload will not decode on any attempt: retrying cannot help.
            return error_document(exc, retryable=False)
        try:
            return encode(handler(payload))
        except Exception as exc:
            logger.warning("task %s: handler raised %s: %s", task.id, type(exc).__name__, exc)
            return error_document(exc)

    def _deliver(self, task: TakenTask, outcome: Encoded, beat: Heartbeat) -> str:
        """Post ``outcome``, retrying while the broker is away and the lease lasts.

        Returns what happened, for the log: posted, dropped, refused or undelivered.
        """
        backoff = Backoff(base=0.5, cap=30.0)
        while True:
            try:
                self._put(task, outcome)
                return "posted"
            except Conflict as exc:
                logger.warning("task %s: result refused, lease lost (%s)", task.id, exc)
                return "dropped"
            except PayloadTooLarge as exc:
                if _is_error(outcome):
                    logger.error("task %s: error document refused: %s", task.id, exc)
                    return "refused"
                # Posting the same result again cannot succeed; fail the task with the reason.
                outcome = error_document(exc, retryable=False)
            except BrokerUnavailable as exc:
                if self.stopping or time.monotonic() >= beat.deadline:
                    logger.error("task %s: result not delivered: %s", task.id, exc)
                    return "undelivered"
                delay = backoff.next_delay()
                logger.warning(
                    "task %s: cannot post result (%s); retry in %.1f s", task.id, exc, delay
                )
                self._sleep(delay)
            except APIError as exc:
                logger.error("task %s: result refused: %s", task.id, exc)
                return "refused"

    def _put(self, task: TakenTask, outcome: Encoded) -> None:
        headers = {"Content-Type": outcome.content_type, "X-Inferbox-Lease-Id": task.lease_id}
        if self.model_version:
            headers["X-Inferbox-Model-Version"] = self.model_version
        response = send(
            self._session,
            "POST",
            task_url(self.url, "puttaskresult", task.id),
            data=outcome.body,
            headers=headers,
            timeout=self.timeout,
        )
        raise_for_error(response)
