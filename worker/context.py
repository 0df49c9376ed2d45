"""What a handler may know about the task in hand, and how it talks back: ``ctx``.

A handler that takes a second parameter gets a context::

    def predict(payload, ctx):
        for step in range(5):
            ctx.check()                        # raises Canceled once a client canceled the task
            ctx.progress(step / 5, f"step {step + 1}/5")   # visible in GET /tasks/<id>
            ...

A batch handler gets a ``BatchContext``: the same calls, applied to every task of the batch,
and ``ctx.tasks`` for each one's own.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from worker.errors import Canceled

if TYPE_CHECKING:
    from worker.heartbeat import LeaseKeeper
    from worker.task import TakenTask

__all__ = ["BatchContext", "TaskContext"]


class TaskContext:
    """One task, as its handler sees it."""

    def __init__(self, task: TakenTask, keeper: LeaseKeeper) -> None:
        self._task = task
        self._keeper = keeper

    @property
    def task_id(self) -> str:
        return self._task.id

    @property
    def queue(self) -> str:
        return self._task.queue

    @property
    def attempt(self) -> int:
        return self._task.attempt

    @property
    def content_type(self) -> str | None:
        """The payload's Content-Type (useful to a handler that asked for raw bytes)."""
        return self._task.content_type

    @property
    def canceled(self) -> bool:
        """True once the broker said the task was canceled (or its lease was lost).

        Cheap to call often: the answer comes from the heartbeat thread, which checks with the
        broker every couple of seconds while the handler runs, and sooner when asked.
        """
        if self._keeper.lost(self._task):
            return True
        self._keeper.ask(self._task)
        return False

    def check(self) -> None:
        """Raise ``Canceled`` if the task was canceled: a cooperative stop point."""
        if self.canceled:
            raise Canceled(f"task {self._task.id}: {self._keeper.lost(self._task)}")

    def progress(self, fraction: float, message: str = "") -> None:
        """Report progress (0..1 and a short message); the client sees it within a second."""
        self._keeper.report(self._task, fraction, message)


class BatchContext:
    """A batch of tasks, as a batch handler sees it: ``ctx.tasks[i]`` goes with input ``i``."""

    def __init__(self, tasks: list[TaskContext]) -> None:
        self.tasks = tasks

    def __len__(self) -> int:
        return len(self.tasks)

    def __iter__(self) -> Iterator[TaskContext]:
        return iter(self.tasks)

    @property
    def canceled(self) -> bool:
        """True when every task of the batch was canceled: nobody wants any result."""
        return all([ctx.canceled for ctx in self.tasks])

    def check(self) -> None:
        if self.canceled:
            raise Canceled("every task of the batch was canceled")

    def progress(self, fraction: float, message: str = "") -> None:
        for ctx in self.tasks:
            ctx.progress(fraction, message)
