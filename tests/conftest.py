"""Shared fixtures: a movable clock, fake and real Redis.

Real-Redis tests use ``INFERBOX_TEST_REDIS_URL`` (default ``redis://127.0.0.1:6379/15``), flushed
before and after each test. Without a reachable Redis they skip with the reason, except under
``CI=true``, where they fail: CI must never pass by skipping them.
"""

from __future__ import annotations

import os

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
