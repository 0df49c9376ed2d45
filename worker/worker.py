"""The worker: take tasks, run the handler on them, post what it returned.

::

    from worker import Worker

    def predict(payload):              # the decoded payload: object, str, bytes or array
        return {"label": "cat"}        # JSON, str, bytes, a numpy array or a PIL image

    Worker("http://localhost:8000", token="...", queue="images").run(predict)

``run`` blocks (a live progress line in a notebook or a terminal) until ``stop()``, Ctrl-C or a
notebook interrupt: then nothing new is taken, finished results are posted and every other task
in hand goes straight back to its queue for another worker. ``start()`` runs the same loop in a
background thread instead. How the handler is called (batches, raw bytes, PNG results, a
context for progress and cancellation) is described in ``worker.handler``; the threads that
keep the model busy in ``worker.pipeline``.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import os
import socket
import threading
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from worker.handler import ERROR_CONTENT_TYPE, Handler, error_document, resolve
from worker.pipeline import Run
from worker.stats import Stats, progress_wanted

__all__ = ["ERROR_CONTENT_TYPE", "Handler", "Worker", "default_model_version", "error_document"]

logger = logging.getLogger("inferbox.worker")

MAX_PREFETCH = 16  # batches held ahead of the model, at most


class Worker:
    """A pull-based worker for one broker and one or more queues.

    ``queue`` is a name or a sequence of names (taken in that order); ``worker_id`` is
    recorded on the tasks (default ``<hostname>-<pid>``); ``lease`` is the lease length in
    seconds, renewed by heartbeats while the task is in hand; ``wait`` is how long one take
    long-polls for work; ``batch_size`` how many tasks one take asks for (and one batch
    handler call gets); ``pipeline`` whether the next batch is fetched and the last one posted
    while the model works; ``prefetch`` how many batches the pipeline may hold taken ahead of
    the one the model is working on (1-16; several are taken in one request when the queue has
    them, and finished ones waiting are posted together); ``model_version`` is stored with
    every result (default: a hash of the handler's model file or module); ``timeout`` is the
    seconds to wait for the broker to answer a request; ``cancel_poll`` how often (seconds)
    the worker asks the broker whether a task the handler is working on was canceled.
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
        batch_size: int = 1,
        pipeline: bool = True,
        prefetch: int = 1,
        model_version: str | None = None,
        timeout: float = 30.0,
        cancel_poll: float = 2.0,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"broker URL must start with http:// or https://, got {url!r}")
        if not 1 <= lease <= 3600:
            raise ValueError(f"lease must be 1-3600 seconds, got {lease}")
        if wait < 0:
            raise ValueError(f"wait must be >= 0 seconds, got {wait}")
        if not 1 <= batch_size <= 100:
            raise ValueError(f"batch_size must be 1-100, got {batch_size}")
        if not 1 <= prefetch <= MAX_PREFETCH:
            raise ValueError(f"prefetch must be 1-{MAX_PREFETCH}, got {prefetch}")
        self.url = url.rstrip("/")
        self.token = token
        self.queue = queue if isinstance(queue, str) else ",".join(queue)
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}"
        self.lease = lease
        self.wait = wait
        self.batch_size = batch_size
        self.pipeline = pipeline
        self.prefetch = prefetch
        self.model_version = model_version
        self.timeout = timeout
        self.cancel_poll = cancel_poll
        self._stopping = threading.Event()
        self._run: Run | None = None
        self._thread: threading.Thread | None = None
        self._last_stats = Stats()
        self._failure: BaseException | None = None

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
        """Stop a background run, if any, and wait for it to hand back its tasks."""
        if self._thread is not None:
            self.stop()

    @property
    def stopping(self) -> bool:
        """Whether ``stop()`` was called and ``run`` has not yet returned."""
        return self._stopping.is_set()

    @property
    def running(self) -> bool:
        return self._run is not None

    @property
    def stats(self) -> Stats:
        """Counters of the current run (or of the last one): done, failed, rate, model busy."""
        run = self._run
        return run.stats.snapshot() if run is not None else self._last_stats.snapshot()

    def stop(self, *, wait: bool = True) -> None:
        """Stop taking tasks; the batch in the handler is finished and posted, tasks not yet
        started go back to the queue. Safe from any thread and from a signal handler.

        For a run started with ``start()``, waits (``wait=True``) until it has handed back its
        tasks; raises what ended the background run, if it was an error.
        """
        self._stopping.set()
        run = self._run
        if run is not None:
            run.stopped.set()
        thread = self._thread
        if wait and thread is not None and thread is not threading.current_thread():
            thread.join()
            self._thread = None
            failure, self._failure = self._failure, None
            if failure is not None:
                raise failure

    def run(
        self, handler: Handler, *, max_tasks: int | None = None, batched: bool | None = None,
        raw: bool | None = None, result_type: str | None = None, progress: bool | None = None,
    ) -> Stats:  # fmt: skip
        """Take and handle tasks until ``stop()``, an interrupt, or ``max_tasks`` were handled.

        ``handler`` gets each payload decoded by its Content-Type (JSON -> object, text -> str,
        .npy and images -> numpy array, else bytes), or a batch of them (see
        ``worker.handler`` for ``batched``, ``raw`` and ``result_type``); what it returns is
        posted as the result. An exception in the handler fails that task and the loop goes
        on; a broker that is away is retried with backoff, forever. ``progress`` shows a live
        line (default: in a notebook or on a terminal).

        Ctrl-C or a notebook interrupt ends the run cleanly: the interrupted batch and those
        not yet started go back to the queue at once, and ``run`` returns (its stats say
        ``interrupted``). Returns the run's ``Stats``. Raises the ``APIError`` of a take that
        retrying cannot fix (``AuthError``, ``BadRequest``, ``NotFound``).
        """
        spec = resolve(handler, batch_size=self.batch_size, batched=batched, raw=raw,
                       result_type=result_type)  # fmt: skip
        version = self.model_version or default_model_version(handler)
        if progress is None:
            progress = progress_wanted()
        run = Run(self, spec, max_tasks=max_tasks, progress=progress, model_version=version)
        self._run = run
        if self._stopping.is_set():
            run.stopped.set()
        logger.info("worker %s started: broker %s, queue %s, batch size %d, model %s",
                    self.worker_id, self.url, self.queue, self.batch_size, version)  # fmt: skip
        try:
            return run.run()
        finally:
            self._last_stats = run.stats
            self._run = None
            self._stopping.clear()
            logger.info("worker %s stopped: %s", self.worker_id, run.stats.summary())

    def start(self, handler: Handler, **options: Any) -> Worker:
        """Run in a background thread (same options as ``run``, no progress line by default);
        the notebook stays free. ``stop()`` ends it."""
        if self._thread is not None and self._thread.is_alive():
            raise RuntimeError("this worker is already running; stop() it first")
        options.setdefault("progress", False)

        def target() -> None:
            try:
                self.run(handler, **options)
            except BaseException as exc:
                logger.error("background worker stopped: %s", exc)
                self._failure = exc

        self._stopping.clear()
        self._thread = threading.Thread(target=target, name="inferbox-worker", daemon=True)
        self._thread.start()
        return self

    def _sleep(self, seconds: float) -> None:
        """Wait ``seconds``, or less if ``stop()`` is called meanwhile."""
        self._stopping.wait(seconds)


def default_model_version(handler: Any) -> str:
    """``<name>@<12 hex>``: the handler's own ``model_version`` if it has one (the Keras
    adapter hashes its model file), else a hash of the source file of the handler's module
    (or of its code, for a function defined in a notebook)."""
    declared = getattr(handler, "model_version", None)
    if isinstance(declared, str) and declared:
        return declared
    target = handler if inspect.isfunction(handler) or inspect.ismethod(handler) else type(handler)
    name = getattr(target, "__qualname__", None) or type(handler).__name__
    module = inspect.getmodule(target)
    source_file = getattr(module, "__file__", None)
    if source_file and Path(source_file).is_file():
        digest = hashlib.sha256(Path(source_file).read_bytes()).hexdigest()
        name = module.__name__ if module is not None else name
    else:
        try:
            source = inspect.getsource(target).encode()
        except (OSError, TypeError):
            code = getattr(target, "__code__", None)
            source = code.co_code if code is not None else repr(target).encode()
        digest = hashlib.sha256(source).hexdigest()
    return f"{name}@{digest[:12]}"
