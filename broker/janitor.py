"""The janitor: the broker's housekeeping, on a background thread of every server process.

Each pass, under a Redis lock so that one process of all those sharing the Redis does it:

1. **expire and retire** (``retire.lua``): queued tasks whose ttl ran out become ``expired``
   even in a queue no worker polls; final tasks older than the retention period become
   ``expired`` tombstones and their blobs are scheduled for deletion;
2. **purge**: delete the blobs of retired tasks (payload, every result, state record), so
   storage does not grow without bound;
3. **record**: write the state records of failed and canceled tasks that no request wrote
   (tasks failed by a lapsed lease, or a storage error at the time);
4. **reconcile**, every ``reconcile_interval`` seconds: restore tasks that storage holds and the
   index lacks (after a Redis crash lost its last writes), see :mod:`broker.reindex`.

Failures are logged and retried at the next pass: the work is idempotent.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from storage import StorageError

from . import keys as K
from .errors import Unavailable
from .mailbox import Mailbox
from .reindex import Report, has_tasks, rebuild

log = logging.getLogger("inferbox.broker")

MAX_BATCHES = 20  # batches of each step per pass; the rest waits for the next pass


@dataclass
class Pass:
    """What one janitor pass did (all zero when another process held the lock)."""

    expired: int = 0
    retired: int = 0
    purged: int = 0
    recorded: int = 0
    reconciled: Report | None = None
    ran: bool = field(default=False)


class Janitor:
    def __init__(
        self, mailbox: Mailbox, *, retention: float = K.DEFAULT_RETENTION,
        interval: float = K.DEFAULT_JANITOR_INTERVAL,
        reconcile_interval: float = K.DEFAULT_RECONCILE_INTERVAL,
        reconcile_grace: float = K.DEFAULT_RECONCILE_GRACE,
    ) -> None:  # fmt: skip
        self.mailbox = mailbox
        self.retention = retention
        self.interval = interval
        self.reconcile_interval = reconcile_interval
        self.reconcile_grace = reconcile_grace
        self._last_reconcile = time.monotonic()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self, *, reconcile: bool | None = None) -> Pass:
        """One pass; ``reconcile`` forces (True) or skips (False) the storage scan."""
        queue = self.mailbox.queue
        done = Pass()
        with queue.lock("janitor", seconds=K.LOCK_SECONDS) as held:
            if not held:
                return done
            done.ran = True
            done.expired, done.retired = self._retire()
            done.purged = self._drain(queue.purge_due, self.mailbox.purge)
            done.recorded = self._drain(queue.unrecorded, self.mailbox.record)
            if reconcile if reconcile is not None else self._reconcile_due():
                self._last_reconcile = time.monotonic()
                done.reconciled = rebuild(queue, self.mailbox.store, grace=self.reconcile_grace)
                if done.reconciled.restored:
                    log.warning("reconcile: %s", done.reconciled.summary())
        return done

    def _retire(self) -> tuple[int, int]:
        expired = retired = 0
        for _ in range(MAX_BATCHES):
            more_expired, more_retired = self.mailbox.queue.retire(self.retention, self.retention)
            expired, retired = expired + more_expired, retired + more_retired
            if max(more_expired, more_retired) < K.JANITOR_BATCH:
                break
        return expired, retired

    @staticmethod
    def _drain(due: Callable[[], list[str]], handle: Callable[[list[str]], int]) -> int:
        total = 0
        for _ in range(MAX_BATCHES):
            ids = due()
            total += handle(ids) if ids else 0
            if len(ids) < K.JANITOR_BATCH:
                break
        return total

    def _reconcile_due(self) -> bool:
        if self.reconcile_interval <= 0:
            return False
        return time.monotonic() - self._last_reconcile >= self.reconcile_interval

    # -- the background thread ------------------------------------------------------------------

    def start(self) -> None:
        if self.interval <= 0 or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name="inferbox-janitor", daemon=True)
        self._thread.start()

    def stop(self, *, final_pass: bool = True) -> None:
        """Stop the thread; with ``final_pass``, record what is still unrecorded first."""
        self._stopped.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        if final_pass:
            try:
                self._drain(self.mailbox.queue.unrecorded, self.mailbox.record)
            except (Unavailable, StorageError) as exc:
                log.warning("janitor: final state records not written: %s", exc)

    def _loop(self) -> None:
        while not self._stopped.wait(self.interval):
            try:
                self.run_once()
            except (Unavailable, StorageError) as exc:
                log.warning("janitor pass failed, will retry: %s", exc)
            except Exception:  # never let housekeeping kill the thread
                log.exception("janitor pass failed, will retry")


def ensure_index(mailbox: Mailbox, *, wait: float = K.LOCK_SECONDS) -> Report | None:
    """Rebuild the index from storage when it is empty and storage is not (at start-up).

    Several processes starting at once rebuild once: the others wait for the lock, then find
    the index filled. Returns the report, or None when there was nothing to do.
    """
    queue, store = mailbox.queue, mailbox.store
    if not queue.is_empty() or not has_tasks(store):
        return None
    with queue.lock("reindex", wait=wait) as held:
        if held and not queue.is_empty():
            return None  # another process rebuilt it while we waited
        report = rebuild(queue, store)  # without the lock too: restoring twice is harmless
    log.warning("the index was empty and storage was not: rebuilt it. %s", report.summary())
    return report
