"""The task state machine, on fakeredis and on a real Redis, with a clock the tests move."""

from __future__ import annotations

import threading

import pytest

from broker import keys as K
from broker.errors import LeaseLost, TaskFinished, TaskNotFound
from broker.queue import Completion, NewTask, TaskQueue, notified_task
from broker.task import Lease


@pytest.fixture
def queue(any_redis, clock) -> TaskQueue:
    return TaskQueue(any_redis, prefix="t", clock=clock)


def submit(queue: TaskQueue, name: str = "q", owner: str = "alice", **options) -> str:
    new = NewTask(queue=name, owner=owner, content_type="application/json", size=2, **options)
    return queue.submit(new).task_id


def take_one(queue: TaskQueue, name: str = "q", lease: int = 10, worker: str = "w1"):
    (lease_,) = queue.take([name], max_tasks=1, lease_seconds=lease, worker_id=worker)
    return lease_


def test_submit_queues_the_task(queue):
    task = queue.get(submit(queue))
    assert (task.status, task.queue, task.owner, task.attempts) == ("queued", "q", "alice", 0)
    doc = task.to_doc()
    assert doc["status"] == "queued" and doc["created_at"].endswith("Z")


def test_fifo_within_priority_and_higher_priority_first(queue):
    low = [submit(queue) for _ in range(3)]
    high = submit(queue, priority=7)
    order = [lease.task_id for lease in queue.take(["q"], max_tasks=10, lease_seconds=5,
                                                    worker_id="w")]  # fmt: skip
    assert order == [high, *low]


def test_named_queues_keep_models_apart(queue):
    a, b = submit(queue, "model-a"), submit(queue, "model-b")
    assert [t.task_id for t in queue.take(["model-b"], max_tasks=5, lease_seconds=5,
                                          worker_id="w")] == [b]  # fmt: skip
    assert queue.get(a).status == "queued"


def test_take_from_several_queues_in_order(queue):
    a, b = submit(queue, "a"), submit(queue, "b")
    taken = queue.take(["b", "a"], max_tasks=2, lease_seconds=5, worker_id="w")
    assert [t.task_id for t in taken] == [b, a]


def test_empty_take_returns_nothing(queue):
    assert queue.take(["q"], max_tasks=3, lease_seconds=5, worker_id="w") == []


def test_complete_succeeds_once_and_duplicates_are_harmless(queue):
    task_id = submit(queue)
    lease = take_one(queue)
    done = queue.complete(task_id, lease.lease_id, result_key="r", content_type="text/plain",
                          size=1, model_version="v1")  # fmt: skip
    assert done is not None
    assert (done.id, done.status, done.result_key) == (task_id, "succeeded", "r")
    assert queue.complete(task_id, lease.lease_id, result_key="other", content_type="x",
                          size=9) is None  # fmt: skip
    task = queue.get(task_id)
    assert (task.status, task.result_key, task.model_version) == ("succeeded", "r", "v1")


def test_lease_expiry_requeues_and_the_stale_lease_is_refused(queue, clock):
    task_id = submit(queue)
    first = take_one(queue, worker="w1")
    clock.advance(11)
    second = take_one(queue, worker="w2")  # the take reaps the lapsed lease
    assert second.task_id == task_id and second.attempt == 2
    with pytest.raises(LeaseLost):
        queue.complete(task_id, first.lease_id, result_key="late", content_type="x", size=1)
    with pytest.raises(LeaseLost):
        queue.heartbeat(task_id, first.lease_id)
    queue.complete(task_id, second.lease_id, result_key="live", content_type="x", size=1)
    with pytest.raises(LeaseLost):
        queue.complete(task_id, first.lease_id, result_key="late", content_type="x", size=1)
    assert queue.get(task_id).result_key == "live"


def test_heartbeat_keeps_the_lease_and_records_progress(queue, clock):
    task_id = submit(queue)
    lease = take_one(queue, lease=10)
    for _ in range(3):
        clock.advance(8)
        deadline, canceled = queue.heartbeat(task_id, lease.lease_id, (0.5, "half"))
        assert not canceled and deadline == pytest.approx(clock.now + 10)
    assert queue.take(["q"], max_tasks=1, lease_seconds=10, worker_id="w2") == []
    task = queue.get(task_id)
    assert (task.status, task.progress_fraction, task.progress_message) == ("running", 0.5, "half")


def test_status_read_settles_a_lapsed_lease(queue, clock):
    task_id = submit(queue)
    take_one(queue, lease=5)
    clock.advance(6)
    task = queue.get(task_id)
    assert task.status == "queued" and "stopped heartbeating" in task.error


