"""The HTTP server swapped: the floor's app and the broker under gunicorn, then under granian.

    python -m benchmarks.servers [--rounds 3] [--tasks 1500]

How much of the one-request-per-task gap to Celery (section 1 of ``benchmarks.run``) is the
HTTP server's? Each round starts, times and stops, for each server in turn (the order swapped
every round): the trivial app of the latency floor (``benchmarks.floor.app``, 4 round trips a
task) and the broker in the form section 1 runs it (``BROKER_PROCESSES`` x ``BROKER_THREADS``,
the benchmark Redis, ``file://`` storage on disk, ``WORKER_PROCESSES`` ``inferbox-worker``
processes with ``--prefetch``), timed on submit + result and on ``predict?wait`` with
``CLIENT_THREADS`` client threads. gunicorn serves with ``broker.cli.gunicorn_options``, the
production configuration; granian (a server written in Rust, in the ``bench`` extra) with its
own defaults but the same processes and threads (``workers``, ``blocking_threads``), no access
log, and no SIGTERM hooks (nothing here stops a server with requests in flight).

Prints a Markdown table: tasks/s (median of the rounds, slowest and fastest), CPU ms a task
(the client; the servers, the broker's processes and its workers; Redis), and granian's rate
over gunicorn's (the median of the rounds' ratios). Not part of ``benchmarks.run``: a
measurement of the alternative, not of inferbox as it ships.

    python -m benchmarks.servers serve --port 8123 [--app floor]

serves the broker (settings from ``INFERBOX_*``, as ``inferbox-broker serve``), or the
floor's app, under granian: what the rounds start.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from dataclasses import replace

from flask import Flask

from benchmarks import systems, variants
from benchmarks.config import FULL, Sizes
from benchmarks.e2e import Throughput
from benchmarks.variants import System
from broker.cli import serving_app
from broker.settings import Settings

GRANIAN_FLOOR = ("-m", "benchmarks.servers", "serve", "--app", "floor")
GRANIAN_BROKER = "benchmarks.servers"
SERVERS = ("gunicorn", "granian")


def broker_app() -> Flask:
    """The broker's app as each of granian's processes loads it: what ``inferbox-broker serve``
    loads after gunicorn's fork."""
    return serving_app(Settings.from_env())


def serve(port: int, target: str) -> None:
    from granian import Granian
    from granian.constants import Interfaces

    settings = Settings.from_env()
    factory = target == "broker"
    Granian("benchmarks.servers:broker_app" if factory else "benchmarks.floor:app",
            address="127.0.0.1", port=port, interface=Interfaces.WSGI, factory=factory,
            workers=settings.workers, blocking_threads=settings.threads,
            log_enabled=False).serve()  # fmt: skip


def systems_of(server: str) -> list[System]:
    """The floor's app and the broker (one request per task), served by ``server``."""
    if server == "gunicorn":
        return [lambda: systems.http_floor((4,)), lambda: systems.inferbox(1)]
    return [lambda: systems.http_floor((4,), GRANIAN_FLOOR),
            lambda: systems.inferbox(1, module=GRANIAN_BROKER)]


def measure(sizes: Sizes) -> list[Throughput]:
    return variants.measure(sizes, {server: systems_of(server) for server in SERVERS})


def table(rows: list[Throughput]) -> str:
    """A row per server and system, with its rate over gunicorn's for the same system."""
    return variants.table(rows, baseline="gunicorn", label="server")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", nargs="?", choices=["serve"])
    parser.add_argument("--port", type=int)
    parser.add_argument("--app", choices=["broker", "floor"], default="broker")
    parser.add_argument("--log-level", help="accepted for inferbox-broker's command line")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tasks", type=int, default=1500, help="timed tasks a round")
    args = parser.parse_args(argv)
    if args.command == "serve":
        if args.port is None:
            parser.error("serve needs --port")
        serve(args.port, args.app)
        return 0
    if importlib.util.find_spec("granian") is None:
        parser.error("granian is not installed: pip install -e '.[bench]'")
    sizes = replace(FULL, rounds=args.rounds, throughput_tasks=args.tasks * args.rounds)
    print(f"`python -m benchmarks.servers --rounds {args.rounds} --tasks {args.tasks}`"
          f" ({os.cpu_count()} cores)\n")
    print(table(measure(sizes)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
