"""The broker or a worker with timers around the steps of a task's path (``benchmarks.path``).

    INFERBOX_BENCH_TRACE_DIR=/tmp/t python -m benchmarks.tracing serve --port 8123
    INFERBOX_BENCH_TRACE_DIR=/tmp/t python -m benchmarks.tracing worker --broker URL ...

Runs ``broker.cli.main`` (any arguments but a first ``worker``) or ``worker.cli.main``
unchanged, with each function of ``STEPS``
wrapped so that every call records its wall-clock start and end (``time.time()``: one clock
for every process of the machine) and a name. In the broker the wrappers go in after the fork,
in each gunicorn worker. Each process rewrites ``<dir>/<pid>.txt`` twice a second, one
``start end name`` line per call.
"""

from __future__ import annotations

import functools
import importlib
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# (module, class, its functions): the steps timed in each kind of process
STEPS: dict[str, list[tuple[str, str, tuple[str, ...]]]] = {
    "broker": [
        ("broker.mailbox", "Mailbox", ("submit", "complete", "complete_many")),
        ("broker.queue", "TaskQueue", ("submit", "take", "get", "complete", "complete_many")),
        ("broker.notify", "Notifier", ("_dispatch",)),
        ("storage.file", "FileStore", ("_put", "_get")),
    ],
    "worker": [
        ("worker.api", "BrokerAPI", ("take", "put", "put_many")),
        ("worker.pipeline", "Run", ("_hold", "_compute", "_post")),
    ],
}
FLUSH_EVERY = 0.5  # seconds

_events: list[tuple[float, float, str]] = []


def _timed(function: Callable[..., Any], name: str) -> Callable[..., Any]:
    @functools.wraps(function)
    def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.time()
        try:
            return function(*args, **kwargs)
        finally:
            _events.append((started, time.time(), name))

    return timed


def install(kind: str, folder: Path) -> None:
    """Wrap the ``kind``'s steps (and, in the broker, each HTTP request) and start writing."""
    for module_name, class_name, function_names in STEPS[kind]:
        owner = getattr(importlib.import_module(module_name), class_name)
        for name in function_names:
            setattr(owner, name, _timed(getattr(owner, name), f"{class_name}.{name}"))
    if kind == "broker":
        from flask import Flask
        from werkzeug.wsgi import ClosingIterator

        serve = Flask.wsgi_app

        def wsgi_app(app: Flask, environ: dict[str, Any], start_response: Any) -> Any:
            started, path = time.time(), _route(environ.get("PATH_INFO", ""))
            try:
                body = serve(app, environ, start_response)
            finally:
                returned = time.time()
                _events.append((started, returned, f"HTTP {path}"))
            # the server sends the body after the view returns, then closes it
            return ClosingIterator(body, lambda: _events.append((returned, time.time(),
                                                                 f"HTTP sent {path}")))

        Flask.wsgi_app = wsgi_app  # type: ignore[method-assign,assignment]
    threading.Thread(target=_flush_loop, args=(folder,), name="bench-trace", daemon=True).start()


def _route(path: str) -> str:
    """``/tasks/<id>/heartbeat`` for ``/tasks/3kq…/heartbeat``: a request's path with its
    second segment (a task id, in every route that has one) named, so that the same step of
    every task has one name."""
    segments = path.split("/")  # ["", "tasks", "3kq…", "heartbeat"]
    if len(segments) > 2 and segments[2]:
        segments[2] = "<id>"
    return "/".join(segments)


def _flush_loop(folder: Path) -> None:
    output = folder / f"{os.getpid()}.txt"
    while True:
        time.sleep(FLUSH_EVERY)
        output.write_text("".join(f"{start:.6f} {end:.6f} {name}\n"
                                  for start, end, name in list(_events)))  # fmt: skip


def main() -> int:
    folder = Path(os.environ["INFERBOX_BENCH_TRACE_DIR"])
    if sys.argv[1:2] == ["worker"]:
        from worker.cli import main as worker_main

        install("worker", folder)
        return worker_main(sys.argv[2:])
    from broker.cli import main as broker_main

    os.register_at_fork(after_in_child=lambda: install("broker", folder))
    return broker_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
