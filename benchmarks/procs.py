"""Starting and always stopping the processes a benchmark needs.

``Processes`` is a context manager: every process started through it is terminated (SIGTERM,
then SIGKILL after a grace period, whole process group) when the block ends, whether it ends
normally, by an exception or by Ctrl-C.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[1]


class StartError(RuntimeError):
    """A benchmark process did not come up."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def child_env(**extra: str) -> dict[str, str]:
    """This environment, with the repository importable and INFERBOX_* settings of the
    caller's shell removed (the benchmark sets the ones it means)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("INFERBOX_")}
    env.update(PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1", **extra)
    return env


def python() -> str:
    return sys.executable


LOG = Path(tempfile.gettempdir()) / "inferbox-bench.log"


class Processes:
    """The processes of one benchmark run; all stopped on exit. Their stderr goes to ``LOG``
    (appended), where a failed start can be read about."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()

    def start(self, command: Sequence[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        with LOG.open("ab") as log:
            process = subprocess.Popen(list(command), cwd=ROOT, env=env, start_new_session=True,
                                       stdout=log, stderr=log)  # fmt: skip
        self.started.append(process)
        return process

    def pids(self) -> list[int]:
        return [process.pid for process in self.started if process.poll() is None]

    def stop(self, process: subprocess.Popen[bytes], grace: float = 10.0) -> None:
        if process.poll() is None:
            _signal_group(process, signal.SIGTERM)
            try:
                process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                _signal_group(process, signal.SIGKILL)
                process.wait(timeout=10)
        _signal_group(process, signal.SIGKILL)  # stray children of a stopped leader

    def stop_all(self) -> None:
        while self.started:
            self.stop(self.started.pop())


def _signal_group(process: subprocess.Popen[bytes], signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signum)


def wait_http(url: str, process: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    """Wait until ``url`` answers 200; StartError if the process exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise StartError(f"{url}: the server exited with {process.returncode} (see {LOG})")
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise StartError(f"{url} did not answer within {timeout:.0f} s (see {LOG})")


def start_broker(procs: Processes, redis_url: str | None, storage_url: str, *, workers: int,
                 threads: int, module: str = "broker.cli",
                 **extra: str) -> tuple[str, subprocess.Popen[bytes]]:
    """``inferbox-broker serve`` (gunicorn gthread) on a loopback port; its base URL.
    ``redis_url`` None runs it on the embedded Redis (``workers`` must then be 1). ``module``
    may name a wrapper of ``broker.cli`` (``benchmarks.sampler``)."""
    port = free_port()
    if redis_url:
        extra["INFERBOX_REDIS_URL"] = redis_url
    env = child_env(INFERBOX_STORAGE_URL=storage_url, INFERBOX_WORKERS=str(workers),
                    INFERBOX_THREADS=str(threads), **extra)  # fmt: skip
    process = procs.start([python(), "-m", module, "serve", "--port", str(port),
                           "--log-level", "WARNING"], env)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/healthz", process)
    return url, process


def server_option(name: str, **settings: Any) -> Any:
    """What ``broker.cli.gunicorn_options`` sets ``name`` to for a broker of these settings, so
    the notes say what the servers ran with."""
    from broker.cli import gunicorn_options
    from broker.settings import Settings

    return gunicorn_options(Settings(**settings))[name]


def start_workers(procs: Processes, url: str, queue: str, handler: str, count: int,
                  *extra: str, launcher: Sequence[str] = ("-m", "worker.cli"),
                  **env: str) -> list[subprocess.Popen[bytes]]:  # fmt: skip
    """``count`` ``inferbox-worker`` processes serving ``handler`` on ``queue``. ``launcher``
    may name a wrapper of ``worker.cli`` (``benchmarks.tracing``); ``env`` is added to their
    environment."""
    command = [python(), *launcher, "--broker", url, "--queue", queue, "--handler", handler,
               "--wait", "5", "--progress", "off", "--log-level", "WARNING", "--model-version",
               "bench", *extra]  # fmt: skip
    return [procs.start(command, child_env(**env)) for _ in range(count)]


def server_pids(process: subprocess.Popen[bytes]) -> list[int]:
    """The serving (child) processes of a gunicorn master."""
    import psutil

    try:
        return [child.pid for child in psutil.Process(process.pid).children()]
    except psutil.NoSuchProcess:
        return []
