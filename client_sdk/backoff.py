"""Exponential backoff with jitter, shared by the client's submit retries and the worker loop."""

from __future__ import annotations

import random

__all__ = ["Backoff"]


class Backoff:
    """Delays that double from ``base`` up to ``cap`` seconds, each jittered.

    The n-th delay (counting from 0) lies in ``[d/2, d]`` with ``d = min(cap, base * 2**n)``:
    half of it is kept so that a flapping broker is never hammered, the other half is random
    so that many callers do not retry in lockstep. ``reset()`` starts over after a success.
    Computing a delay does not sleep; the caller decides how to wait.
    """

    def __init__(self, base: float = 0.5, cap: float = 30.0, *, rng: random.Random | None = None):
        if base <= 0 or cap < base:
            raise ValueError("Backoff needs 0 < base <= cap")
        self.base = base
        self.cap = cap
        self._rng = rng or random.Random()
        self._attempts = 0

    @property
    def attempts(self) -> int:
        """How many delays were handed out since the last ``reset()``."""
        return self._attempts

    def next_delay(self) -> float:
        """The next delay in seconds; each call moves one step up the ladder."""
        ceiling = min(self.cap, self.base * 2 ** min(self._attempts, 62))
        self._attempts += 1
        return ceiling / 2 + self._rng.uniform(0, ceiling / 2)

    def reset(self) -> None:
        """Start again from ``base`` (call after a request succeeds)."""
        self._attempts = 0
