"""A real headless Chromium (Debian's ``chromium``, driven by playwright) against a broker served
by gunicorn on a loopback port, on the test Redis database.

Screenshots go to ``test-artifacts/`` at the repository root (CI keeps them). Chromium comes from
``INFERBOX_CHROMIUM`` or ``/usr/bin/chromium``; without it the tests skip, except under
``CI=true``, where they fail.
"""

from __future__ import annotations

import os
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


def chromium_path() -> str:
    path = os.environ.get("INFERBOX_CHROMIUM", "/usr/bin/chromium")
    if not Path(path).exists():
        message = f"no Chromium at {path}: apt-get install chromium (or set INFERBOX_CHROMIUM)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message + " — CI=true requires it", pytrace=False)
        pytest.skip(message)
    return path


@pytest.fixture(scope="module")  # closed before tests/compat opens its own playwright
def browser() -> Iterator[object]:
    playwright_api = pytest.importorskip("playwright.sync_api")
    executable = chromium_path()
    with playwright_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=executable, headless=True,
            args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
        )  # fmt: skip
        try:
            yield chromium
        finally:
            chromium.close()


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
