"""A notifier whose pub/sub connection dies wakes every waiter once it has subscribed again:
messages published while it was away are lost, so each waiter must look at the state itself."""

from __future__ import annotations

import time

import redis

from broker.notify import Notifier
from tests.conftest import REDIS_URL

NAME = "inferbox-notify-test"


def listener_id(real_redis: redis.Redis) -> str | None:
    """The id of the notifier's subscribed connection, once it has one."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for client in real_redis.client_list(_type="pubsub"):
            if client.get("name") == NAME:
                return client["id"]
        time.sleep(0.05)
    return None


def test_every_waiter_is_woken_after_the_listener_reconnects(real_redis) -> None:
    client = redis.Redis.from_url(REDIS_URL, client_name=NAME)
    notifier = Notifier(client, "inferbox-test:events", recheck=3600)  # only a reconnect wakes
    try:
        with notifier.listen(["queued:a"], taker=True) as first, \
                notifier.listen(["queued:a"], taker=True) as second, \
                notifier.listen(["done:t"]) as watcher:  # fmt: skip
            subscribed = listener_id(real_redis)
            assert subscribed is not None
            assert not (first.is_set() or second.is_set() or watcher.is_set())
            real_redis.client_kill_filter(_id=subscribed)
            for event in (first, second, watcher):
                assert event.wait(10), "a waiter was not woken after the reconnect"
    finally:
        notifier.close()
        client.close()