def test_lost_worker_every_attempt_ends_failed_with_the_reason(queue, clock):
    task_id = submit(queue, max_attempts=2)
    for _ in range(2):
        take_one(queue, lease=5)
        clock.advance(6)
        queue.reap()
    task = queue.get(task_id)
    assert (task.status, task.attempts) == ("failed", 2)
    assert "lease expired" in task.error


def test_failing_attempts_retry_then_fail_and_the_queue_keeps_flowing(queue):
    poison = submit(queue, max_attempts=3)
    healthy = [submit(queue) for _ in range(3)]
    done = []
    while True:
        taken = queue.take(["q"], max_tasks=1, lease_seconds=10, worker_id="w")
        if not taken:
            break
        lease = taken[0]
        if lease.task_id == poison:
            queue.fail(poison, lease.lease_id, "ValueError: bad input")
        else:
            queue.complete(lease.task_id, lease.lease_id, result_key="r", content_type="x", size=1)
            done.append(lease.task_id)
    task = queue.get(poison)
    assert (task.status, task.attempts, task.error) == ("failed", 3, "ValueError: bad input")
    assert sorted(done) == sorted(healthy)


def test_non_retryable_failure_ends_at_once(queue):
    task_id = submit(queue, max_attempts=5)
    lease = take_one(queue)
    assert queue.fail(task_id, lease.lease_id, "bad payload", retryable=False) == "failed"
    assert queue.fail(task_id, lease.lease_id, "bad payload", retryable=False) == "failed"
    assert queue.get(task_id).attempts == 1


def test_cancel_queued_task_never_runs(queue):
    task_id = submit(queue)
    assert queue.cancel(task_id).status == "canceled"
    assert queue.take(["q"], max_tasks=1, lease_seconds=5, worker_id="w") == []
    with pytest.raises(TaskFinished):
        queue.cancel(task_id)


def test_cancel_running_task_reaches_its_worker_and_refuses_its_result(queue):
    task_id = submit(queue)
    lease = take_one(queue)
    queue.cancel(task_id)
    assert queue.heartbeat(task_id, lease.lease_id) == (0.0, True)
    with pytest.raises(TaskFinished):
        queue.complete(task_id, lease.lease_id, result_key="r", content_type="x", size=1)
    assert queue.get(task_id).status == "canceled"


def test_final_states_never_come_back(queue, clock):
    task_id = submit(queue, max_attempts=1)
    lease = take_one(queue, lease=5)
    queue.fail(task_id, lease.lease_id, "boom")
    clock.advance(100)
    queue.reap()
    assert queue.take(["q"], max_tasks=1, lease_seconds=5, worker_id="w") == []
    with pytest.raises(TaskFinished):
        queue.cancel(task_id)
    assert queue.get(task_id).status == "failed"


def test_ttl_expires_a_task_nobody_took(queue, clock):
    task_id = submit(queue, ttl=30)
    clock.advance(31)
    assert queue.get(task_id).status == "expired"
    late = submit(queue, ttl=30)
    expiring = submit(queue, ttl=1)
    clock.advance(2)
    assert [t.task_id for t in queue.take(["q"], max_tasks=5, lease_seconds=5,
                                          worker_id="w")] == [late]  # fmt: skip
    assert queue.get(expiring).status == "expired"


def test_idempotency_key_is_scoped_to_its_owner(queue):
    def new(owner):
        return NewTask(queue="q", owner=owner, content_type="x", size=0)

    first = queue.submit(new("alice"), "key-1")
    again = queue.submit(new("alice"), "key-1")
    other = queue.submit(new("bob"), "key-1")
    assert first.created and not again.created and again.task_id == first.task_id
    assert other.created and other.task_id != first.task_id
    assert queue.find_replays("alice", ["key-1"]) == [first.task_id]


def test_unknown_task(queue):
    with pytest.raises(TaskNotFound):
        queue.get("x" * 22)
    with pytest.raises(TaskNotFound):
        queue.heartbeat("x" * 22, "lease")


def test_stats_show_depth_in_flight_and_oldest_age(queue, clock):
    submit(queue, "a")
    clock.advance(5)
    submit(queue, "a", priority=9)
    submit(queue, "b")
    take_one(queue, "b")
    clock.advance(1)
    stats = {s.name: s for s in queue.stats()}
    assert (stats["a"].depth, stats["a"].in_flight, stats["a"].oldest_age_seconds) == (2, 0, 6)
    assert (stats["b"].depth, stats["b"].in_flight, stats["b"].oldest_age_seconds) == (0, 1, None)


