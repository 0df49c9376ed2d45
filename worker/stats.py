"""What a worker run did, counted as it goes, and the live progress line (tqdm) showing it."""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any

__all__ = ["ProgressLine", "Stats"]


@dataclass
class Stats:
    """Counters of one ``Worker.run``; ``Worker.stats`` gives a snapshot at any time.

    ``busy_fraction`` is the model's share of the wall time since the first batch started:
    the time spent inside the handler over the time the worker had work.
    """

    succeeded: int = 0
    failed: int = 0
    dropped: int = 0  # canceled by a client or lease lost: result not posted
    released: int = 0  # handed back to the queue unfinished
    batches: int = 0
    current_batch: int = 0  # size of the batch the handler is working on (0: idle)
    busy_seconds: float = 0.0
    first_batch_at: float | None = None  # time.monotonic()
    ended_at: float | None = None
    interrupted: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def done(self) -> int:
        """Tasks whose outcome (result or failure) was posted."""
        return self.succeeded + self.failed

    @property
    def wall_seconds(self) -> float:
        if self.first_batch_at is None:
            return 0.0
        return (self.ended_at or time.monotonic()) - self.first_batch_at

    @property
    def busy_fraction(self) -> float:
        wall = self.wall_seconds
        return min(1.0, self.busy_seconds / wall) if wall > 0 else 0.0

    @property
    def rate(self) -> float:
        """Tasks done per second of wall time."""
        wall = self.wall_seconds
        return self.done / wall if wall > 0 else 0.0

    def add(self, **counts: Any) -> None:
        with self._lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)

    def batch_started(self, size: int) -> None:
        with self._lock:
            if self.first_batch_at is None:
                self.first_batch_at = time.monotonic()
            self.current_batch = size

    def batch_ended(self, busy: float) -> None:
        with self._lock:
            self.batches += 1
            self.current_batch = 0
            self.busy_seconds += busy

    def snapshot(self) -> Stats:
        with self._lock:
            return replace(self, _lock=threading.Lock())

    def summary(self) -> str:
        return (f"{self.succeeded} succeeded, {self.failed} failed, {self.dropped} dropped, "
                f"{self.released} released in {self.wall_seconds:.1f} s "
                f"({self.rate:.1f} tasks/s, model busy {self.busy_fraction:.0%})")  # fmt: skip


def _in_notebook() -> bool:
    shell = sys.modules.get("IPython")
    get_ipython = getattr(shell, "get_ipython", None)
    return get_ipython is not None and get_ipython() is not None and "ipykernel" in sys.modules


def progress_wanted() -> bool:
    """The default: a progress line on a terminal or in a notebook, none in logs and tests."""
    return _in_notebook() or bool(getattr(sys.stderr, "isatty", lambda: False)())


class ProgressLine:
    """``1234 tasks [00:12, 98.1 tasks/s, failed=2, batch=16, busy=97%]``, refreshed live."""

    def __init__(self, stats: Stats, description: str) -> None:
        from tqdm import tqdm

        self._stats = stats
        self._bar = tqdm(desc=description, unit=" tasks", dynamic_ncols=True, mininterval=0.2)
        self._shown = 0

    def refresh(self) -> None:
        stats = self._stats.snapshot()
        self._bar.set_postfix(failed=stats.failed, batch=stats.current_batch,
                              busy=f"{stats.busy_fraction:.0%}", refresh=False)  # fmt: skip
        self._bar.update(stats.done - self._shown)
        self._shown = stats.done

    def close(self) -> None:
        self.refresh()
        self._bar.close()
