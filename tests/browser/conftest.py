"""A real headless Chromium (Debian's ``chromium``, driven by playwright) against a broker served
by gunicorn on a loopback port, on the test Redis database.

Screenshots go to ``test-artifacts/`` at the repository root (CI keeps them). The ``browser``
fixture (tests/conftest.py) finds Chromium; without it the tests skip, except under ``CI=true``.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REDIS_URL
from tests.integration.conftest import (
    ADMIN_TOKEN,
    CLIENT_TOKEN,
    ROOT,
    WORKER_TOKEN,
    Broker,
    child_env,
    free_port,
    wait_until_healthy,
)

ARTIFACTS = ROOT / "test-artifacts"

pytestmark = [pytest.mark.redis, pytest.mark.browser]


@pytest.fixture
def page(browser) -> Iterator[object]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(30_000)
    try:
        yield page
    finally:
        context.close()


@pytest.fixture
def screenshot(page):
    """``screenshot("name")`` saves the page to test-artifacts/<name>.png."""
    ARTIFACTS.mkdir(exist_ok=True)

    def take(name: str) -> Path:
        path = ARTIFACTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return take


@pytest.fixture
def web_broker(real_redis, tmp_path) -> Iterator[Broker]:
    port = free_port()
    data = tmp_path / "data"
    env = child_env(
        INFERBOX_REDIS_URL=REDIS_URL, INFERBOX_STORAGE_URL=f"file://{data}",
        INFERBOX_CLIENT_TOKENS=CLIENT_TOKEN, INFERBOX_WORKER_TOKENS=WORKER_TOKEN,
        INFERBOX_ADMIN_TOKENS=ADMIN_TOKEN, INFERBOX_THREADS="16",
    )  # fmt: skip
    process = subprocess.Popen(
        [sys.executable, "-m", "broker.cli", "--port", str(port), "--workers", "2",
         "--log-level", "WARNING"], cwd=ROOT, env=env,
    )  # fmt: skip
    server = Broker(f"http://127.0.0.1:{port}", process, data)
    try:
        wait_until_healthy(server.url, process)
        yield server
    finally:
        server.stop_workers()
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
