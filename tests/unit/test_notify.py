"""The notifier wakes every watcher of a topic but one idle taker per message, and rechecks the
takers of each topic one at a time.

Messages go through fakeredis pub/sub to the notifier's real listener thread.
"""

from __future__ import annotations

import threading
import time
from contextlib import ExitStack

import fakeredis
import pytest

from broker.notify import Notifier

CHANNEL = "inferbox:events"


def started(recheck: float) -> Notifier:
    client = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    notifier = Notifier(client, CHANNEL, recheck=recheck)
    with notifier.listen(["warm-up"]) as woken:  # the listener is subscribed once this wakes
        deadline = time.monotonic() + 5
        while not woken.is_set() and time.monotonic() < deadline:
            client.publish(CHANNEL, "warm-up")
            woken.wait(0.05)
        assert woken.is_set()
    notifier.publish = lambda topic: client.publish(CHANNEL, topic)  # type: ignore[attr-defined]
    return notifier


@pytest.fixture
def notifier():
    notifier = started(recheck=3600)  # no recheck lands during a test: messages alone wake
    yield notifier
    notifier.close()


def settle(events: list[threading.Event], count: int) -> list[bool]:
    """The events' states once ``count`` of them are set (or after 2 s)."""
    deadline = time.monotonic() + 2
    while sum(event.is_set() for event in events) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)  # a wrong extra wake would land by now
    return [event.is_set() for event in events]


def test_a_message_wakes_every_watcher_and_the_longest_waiting_taker(notifier):
    with ExitStack() as stack:
        takers = [stack.enter_context(notifier.listen(["queued:q"], taker=True))
                  for _ in range(3)]  # fmt: skip
        watchers = [stack.enter_context(notifier.listen(["queued:q"])) for _ in range(2)]
        notifier.publish("queued:q")
        assert settle([*takers, *watchers], 3) == [True, False, False, True, True]


def test_each_message_wakes_the_longest_waiting_taker_not_already_woken(notifier):
    with ExitStack() as stack:
        takers = [stack.enter_context(notifier.listen(["queued:q"], taker=True))
                  for _ in range(3)]  # fmt: skip
        notifier.publish("queued:q")
        notifier.publish("queued:q")
        assert settle(takers, 2) == [True, True, False]
        takers[0].clear()  # the first looked at the queue and waits again
        notifier.publish("queued:q")
        assert settle(takers, 3) == [True, True, False]  # the first again, not the third


def test_a_taker_wakes_only_for_its_own_queues(notifier):
    with notifier.listen(["queued:a"], taker=True) as a, \
            notifier.listen(["queued:a", "queued:b"], taker=True) as both:  # fmt: skip
        notifier.publish("queued:b")
        assert settle([a, both], 1) == [False, True]


@pytest.mark.parametrize("used", [False, True])
def test_a_taker_leaving_with_an_unused_wake_passes_it_on(notifier, used):
    leaving_block = notifier.listen(["queued:q"], taker=True)
    leaving = leaving_block.__enter__()  # the longest waiting: the message picks it
    with notifier.listen(["queued:q"], taker=True) as staying, \
            notifier.listen(["queued:q"]) as watcher:  # fmt: skip
        notifier.publish("queued:q")
        assert settle([leaving, staying, watcher], 2) == [True, False, True]
        watcher.clear()
        if used:
            leaving.clear()  # it looked again (and took the task) before its request ended
        leaving_block.__exit__(None, None, None)
        # unused, the wake goes to the other taker (no new message for watchers); used, the
        # others go on waiting
        assert settle([staying, watcher], 1) == [not used, False]


def test_a_recheck_wakes_one_taker_per_topic_and_no_watcher():
    notifier = started(recheck=0.05)
    try:
        with ExitStack() as stack:
            on_q = [stack.enter_context(notifier.listen(["queued:q"], taker=True))
                    for _ in range(3)]  # fmt: skip
            on_r = stack.enter_context(notifier.listen(["queued:r"], taker=True))
            watcher = stack.enter_context(notifier.listen(["queued:q"]))
            # rechecks every 50 ms, but none while a taker of the topic is still awake
            assert settle([*on_q, on_r, watcher], 2) == [True, False, False, True, False]
            on_q[0].clear()  # it looked at the queue and waits again
            assert settle([*on_q, on_r, watcher], 2) == [True, False, False, True, False]
    finally:
        notifier.close()


def test_a_watcher_gets_the_notice_of_the_message_that_woke_it_once(notifier):
    with notifier.listen(["done:t1"]) as watcher, notifier.listen(["done:t2"]) as other:
        notifier.publish("done:t1\n[\"id\", \"t1\"]")
        assert settle([watcher, other], 1) == [True, False]
        assert watcher.take_notice() == b'["id", "t1"]'
        assert not watcher.is_set() and watcher.take_notice() is None
        notifier.publish("done:t1")  # a message without a notice
        assert settle([watcher], 1) == [True]
        assert watcher.take_notice() is None


def test_each_event_of_a_message_wakes_as_a_message_of_its_own(notifier):
    """A batch's events come in one message: each done event wakes its watcher with its own
    notice, and each queued event one more taker."""
    with ExitStack() as stack:
        takers = [stack.enter_context(notifier.listen(["queued:q"], taker=True))
                  for _ in range(3)]  # fmt: skip
        first, second, bystander = (stack.enter_context(notifier.listen([topic]))
                                    for topic in ("done:t1", "done:t2", "done:t3"))  # fmt: skip
        notifier.publish("\n\n".join(["queued:q", "done:t1\n[\"id\", \"t1\"]", "queued:q",
                                      "done:t2\n[\"id\", \"t2\"]"]))  # fmt: skip
        assert settle([*takers, first, second, bystander], 4) == [True, True, False, True,
                                                                   True, False]  # fmt: skip
        assert (first.take_notice(), second.take_notice()) == (b'["id", "t1"]', b'["id", "t2"]')


def test_watcher_pauses_spread_around_the_watch_recheck():
    """Waiters that came together re-read apart: each pause is drawn from 0.5-1.5 x."""
    notifier = Notifier(fakeredis.FakeRedis(), CHANNEL, watch_recheck=2.0)
    pauses = [notifier.watch_pause() for _ in range(200)]
    assert min(pauses) >= 1.0 and max(pauses) < 3.0
    assert max(pauses) - min(pauses) > 1.0
