"""The task state machine driven in random interleavings against a model of the lifecycle.

Hypothesis' RuleBasedStateMachine submits, takes, heartbeats, completes, fails and cancels
tasks, lets leases and ttls run out, reaps, reads and retires, on fakeredis with a clock it
moves. A plain-Python model of docs/api.md's lifecycle predicts every answer and every state;
after each step the test checks the Redis index against the model, that each status change is
a legal edge of the lifecycle, that the queue and running sets agree with the statuses, and
that no task ever disappears.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import fakeredis
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from broker import keys as K
from broker.errors import LeaseLost, TaskFinished
from broker.queue import NewTask, TaskQueue
from tests.conftest import FakeClock

QUEUES = ("a", "b")
RETENTION = 50
FINAL = {K.SUCCEEDED, K.FAILED, K.CANCELED, K.EXPIRED}
# Status changes one operation may cause (a take may reap a lease, requeue the task, lease it
# again; or requeue it and find its ttl gone). Final states only ever become expired (retired).
LEGAL = {
    K.QUEUED: {K.QUEUED, K.RUNNING, K.CANCELED, K.EXPIRED},
    K.RUNNING: {K.RUNNING, K.QUEUED, K.SUCCEEDED, K.FAILED, K.CANCELED, K.EXPIRED},
    **{status: {status, K.EXPIRED} for status in FINAL},
}


@dataclass
class Model:
    """One task as docs/api.md says it should be."""

    queue: str
    score: float
    max_attempts: int
    expires_at: float
    status: str = K.QUEUED
    attempts: int = 0
    lease: str = ""
    deadline: float = 0.0
    lease_seconds: int = 0
    finished_at: float | None = None
    leases: list[str] = field(default_factory=list)  # every lease ever given, for stale ones
    in_ttl_set: bool = True


class Lifecycle(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.redis = fakeredis.FakeRedis(server=fakeredis.FakeServer())
        self.queue = TaskQueue(self.redis, prefix="sm", clock=self.clock)
        self.tasks: dict[str, Model] = {}
        self.seen: dict[str, str] = {}  # task id -> status at the last check
        self.seq = 0

    # -- the model's own transitions (mirroring the Lua) ------------------------------------

    def _finish(self, task: Model, status: str) -> None:
        task.status, task.finished_at, task.in_ttl_set = status, self.clock.now, False

    def _end_attempt(self, task: Model, retryable: bool) -> str:
        if retryable and task.attempts < task.max_attempts:
            task.status, task.lease, task.in_ttl_set = K.QUEUED, "", True
        else:
            self._finish(task, K.FAILED)
        return task.status

    def _settle(self, task: Model) -> None:
        now = self.clock.now
        if task.status == K.RUNNING and task.deadline <= now:
            self._end_attempt(task, retryable=True)
        elif task.status == K.QUEUED and task.expires_at <= now:
            self._finish(task, K.EXPIRED)

    def _reap(self) -> None:
        for task in self.tasks.values():
            if task.status == K.RUNNING and task.deadline <= self.clock.now:
                self._settle(task)

    def _queued_in(self, name: str) -> list[tuple[str, Model]]:
        return sorted(((i, t) for i, t in self.tasks.items()
                       if t.queue == name and t.status == K.QUEUED), key=lambda p: p[1].score)

    # -- rules ------------------------------------------------------------------------------

    @rule(name=st.sampled_from(QUEUES), priority=st.integers(0, 2),
          max_attempts=st.integers(1, 3), ttl=st.sampled_from([4, 1000]))
    def submit(self, name: str, priority: int, max_attempts: int, ttl: int) -> None:
        new = NewTask(queue=name, owner="o", content_type="text/plain", size=1, priority=priority,
                      max_attempts=max_attempts, ttl=ttl)
        assert self.queue.submit(new).created
        self.seq += 1
        self.tasks[new.task_id] = Model(name, (9 - priority) * 1e12 + self.seq, max_attempts,
                                        self.clock.now + ttl)

    @rule(order=st.permutations(QUEUES), count=st.integers(1, 2), max_tasks=st.integers(1, 3),
          lease=st.integers(1, 6))
    def take(self, order: list[str], count: int, max_tasks: int, lease: int) -> None:
        names = list(order[:count])
        self._reap()
        expected = []
        for name in names:
            for task_id, task in self._queued_in(name):
                if len(expected) == max_tasks:
                    break
                self._settle(task)  # popped: a queued task past its ttl expires here
                if task.status == K.QUEUED:
                    expected.append(task_id)
        taken = self.queue.take(names, max_tasks=max_tasks, lease_seconds=lease, worker_id="w")
        assert [t.task_id for t in taken] == expected
        for lease_ in taken:
            task = self.tasks[lease_.task_id]
            task.status, task.attempts = K.RUNNING, task.attempts + 1
            task.lease, task.deadline, task.lease_seconds = (lease_.lease_id,
                                                             self.clock.now + lease, lease)
            task.leases.append(lease_.lease_id)
            assert lease_.attempt == task.attempts <= task.max_attempts

    def _pick(self, data: st.DataObject) -> tuple[str, Model, str]:
        task_id = data.draw(st.sampled_from(list(self.tasks)))  # submit order: stable
        task = self.tasks[task_id]
        lease = data.draw(st.sampled_from([*task.leases, "bogus-lease"]))
        return task_id, task, lease

    @precondition(lambda self: self.tasks)
    @rule(data=st.data())
    def heartbeat(self, data: st.DataObject) -> None:
        task_id, task, lease = self._pick(data)
        if lease != task.lease or task.status not in (K.RUNNING, K.CANCELED):
            with pytest.raises(LeaseLost):
                self.queue.heartbeat(task_id, lease)
            return
        deadline, canceled = self.queue.heartbeat(task_id, lease)
        assert canceled == (task.status == K.CANCELED)
        if not canceled:
            task.deadline = self.clock.now + task.lease_seconds
            assert deadline == pytest.approx(task.deadline)

    @precondition(lambda self: self.tasks)
    @rule(data=st.data())
    def complete(self, data: st.DataObject) -> None:
        task_id, task, lease = self._pick(data)
        call = lambda: self.queue.complete(task_id, lease, result_key="r", content_type="x",  # noqa: E731
                                           size=1)  # fmt: skip
        if lease != task.lease:
            with pytest.raises(LeaseLost):
                call()
        elif task.status == K.SUCCEEDED:
            assert call() is None  # the same lease posting again changes nothing
        elif task.status != K.RUNNING:
            with pytest.raises(TaskFinished):
                call()
        else:
            done = call()
            assert done is not None and (done.id, done.status) == (task_id, K.SUCCEEDED)
            self._finish(task, K.SUCCEEDED)

    @precondition(lambda self: self.tasks)
    @rule(data=st.data(), retryable=st.booleans())
    def fail(self, data: st.DataObject, retryable: bool) -> None:
        task_id, task, lease = self._pick(data)
        call = lambda: self.queue.fail(task_id, lease, "boom", retryable=retryable)  # noqa: E731
        if lease != task.lease:
            with pytest.raises(LeaseLost):
                call()
        elif task.status == K.FAILED:
            assert call() == K.FAILED
        elif task.status != K.RUNNING:
            with pytest.raises(TaskFinished):
                call()
        else:
            assert call() == self._end_attempt(task, retryable)

    @precondition(lambda self: self.tasks)
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        task_id, task, _ = self._pick(data)
        if task.status in (K.QUEUED, K.RUNNING):
            assert self.queue.cancel(task_id).status == K.CANCELED
            self._finish(task, K.CANCELED)
        else:
            with pytest.raises(TaskFinished):
                self.queue.cancel(task_id)

    @rule(seconds=st.integers(1, 8))
    def time_passes(self, seconds: int) -> None:
        self.clock.advance(seconds)

    @rule()
    def reap(self) -> None:
        overdue = sum(t.status == K.RUNNING and t.deadline <= self.clock.now
                      for t in self.tasks.values())  # fmt: skip
        assert self.queue.reap() == overdue
        self._reap()

    @precondition(lambda self: self.tasks)
    @rule(data=st.data())
    def read(self, data: st.DataObject) -> None:
        task_id, task, _ = self._pick(data)
        self._settle(task)
        got = self.queue.get(task_id)
        assert (got.status, got.attempts) == (task.status, task.attempts)

    @rule()
    def janitor(self) -> None:
        now, expired, retired = self.clock.now, 0, 0
        for task in self.tasks.values():
            if task.in_ttl_set and task.expires_at <= now:
                before = task.status
                self._settle(task)
                expired += before != K.EXPIRED and task.status == K.EXPIRED
                task.in_ttl_set = False
        for task in self.tasks.values():
            if task.finished_at is not None and task.finished_at <= now - RETENTION:
                task.status, task.finished_at = K.EXPIRED, None
                retired += 1
        assert self.queue.retire(RETENTION, 3600) == (expired, retired)

    # -- checks after every step ------------------------------------------------------------

    @invariant()
    def the_index_matches_the_model(self) -> None:
        for task_id, task in self.tasks.items():
            raw = self.redis.hgetall(f"sm:task:{task_id}")
            assert raw, f"task {task_id} disappeared"
            status = raw[b"status"].decode()
            assert status == task.status, (task_id, status, task.status)
            assert int(raw[b"attempts"]) == task.attempts <= task.max_attempts
            previous = self.seen.get(task_id, K.QUEUED)
            assert status in LEGAL[previous], f"illegal transition {previous} -> {status}"
            self.seen[task_id] = status
            in_queue = self.redis.zscore(f"sm:queue:{task.queue}", task_id) is not None
            in_running = self.redis.zscore(f"sm:running:{task.queue}", task_id) is not None
            assert in_queue == (status == K.QUEUED)
            assert in_running == (status == K.RUNNING)


Lifecycle.TestCase.settings = settings(
    max_examples=150, stateful_step_count=40, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)  # fmt: skip
test_the_lifecycle_holds_in_any_interleaving = Lifecycle.TestCase
