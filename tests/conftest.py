"""Shared fixtures: a movable clock, fake and real Redis.

Real-Redis tests use ``INFERBOX_TEST_REDIS_URL`` (default ``redis://127.0.0.1:6379/15``), flushed
before and after each test. Without a reachable Redis they skip with the reason, except under
``CI=true``, where they fail: CI must never pass by skipping them.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import fakeredis
import pytest
import redis

REDIS_URL = os.environ.get("INFERBOX_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


class FakeClock:
    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def connect_real_redis() -> redis.Redis:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.RedisError as exc:
        message = f"no Redis at {REDIS_URL} ({exc}); set INFERBOX_TEST_REDIS_URL"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message + " — CI=true requires it", pytrace=False)
        pytest.skip(message)
    return client


@pytest.fixture
def real_redis():
    client = connect_real_redis()
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture(params=["fakeredis", pytest.param("redis", marks=pytest.mark.redis)])
def any_redis(request):
    """The same test on fakeredis (the embedded default) and on a real Redis server."""
    if request.param == "fakeredis":
        yield fakeredis.FakeRedis(server=fakeredis.FakeServer())
    else:
        yield request.getfixturevalue("real_redis")


def chromium_path() -> str:
    """Debian's Chromium (``INFERBOX_CHROMIUM`` or ``CHROMIUM`` names another); skips without one,
    fails under ``CI=true``."""
    candidates = [os.environ.get("INFERBOX_CHROMIUM", ""), os.environ.get("CHROMIUM", ""),
                  "/usr/bin/chromium", shutil.which("chromium") or ""]  # fmt: skip
    for path in candidates:
        if path and Path(path).exists():
            return path
    message = "no Chromium: apt-get install chromium (or set INFERBOX_CHROMIUM)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message + " — CI=true requires it", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    """One headless Chromium for the whole run, driven by playwright (one sync_playwright per
    process: a second one inside the first's event loop would fail)."""
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
