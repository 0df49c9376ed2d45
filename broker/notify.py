"""Wake long-polls the moment something happens, with one Redis connection per process.

The state machine publishes ``queued:<queue>`` and ``done:<task_id>`` on one pub/sub channel from
inside its scripts. A :class:`Notifier` runs one listener thread per broker process that fans each
message out to the threads waiting on it, so a thousand waiting requests hold one subscription,
not a thousand blocked connections. Pub/sub is not durable, so waiters also re-read the state
now and then: a lost message costs latency, never correctness. When the listener loses Redis and
subscribes again, it wakes every waiter at once; beyond that, watchers time their own re-reads,
about every ``watch_recheck`` seconds (``WATCH_RECHECK_INTERVAL``, each wait drawn from 0.5-1.5
times it: a thousand clients that came at once would otherwise re-read at once, every time).
For takers the listener thread does it: every ``recheck`` seconds (``RECHECK_INTERVAL``) it
wakes the longest-waiting taker of each topic (unless one is already awake), so idle workers
cost one look per queue, process and interval, not one each.

A message holds one *event* or several, joined by ``EVENT_SEPARATOR`` (a blank line): a script
that handles a batch publishes its events together (``hold_events`` in ``common.lua``), so a
batch of a hundred tasks costs each process's listener one message, not a hundred. An event is a
topic, or a topic, a newline and a *notice*: bytes the publisher attached for the watchers
(``done:<task_id>`` carries the task's final hash, see ``broker.queue.notified_task``). A
watcher finds the notice of the event that woke it in ``Wake.notice``; it is None after a
recheck, a wake on reconnect or an event without one.

Waiters come in two kinds. Every *watcher* of a topic (a client waiting for a result) is woken by
each event. *Takers* (workers long-polling for tasks) are interchangeable: an event wakes one
taker of the topic that is not already woken, the longest waiting first, so one queued task
costs each broker process one look at the queue rather than one per idle worker (a thousand idle
workers used to mean a thousand take scripts per submit). A taker that leaves while woken, its
wake unused, passes it on to another.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import redis

from . import keys as K

EVENT_SEPARATOR = K.EVENT_SEPARATOR.encode()

log = logging.getLogger("inferbox.broker")


class Wake(threading.Event):
    """The event a waiter blocks on, with the notice of the message that last set it."""

    def __init__(self) -> None:
        super().__init__()
        self.notice: bytes | None = None

    def take_notice(self) -> bytes | None:
        """Clear the event; the notice that set it since the last call (or None)."""
        self.clear()
        notice, self.notice = self.notice, None
        return notice


class Notifier:
    def __init__(self, client: redis.Redis, channel: str, *, recheck: float = K.RECHECK_INTERVAL,
                 watch_recheck: float = K.WATCH_RECHECK_INTERVAL) -> None:  # fmt: skip
        self._redis = client
        self._channel = channel
        self.recheck = recheck
        self.watch_recheck = watch_recheck
        self._lock = threading.Lock()
        # topic -> the events waiting on it, oldest first, each with whether it is a taker
        self._waiters: dict[str, dict[Wake, bool]] = defaultdict(dict)
        self._thread: threading.Thread | None = None
        self._closed = threading.Event()

    @contextmanager
    def listen(self, topics: Iterable[str], *, taker: bool = False) -> Iterator[Wake]:
        """An event set whenever one of ``topics`` is published while the block runs; for a
        ``taker``, whenever a message picks it among the takers of its topic (see above).

        Subscribe first, then check the state, then wait: a message that lands between the
        check and the wait still wakes the waiter (clear the event before each check, with
        ``take_notice`` for a watcher, and check once more after every wake before leaving).
        """
        self._ensure_listening()
        event = Wake()
        topics = list(topics)
        with self._lock:
            for topic in topics:
                self._waiters[topic][event] = taker
        try:
            yield event
        finally:
            with self._lock:
                for topic in topics:
                    self._waiters[topic].pop(event, None)
                    if not self._waiters[topic]:
                        del self._waiters[topic]
                if taker and event.is_set():  # woken for a task it may not have taken
                    for topic in topics:
                        self._wake(topic, watchers=False)

    def close(self) -> None:
        self._closed.set()

    def watch_pause(self) -> float:
        """Seconds a watcher waits before it re-reads without a notice: ``watch_recheck``
        times a factor drawn from 0.5-1.5, so that waiters which came together spread out."""
        return self.watch_recheck * (0.5 + random.random())

    def wake_all(self) -> None:
        """Wake every waiter now, whatever it listens for."""
        with self._lock:
            events = {event for waiters in self._waiters.values() for event in waiters}
        for event in events:
            event.set()

    def _recheck_takers(self) -> None:
        """Wake the longest-waiting taker of each topic none of whose takers is woken yet."""
        with self._lock:
            for waiters in self._waiters.values():
                takers = [event for event, taker in waiters.items() if taker]
                if takers and not any(event.is_set() for event in takers):
                    takers[0].set()

    def _wake(self, topic: str, notice: bytes | None = None, *, watchers: bool = True) -> None:
        """Wake whom an event on ``topic`` wakes: every watcher, with ``notice`` (unless
        ``watchers`` is False), and the first unwoken taker. The caller holds the lock."""
        taker_woken = False
        for event, taker in self._waiters.get(topic, {}).items():
            if not taker:
                if watchers:
                    event.notice = notice
                    event.set()
            elif not taker_woken and not event.is_set():
                event.set()
                taker_woken = True

    def _ensure_listening(self) -> None:
        if self._thread is not None:
            return
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._listen, name="inferbox-notifier", daemon=True
                )
                self._thread.start()

    def _listen(self) -> None:
        subscribed_before = False
        while not self._closed.is_set():
            try:
                with self._redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                    pubsub.subscribe(self._channel)
                    if subscribed_before:  # messages published while we were away are lost
                        self.wake_all()
                    subscribed_before = True
                    self._relay(pubsub)
            except redis.RedisError as exc:  # waiters go on waiting; rechecks resume after
                log.warning("pub/sub listener lost Redis (%s); reconnecting", exc)
                self._closed.wait(1.0)
            except Exception:  # never let waiting takers lose their rechecks
                log.exception("pub/sub listener failed; restarting it")
                self._closed.wait(1.0)

    def _relay(self, pubsub: redis.client.PubSub) -> None:
        """Dispatch messages, and wake one taker per topic every ``recheck`` seconds."""
        next_recheck = time.monotonic() + self.recheck
        while not self._closed.is_set():
            # at most a second, so that close() is seen soon whatever the interval
            wait = min(1.0, next_recheck - time.monotonic())
            message = pubsub.get_message(timeout=max(0.0, wait))
            if message is not None:
                self._dispatch(message["data"])
            if time.monotonic() >= next_recheck:
                self._recheck_takers()
                next_recheck = time.monotonic() + self.recheck

    def _dispatch(self, data: bytes) -> None:
        events = [event.partition(b"\n") for event in data.split(EVENT_SEPARATOR)]
        with self._lock:
            for topic, _, notice in events:
                self._wake(topic.decode(), notice or None)
