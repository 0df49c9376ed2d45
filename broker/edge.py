"""``inferbox-edge``: a whole inference box in one command, with no services and no network.

::

    inferbox-edge --data /var/lib/inferbox --queue digits \\
                  --handler worker.examples.digits:predict -- --batch-size 8

It runs the broker on the embedded default (the index in the broker process, payloads and
results as files under ``--data``), on loopback unless ``--host`` says otherwise, and
``--workers`` worker processes (1) serving ``--handler`` on ``--queue``; the arguments after
``--`` go to every worker (``--keras model.keras``, ``--batch-size``, ``--model-version`` ...).
Every ``INFERBOX_*`` variable reaches both, as each reads it. The workers get a token from
``INFERBOX_TOKEN``, else the first of ``INFERBOX_WORKER_TOKENS`` or ``INFERBOX_ADMIN_TOKENS``.

It supervises the processes it starts: a worker that exits is started again (after 1 s, doubling
up to 30 s while it keeps dying young); when the broker exits, the workers are stopped and the
command exits with status 1, for the service manager to start the box again. SIGTERM or Ctrl-C
stops the workers first — each hands back the tasks it has not finished — then the broker, and
exits 0. Queued tasks wait on disk meanwhile; see docs/deployment.md for what the box needs.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import requests

from .errors import SettingsError
from .settings import Settings

log = logging.getLogger("inferbox.edge")

RESTART_DELAY, MAX_RESTART_DELAY, YOUNG = 1.0, 30.0, 10.0  # seconds
STOP_TIMEOUT = 90.0  # a worker finishing its batch and handing back the rest


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="inferbox-edge", usage="%(prog)s [options] [-- worker options]",
        description="Run the broker and supervised model workers on one machine, with no "
        "services and no network. Arguments after -- go to every worker.")  # fmt: skip
    add = parser.add_argument
    add("--data", type=Path, help="folder of payloads and results (INFERBOX_STORAGE_URL, "
        "default ./inferbox-data)")
    add("--queue", help="queue the workers serve (INFERBOX_QUEUE, default 'default')")
    add("--handler", help="module:function the workers run (INFERBOX_HANDLER)")
    add("--workers", type=int, default=1, help="worker processes (1)")
    add("--host", help="address the broker binds (INFERBOX_HOST, default 127.0.0.1)")
    add("--port", type=int, help="broker port (INFERBOX_PORT, default 8000)")
    add("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING"])
    return parser


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    """(the box's options, the arguments after ``--`` for the workers)."""
    argv = list(argv)
    split = argv.index("--") if "--" in argv else len(argv)
    args = _parser().parse_args(argv[:split])
    if args.workers < 1:
        _parser().error("--workers must be at least 1")
    return args, argv[split + 1:]


@dataclass
class Box:
    """The commands and environments of the broker and the workers, from options and env."""

    broker: list[str]
    worker: list[str]
    broker_env: dict[str, str]
    worker_env: dict[str, str]
    url: str
    workers: int

    @classmethod
    def plan(cls, args: argparse.Namespace, extra: list[str], environ: Mapping[str, str]) -> Box:
        env = dict(environ)
        if args.data is not None:
            env["INFERBOX_STORAGE_URL"] = args.data.resolve().as_uri()
        for name, value in (("HOST", args.host), ("PORT", args.port)):
            if value is not None:
                env[f"INFERBOX_{name}"] = str(value)
        settings = Settings.from_env(env)  # checked once here, as the broker will read it
        handler = args.handler or env.get("INFERBOX_HANDLER")
        if not handler and not extra:
            raise SettingsError("say what the workers run: --handler module:function (or "
                                "INFERBOX_HANDLER), or worker options after --, e.g. --keras")
        url = f"http://127.0.0.1:{settings.port}"
        worker = [sys.executable, "-m", "worker.cli", "--broker", url, "--queue",
                  args.queue or env.get("INFERBOX_QUEUE") or "default",
                  *(["--handler", handler] if handler else []), *extra]  # fmt: skip
        worker_env = {**env, "PYTHONUNBUFFERED": "1"}
        token = env.get("INFERBOX_TOKEN") or next(
            iter(settings.worker_tokens + settings.admin_tokens), None)
        if token:
            worker_env["INFERBOX_TOKEN"] = token
        elif settings.has_tokens:
            raise SettingsError("the broker has tokens: give the workers one (INFERBOX_TOKEN)")
        broker = [sys.executable, "-m", "broker.cli", "serve", "--log-level", args.log_level]
        return cls(broker, worker, {**env, "PYTHONUNBUFFERED": "1"}, worker_env, url,
                   args.workers)  # fmt: skip


@dataclass
class _Slot:
    """One worker process and when it may be started again."""

    process: subprocess.Popen | None = None
    started: float = 0.0
    delay: float = RESTART_DELAY
    not_before: float = field(default=0.0)


def main(argv: Sequence[str] | None = None) -> int:
    args, extra = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=args.log_level,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        box = Box.plan(args, extra, os.environ)
    except SettingsError as exc:
        print(f"inferbox-edge: {exc}", file=sys.stderr)
        return 2
    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()  # only a flag: raising here could cut a child's start in half

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return run(box, stopping)


def run(box: Box, stopping: threading.Event) -> int:
    """Serve until ``stopping`` is set (0) or the broker exits (1); stop everything after."""
    # Each child in its own session: a Ctrl-C in the terminal reaches this process only, which
    # stops the workers before the broker (gunicorn would take SIGINT for a quick exit).
    broker = subprocess.Popen(box.broker, env=box.broker_env, start_new_session=True)
    slots = [_Slot() for _ in range(box.workers)]
    try:
        if _wait_healthy(box.url, broker, stopping):
            log.info("edge box up: broker on %s, %d worker(s)", box.url, box.workers)
        while broker.poll() is None and not stopping.is_set():
            for index, slot in enumerate(slots):
                _tend(box, slot, index)
            stopping.wait(0.2)
        if stopping.is_set():
            log.info("stopping: workers first, then the broker")
            return 0
        log.error("the broker exited with %s; stopping the workers", broker.returncode)
        return 1
    except RuntimeError as exc:
        log.error("%s", exc)
        return 1
    finally:
        _stop([slot.process for slot in slots if slot.process is not None], STOP_TIMEOUT)
        _stop([broker], 30.0)


def _tend(box: Box, slot: _Slot, index: int) -> None:
    """Start the slot's worker, or start it again once it exited and its delay passed."""
    now = time.monotonic()
    if slot.process is not None and slot.process.poll() is None:
        return
    if slot.process is not None:
        log.warning("worker %d exited with %s; starting it again in %.0f s", index,
                    slot.process.returncode, slot.delay)  # fmt: skip
        young = now - slot.started < YOUNG
        slot.not_before = now + slot.delay
        slot.delay = min(slot.delay * 2, MAX_RESTART_DELAY) if young else RESTART_DELAY
        slot.process = None
    if now >= slot.not_before:
        slot.process = subprocess.Popen(box.worker, env=box.worker_env, start_new_session=True)
        slot.started = now


def _wait_healthy(url: str, broker: subprocess.Popen, stopping: threading.Event,
                  timeout: float = 60.0) -> bool:  # fmt: skip
    """True once the broker answers; False if told to stop first; RuntimeError if it fails."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not stopping.is_set():
        if broker.poll() is not None:
            raise RuntimeError(f"the broker exited with {broker.returncode} while starting")
        try:
            if requests.get(f"{url}/healthz", timeout=2).status_code == 200:
                return True
        except requests.RequestException:
            pass
        stopping.wait(0.2)
    if stopping.is_set():
        return False
    raise RuntimeError(f"the broker at {url} was not healthy after {timeout:.0f} s")


def _stop(processes: list[subprocess.Popen], timeout: float) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for process in processes:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


if __name__ == "__main__":
    sys.exit(main())
