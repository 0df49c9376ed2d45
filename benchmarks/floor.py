"""The latency floor: a trivial WSGI endpoint served by the broker's own gunicorn settings.

    python -m benchmarks.floor --port 8123

``broker.cli.gunicorn_options`` gives the worker class, threads, keep-alive and timeouts the
broker runs with; only the application differs (``POST /echo`` answers its body, ``GET
/healthz`` 200). Round trips to it, made by the SDK's own exchange code (``client_sdk.http``: a
session ``make_session`` settles for the server, each call through ``send``), are the least one
SDK exchange can cost on this machine.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterable
from typing import Any

import requests

from benchmarks.config import BROKER_PROCESSES, BROKER_THREADS
from client_sdk.http import json_document, make_session, raise_for_error, send


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """``POST`` answers its body as ``application/json``; anything else ``ok``."""
    if environ["REQUEST_METHOD"] == "POST":
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length)
    else:
        body = b"ok"
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])  # fmt: skip
    return [body]


def serve(port: int) -> None:
    from gunicorn.app.base import BaseApplication

    from broker.cli import gunicorn_options
    from broker.settings import Settings

    settings = Settings(port=port, workers=BROKER_PROCESSES, threads=BROKER_THREADS)

    class Server(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            for key, value in gunicorn_options(settings).items():
                if key in self.cfg.settings:
                    self.cfg.set(key, value)
            self.cfg.set("loglevel", "warning")

        def load(self) -> Any:
            return app

    Server().run()


def echo(session: requests.Session, url: str, payload: Any) -> Any:
    """One ``POST /echo`` exchange through the SDK's ``send``; the echoed document."""
    response = send(session, "POST", f"{url}/echo", json={"echo": payload}, timeout=30)
    raise_for_error(response)
    return json_document(response)["echo"]


def round_trips(url: str, groups: int, per_group: int) -> list[float]:
    """Seconds of each of ``groups`` runs of ``per_group`` sequential ``POST /echo`` round
    trips (small JSON bodies) over one keep-alive session."""
    timings = []
    with make_session(None, base_url=url) as session:
        for _ in range(20):  # warm-up: connection open, code paths hot
            echo(session, url, {"i": 0})
        for index in range(groups):
            started = time.perf_counter()
            for _ in range(per_group):
                echo(session, url, {"i": index})
            timings.append(time.perf_counter() - started)
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    serve(parser.parse_args().port)


if __name__ == "__main__":
    main()
