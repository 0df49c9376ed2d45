"""A broker serving the v0 endpoints over real HTTP (gunicorn on a loopback port, the test Redis
database), configured as a takeover of an original function app: one function key per function,
as the original had, all of them compat keys, next to native client, worker and admin tokens.

``v0_broker`` starts one with file:// storage; ``start_v0_broker`` starts one with other settings
(a short compat lease, Azure storage on Azurite, ...). Each test starts from an empty database.
"""

from __future__ import annotations

import base64
import hashlib
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.azurite import azure_container, azure_env, azurite  # noqa: F401 - fixtures
from tests.conftest import REDIS_URL
from tests.integration.conftest import ROOT, child_env, free_port


def _function_key(function: str) -> str:
    """A key shaped like the portal's (40 bytes of base64, with '/' or '+' to URL-quote)."""
    digest = hashlib.sha256(function.encode()).digest()
    return base64.b64encode(digest + hashlib.sha256(digest).digest()[:8]).decode()


# One key per function, as the original's function URLs carried.
KEY_PREDICT, KEY_NEXT, KEY_PUT, KEY_RESULT = map(
    _function_key, ("predict_v0", "getnexttask_v0", "puttaskresult_v0", "getresult_v0")
)
COMPAT_KEYS = (KEY_PREDICT, KEY_NEXT, KEY_PUT, KEY_RESULT)
CLIENT_TOKEN, OTHER_CLIENT_TOKEN, WORKER_TOKEN, ADMIN_TOKEN = "c-1", "c-2", "w-1", "a-1"
SENTINEL = "dGFza19pZCBub3QgZm91bmQh"


@dataclass
class V0Broker:
    url: str
    process: subprocess.Popen
    data: Path

    def function_url(self, name: str, key: str) -> str:
        """A function URL as the original's portal handed it out: ``?code=`` and all."""
        return f"{self.url}/api/{name}?code={requests.utils.quote(key, safe='')}"

    @property
    def predict_url(self) -> str:
        return self.function_url("predict_v0", KEY_PREDICT)

    @property
    def getnexttask_url(self) -> str:
        return self.function_url("getnexttask_v0", KEY_NEXT)

    @property
    def puttaskresult_url(self) -> str:
        return self.function_url("puttaskresult_v0", KEY_PUT)

    @property
    def getresult_url(self) -> str:
        return self.function_url("getresult_v0", KEY_RESULT)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


StartBroker = Callable[..., V0Broker]


def wait_until_healthy(url: str, process: subprocess.Popen, timeout: float = 60) -> None:
    """Until /healthz answers 200. A worker still loading (the Azure SDK, a first storage
    connection) may hold a request for seconds on a busy machine: slow answers are waited for."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"broker exited with {process.returncode}")
        try:
            if requests.get(f"{url}/healthz", timeout=10).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"broker at {url} not healthy after {timeout}s")


@pytest.fixture
def start_v0_broker(real_redis, tmp_path: Path) -> Iterator[StartBroker]:
    started: list[V0Broker] = []

    def start(**settings: str) -> V0Broker:
        port = free_port()
        data = tmp_path / f"data-{len(started)}"
        env = child_env(**{
            "INFERBOX_REDIS_URL": REDIS_URL, "INFERBOX_STORAGE_URL": data.as_uri(),
            "INFERBOX_COMPAT_KEYS": ",".join(COMPAT_KEYS),
            "INFERBOX_CLIENT_TOKENS": f"{CLIENT_TOKEN},{OTHER_CLIENT_TOKEN}",
            "INFERBOX_WORKER_TOKENS": WORKER_TOKEN, "INFERBOX_ADMIN_TOKENS": ADMIN_TOKEN,
            "INFERBOX_WORKERS": "2", "INFERBOX_THREADS": "16", **settings,
        })  # fmt: skip
        process = subprocess.Popen(
            [sys.executable, "-m", "broker.cli", "--port", str(port), "--log-level", "WARNING"],
            cwd=ROOT, env=env,
        )  # fmt: skip
        broker = V0Broker(f"http://127.0.0.1:{port}", process, data)
        started.append(broker)
        wait_until_healthy(broker.url, process)
        return broker

    yield start
    for broker in started:
        broker.stop()


@pytest.fixture
def v0_broker(start_v0_broker: StartBroker) -> V0Broker:
    return start_v0_broker()