def test_racing_takers_never_share_a_task(queue):
    ids = {submit(queue) for _ in range(200)}
    taken: list[str] = []
    lock = threading.Lock()

    def taker():
        while batch := queue.take(["q"], max_tasks=3, lease_seconds=60, worker_id="w"):
            with lock:
                taken.extend(lease.task_id for lease in batch)

    threads = [threading.Thread(target=taker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(taken) == sorted(ids)
    assert all(queue.get(task_id).status == K.RUNNING for task_id in ids)


def test_release_returns_the_task_to_its_place_without_counting_the_attempt(queue):
    first, second = submit(queue), submit(queue)
    lease = take_one(queue)
    assert lease.task_id == first
    queue.heartbeat(first, lease.lease_id, (0.3, "warming up"))
    assert queue.release(first, lease.lease_id) == "queued"
    task = queue.get(first)
    assert (task.status, task.attempts, task.lease_id) == ("queued", 0, "")
    assert task.progress_fraction is None
    assert queue.stats()[0].in_flight == 0
    again = take_one(queue, worker="w2")  # its old place: ahead of the task submitted after it
    assert (again.task_id, again.attempt) == (first, 1)
    assert queue.get(second).status == "queued"


def test_release_needs_the_live_lease_and_a_running_task(queue, clock):
    task_id = submit(queue)
    lease = take_one(queue, lease=5)
    with pytest.raises(LeaseLost):
        queue.release(task_id, "not-the-lease")
    clock.advance(6)
    take_one(queue, worker="w2")  # the lapsed lease went to another worker
    with pytest.raises(LeaseLost):
        queue.release(task_id, lease.lease_id)
    assert queue.get(task_id).attempts == 2


def test_release_of_a_canceled_or_finished_task_changes_nothing(queue):
    canceled, done = submit(queue), submit(queue)
    first, second = queue.take(["q"], max_tasks=2, lease_seconds=10, worker_id="w")
    queue.cancel(canceled)
    with pytest.raises(TaskFinished):
        queue.release(canceled, first.lease_id)
    queue.complete(done, second.lease_id, result_key="r", content_type="x", size=1)
    with pytest.raises(TaskFinished):
        queue.release(done, second.lease_id)
    assert (queue.get(canceled).status, queue.get(done).status) == ("canceled", "succeeded")
    with pytest.raises(TaskNotFound):
        queue.release("x" * 22, "lease")


def test_release_wakes_waiting_takers(queue, any_redis):
    task_id = submit(queue)
    lease = take_one(queue)
    pubsub = any_redis.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(queue.keys.events)
    queue.release(task_id, lease.lease_id)
    message = None
    for _ in range(50):
        message = pubsub.get_message(timeout=0.1)
        if message:
            break
    pubsub.close()
    assert message is not None and message["data"] == b"queued:q"


def _next_message(pubsub, tries: int = 50) -> bytes | None:
    for _ in range(tries):
        message = pubsub.get_message(timeout=0.1)
        if message:
            return message["data"]
    return None


@pytest.mark.parametrize("end", ["complete", "fail", "cancel"])
def test_every_final_state_is_published_with_the_final_task(queue, any_redis, end):
    task_id = submit(queue)
    lease = take_one(queue)
    pubsub = any_redis.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(queue.keys.events)
    if end == "complete":
        queue.complete(task_id, lease.lease_id, result_key="outbox/r", content_type="text/plain",
                       size=3, model_version="m1")  # fmt: skip
    elif end == "fail":
        queue.fail(task_id, lease.lease_id, "boom \u2603 \"quoted\"\n/", retryable=False)
    else:
        queue.cancel(task_id)
    data = _next_message(pubsub)
    pubsub.close()
    assert data is not None
    topic, _, notice = data.partition(b"\n")
    assert topic == f"done:{task_id}".encode()
    assert notified_task(notice) == queue.get(task_id)  # every field, as a read gives it


def test_a_notice_that_is_not_a_task_hash_reads_as_none():
    for notice in (b"", b"not json", b"{}", b'["id"]', b'["queue", "q"]', b"[1, 2]"):
        assert notified_task(notice) is None


def test_complete_many_records_each_result_on_its_own(queue, clock):
    ids = [submit(queue) for _ in range(3)]
    leases = queue.take(["q"], max_tasks=3, lease_seconds=5, worker_id="w")
    queue.cancel(ids[1])
    done = [Completion(lease.task_id, lease.lease_id, f"r{i}", "text/plain", 1, "v2")
            for i, lease in enumerate(leases)]  # fmt: skip
    stale = Completion(ids[2], "not-the-lease", "late", "x", 1)
    outcomes = queue.complete_many([*done, stale])
    assert [(task.id, task.status) for task in (outcomes[0], outcomes[2])] == [
        (ids[0], "succeeded"), (ids[2], "succeeded")]  # fmt: skip
    assert isinstance(outcomes[1], TaskFinished) and isinstance(outcomes[3], LeaseLost)
    assert queue.complete_many(done[:1]) == [None]  # posting twice changes nothing
    first, second, third = queue.get_many(ids)
    assert (first.status, first.result_key, first.model_version) == ("succeeded", "r0", "v2")
    assert (second.status, third.result_key) == ("canceled", "r2")
    assert queue.get_many(["x" * 22]) == [None]


def _batch(count: int) -> list[tuple[NewTask, None]]:
    return [(NewTask(queue="q", owner="alice", content_type="text/plain", size=1), None)
            for _ in range(count)]  # fmt: skip


def test_batch_scripts_run_again_after_redis_loses_them(queue, any_redis):
    queue.submit_many(_batch(2))
    any_redis.script_flush()  # as after a Redis restart: the SHAs the queue holds name nothing
    ids = [submitted.task_id for submitted in queue.submit_many(_batch(2))]
    leases = queue.take(["q"], max_tasks=4, lease_seconds=5, worker_id="w")
    any_redis.script_flush()
    outcomes = queue.complete_many([Completion(lease.task_id, lease.lease_id, "r", "x", 1)
                                    for lease in leases])  # fmt: skip
    assert [task.status for task in outcomes] == ["succeeded"] * 4
    assert {task.id for task in outcomes} >= set(ids)


@pytest.mark.redis
def test_a_batch_is_one_script_call(real_redis, clock):
    """A batch of submits or of results is one ``EVALSHA`` (the script loaded once, called
    by SHA, no ``SCRIPT EXISTS`` first)."""
    queue = TaskQueue(real_redis, prefix="t", clock=clock)

    def cycle(count: int) -> list[Lease]:
        queue.submit_many(_batch(count))
        return queue.take(["q"], max_tasks=count, lease_seconds=5, worker_id="w")

    queue.complete_many([Completion(lease.task_id, lease.lease_id, "r", "x", 1)
                         for lease in cycle(1)])  # loads the scripts if this Redis lacks them

    def calls(command: str) -> int:
        return int(real_redis.info("commandstats").get(f"cmdstat_{command}", {}).get("calls", 0))

    exists, evalsha = calls("script|exists"), calls("evalsha")
    leases = cycle(4)
    done = [Completion(lease.task_id, lease.lease_id, "r", "x", 1) for lease in leases]
    assert all(task.status == "succeeded" for task in queue.complete_many(done))
    assert calls("evalsha") == evalsha + 3  # the submits, the take, the results
    assert calls("script|exists") == exists


def _messages(pubsub) -> list[list[bytes]]:
    """The messages published so far, each split into its events."""
    messages = []
    while (data := _next_message(pubsub, tries=3)) is not None:
        messages.append(data.split(K.EVENT_SEPARATOR.encode()))
    return messages


def test_a_batch_publishes_its_events_as_one_message(queue, any_redis):
    pubsub = any_redis.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(queue.keys.events)
    ids = [submitted.task_id for submitted in queue.submit_many(_batch(3))]
    assert _messages(pubsub) == [[b"queued:q"] * 3]  # one event a task: three takers to wake
    leases = queue.take(["q"], max_tasks=3, lease_seconds=5, worker_id="w")
    queue.complete_many([Completion(lease.task_id, lease.lease_id, "r", "x", 1)
                         for lease in leases])  # fmt: skip
    ((*events,),) = _messages(pubsub)
    pubsub.close()
    assert [event.partition(b"\n")[0] for event in events] == [f"done:{i}".encode() for i in ids]
    assert [notified_task(event.partition(b"\n")[2]) for event in events] == queue.get_many(ids)


def test_a_batch_larger_than_a_message_is_split(queue, any_redis):
    pubsub = any_redis.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(queue.keys.events)
    queue.submit_many(_batch(K.EVENTS_PER_MESSAGE + 1))
    assert [len(events) for events in _messages(pubsub)] == [K.EVENTS_PER_MESSAGE, 1]
    queue.submit(_batch(1)[0][0])  # a single submit publishes its event alone, as before
    assert _messages(pubsub) == [[b"queued:q"]]
    pubsub.close()


@pytest.mark.parametrize("reaper", ["reap", "take"])
def test_a_reap_publishes_its_events_as_one_message(queue, any_redis, clock, reaper):
    for _ in range(3):
        submit(queue)
    queue.take(["q"], max_tasks=3, lease_seconds=5, worker_id="w")
    pubsub = any_redis.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(queue.keys.events)
    clock.advance(6)
    if reaper == "reap":
        assert queue.reap() == 3
    else:  # a take reaps lapsed leases first, whatever queue it takes from
        assert queue.take(["other"], max_tasks=1, lease_seconds=5, worker_id="w2") == []
    assert _messages(pubsub) == [[b"queued:q"] * 3]  # all three back in the queue
    pubsub.close()
