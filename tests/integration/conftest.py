"""Real processes over real HTTP: a broker served by gunicorn on a loopback port, on the test
Redis database and ``file://`` storage, with workers as separate ``inferbox-worker`` processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from tests.conftest import REDIS_URL

ROOT = Path(__file__).resolve().parents[2]
CLIENT_TOKEN, OTHER_CLIENT_TOKEN, WORKER_TOKEN, ADMIN_TOKEN = "c-1", "c-2", "w-1", "a-1"

pytestmark = pytest.mark.redis


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_healthy(url: str, process: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"broker exited with {process.returncode}")
        try:
            if requests.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"broker at {url} not healthy after {timeout}s")


def child_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", **extra}
    return env


@dataclass
class Broker:
    url: str
    process: subprocess.Popen
    data: Path
    workers: list[subprocess.Popen] = field(default_factory=list)

    def spawn_worker(
        self, handler: str, *extra: str, worker_id: str, env: dict[str, str] | None = None
    ) -> subprocess.Popen:
        """A worker process; ``handler`` names a function of tests/integration/handlers.py
        ("" for none, when ``extra`` says what to serve, e.g. ``--keras``)."""
        named = ["--handler", f"tests.integration.handlers:{handler}"] if handler else []
        command = [sys.executable, "-m", "worker.cli", "--broker", self.url, "--token",
                   WORKER_TOKEN, *named, "--worker-id", worker_id, "--wait", "5",
                   *extra]  # fmt: skip
        process = subprocess.Popen(command, cwd=ROOT, env=child_env(**(env or {})))
        self.workers.append(process)
        return process

    def stop_workers(self) -> None:
        for process in self.workers:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.workers:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def launch_broker(
    data: Path, *, cwd: Path = ROOT, embedded: bool = False, **extra: str
) -> Broker:
    """A broker process (gunicorn) on a free loopback port, healthy; ``extra`` adds INFERBOX_*
    variables (``RETENTION="2"`` -> ``INFERBOX_RETENTION=2``). Stop it with ``stop_broker``."""
    port = free_port()
    settings = {
        "INFERBOX_REDIS_URL": "" if embedded else REDIS_URL,
        "INFERBOX_STORAGE_URL": f"file://{data}",
        "INFERBOX_CLIENT_TOKENS": f"{CLIENT_TOKEN},{OTHER_CLIENT_TOKEN}",
        "INFERBOX_WORKER_TOKENS": WORKER_TOKEN, "INFERBOX_ADMIN_TOKENS": ADMIN_TOKEN,
        "INFERBOX_WORKERS": "1" if embedded else "2", "INFERBOX_THREADS": "32",
        **{f"INFERBOX_{name}": value for name, value in extra.items()},
    }  # fmt: skip
    process = subprocess.Popen(
        [sys.executable, "-m", "broker.cli", "--port", str(port), "--log-level", "WARNING"],
        cwd=cwd, env=child_env(**settings),
    )
    server = Broker(f"http://127.0.0.1:{port}", process, data)
    try:
        wait_until_healthy(server.url, process)
    except BaseException:
        stop_broker(server)
        raise
    return server


def stop_broker(server: Broker, timeout: float = 20) -> None:
    server.stop_workers()
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
    try:
        server.process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


@pytest.fixture
def broker(real_redis, tmp_path) -> Iterator[Broker]:
    server = launch_broker(tmp_path / "data")
    try:
        yield server
    finally:
        stop_broker(server)
