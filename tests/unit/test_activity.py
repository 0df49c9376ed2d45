"""What the scripts record for operators (counters, histograms, workers, failures, webhook
events) and what /activity and /metrics make of it, on fakeredis and on a real Redis."""

from __future__ import annotations

import json

import pytest
from prometheus_client.parser import text_string_to_metric_families

from broker import Settings, create_app
from broker import keys as K
from broker.activity import Activity
from broker.queue import NewTask, TaskQueue
from storage import open_store

ADMIN = {"Authorization": "Bearer admin-token"}


@pytest.fixture
def queue(any_redis, clock) -> TaskQueue:
    return TaskQueue(any_redis, prefix="t", clock=clock)


def submit(queue: TaskQueue, name: str = "q", **options) -> str:
    new = NewTask(queue=name, owner="alice", content_type="application/json", size=2, **options)
    return queue.submit(new).task_id


def take(queue: TaskQueue, name: str = "q", worker: str = "w1", lease: int = 10):
    (lease_,) = queue.take([name], max_tasks=1, lease_seconds=lease, worker_id=worker)
    return lease_


def known_workload(queue: TaskQueue, clock) -> None:
    """6 submitted to q: 2 succeed, 1 fails twice (retried once, then failed), 1 is canceled,
    1 expires, 1 stays queued; 1 submitted to other stays queued."""
    ids = [submit(queue, max_attempts=2) for _ in range(4)]
    expiring = submit(queue, ttl=5)
    submit(queue)
    submit(queue, "other")
    queue.cancel(ids[3])
    clock.advance(2)
    for task_id in ids[:2]:
        lease = take(queue)
        assert lease.task_id == task_id
        clock.advance(3)
        queue.complete(task_id, lease.lease_id, result_key="r", content_type="text/plain",
                       size=1, model_version="v7")  # fmt: skip
    for _ in range(2):
        lease = take(queue, worker="w2")
        assert lease.task_id == ids[2]
        queue.fail(ids[2], lease.lease_id, "ValueError: bad input")
    clock.advance(5)
    assert queue.get(expiring).status == K.EXPIRED


def test_counters_histograms_and_throughput_after_a_known_workload(queue, clock):
    known_workload(queue, clock)
    by_name = {q.stats.name: q for q in Activity(queue).queues()}
    q = by_name["q"]
    assert q.counters == {"submitted": 6, "succeeded": 2, "failed": 1, "redelivered": 1,
                          "canceled": 1, "expired": 1}  # fmt: skip
    assert by_name["other"].counters["submitted"] == 1
    assert (q.stats.depth, q.stats.in_flight) == (1, 0)
    # processing took 3 s twice (the successes) and 0 s twice (the failures)
    waits, processing, e2e = (q.histograms[n] for n in K.HISTOGRAMS)
    assert waits.count == 4 and processing.count == 4 and e2e.count == 2
    assert processing.sum == pytest.approx(6.0)
    assert e2e.sum == pytest.approx(5.0 + 8.0)  # submitted at 0, done at 5 and at 8
    cumulative = dict(processing.cumulative())
    assert cumulative["0.05"] == 2 and cumulative["2.5"] == 2 and cumulative["5.0"] == 4
    assert cumulative["+Inf"] == 4
    assert q.finished_per_minute > 0  # 3 finished (2 succeeded, 1 failed) within the window


def test_workers_seen_with_their_queues_counts_and_model(queue, clock):
    known_workload(queue, clock)
    seen = {w.worker_id: w for w in Activity(queue).workers()}
    assert set(seen) == {"w1", "w2"}
    assert (seen["w1"].tasks_done, seen["w1"].model_version, seen["w1"].queues) == (2, "v7", ["q"])
    assert (seen["w2"].tasks_done, seen["w2"].tasks_failed) == (0, 2)
    assert Activity(queue).workers_alive() == 2
    clock.advance(K.WORKER_IDLE_GRACE + 1)
    assert Activity(queue).workers_alive() == 0
    assert {w.alive for w in Activity(queue).workers()} == {False}  # still listed, as gone
    clock.advance(K.WORKER_FORGET)
    queue.take(["q"], max_tasks=1, lease_seconds=10, worker_id="w3")
    assert [w.worker_id for w in Activity(queue).workers()] == ["w3"]


def test_a_worker_holding_a_lease_stays_alive_until_its_deadline(queue, clock):
    submit(queue)
    take(queue, lease=120)
    clock.advance(100)
    assert Activity(queue).workers_alive() == 1
    clock.advance(30)
    assert Activity(queue).workers_alive() == 0


def test_recent_failures_newest_first_and_bounded(queue, clock):
    known_workload(queue, clock)
    failures = Activity(queue).failures()
    assert [(f.attempt, f.final, f.worker_id) for f in failures] == [(2, True, "w2"),
                                                                     (1, False, "w2")]
    assert failures[0].error == "ValueError: bad input"
    for _ in range(K.RECENT_FAILURES + 5):
        task_id = submit(queue, "p", max_attempts=1)
        queue.fail(task_id, take(queue, "p").lease_id, "x" * (K.MAX_FAILURE_TEXT + 10))
    failures = Activity(queue).failures()
    assert len(failures) == K.RECENT_FAILURES
    assert len(failures[0].error) == K.MAX_FAILURE_TEXT


def test_webhook_events_are_queued_only_for_what_the_task_asked(queue, clock):
    wanted = submit(queue, webhook_url="https://example.com/h",
                    webhook_events=("completed", "progress"))  # fmt: skip
    quiet = submit(queue, webhook_url="https://example.com/h", webhook_events=("failed",))
    submit(queue)  # no webhook
    for task_id in (wanted, quiet):
        lease = take(queue)
        assert lease.task_id == task_id
        queue.heartbeat(task_id, lease.lease_id, (0.5, "half"))
        queue.heartbeat(task_id, lease.lease_id, (0.5, "half"))  # unchanged: no second event
        queue.complete(task_id, lease.lease_id, result_key="r", content_type="t", size=1)
    events = [json.loads(raw) for raw in queue.claim_webhook_events()]
    assert [(e["task_id"], e["event"]) for e in events] == [(wanted, "progress"),
                                                            (wanted, "completed")]
    assert events[0]["progress"] == {"fraction": 0.5, "message": "half"}
    assert len({e["id"] for e in events}) == 2
    assert queue.claim_webhook_events() == []  # claimed, not yet acknowledged
    clock.advance(K.WEBHOOK_RECLAIM + 1)
    again = queue.claim_webhook_events()  # the relay that claimed them never acknowledged
    assert sorted(json.loads(raw)["id"] for raw in again) == sorted(e["id"] for e in events)
    for raw in again:
        queue.ack_webhook_event(raw)
    clock.advance(K.WEBHOOK_RECLAIM + 1)
    assert queue.claim_webhook_events() == []


def test_final_states_other_than_success_are_failed_events(queue, clock):
    canceled = submit(queue, webhook_url="https://example.com/h", webhook_events=("failed",))
    expired = submit(queue, webhook_url="https://example.com/h", webhook_events=("failed",),
                     ttl=1)  # fmt: skip
    queue.cancel(canceled)
    clock.advance(2)
    queue.get(expired)
    events = [json.loads(raw) for raw in queue.claim_webhook_events()]
    assert [(e["task_id"], e["event"]) for e in events] == [(canceled, "canceled"),
                                                            (expired, "expired")]


@pytest.fixture
def http(any_redis, clock):
    settings = Settings(admin_tokens=("admin-token",), client_tokens=("c",),
                        storage_url="memory://")  # fmt: skip
    queue = TaskQueue(any_redis, prefix="t", clock=clock)
    known_workload(queue, clock)
    return create_app(settings, queue=queue, store=open_store("memory://")).test_client()


def test_metrics_endpoint_exposes_the_workload(http):
    response = http.get("/metrics", headers=ADMIN)
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain")
    samples = {(s.name, s.labels.get("queue"), s.labels.get("le")): s.value
               for family in text_string_to_metric_families(response.text)
               for s in family.samples}  # fmt: skip
    assert samples[("inferbox_queue_depth", "q", None)] == 1
    assert samples[("inferbox_queue_depth", "other", None)] == 1
    assert samples[("inferbox_queue_in_flight", "q", None)] == 0
    assert samples[("inferbox_tasks_submitted_total", "q", None)] == 6
    assert samples[("inferbox_tasks_succeeded_total", "q", None)] == 2
    assert samples[("inferbox_tasks_failed_total", "q", None)] == 1
    assert samples[("inferbox_tasks_redelivered_total", "q", None)] == 1
    assert samples[("inferbox_tasks_canceled_total", "q", None)] == 1
    assert samples[("inferbox_tasks_expired_total", "q", None)] == 1
    assert samples[("inferbox_task_end_to_end_seconds_count", "q", None)] == 2
    assert samples[("inferbox_task_processing_seconds_bucket", "q", "+Inf")] == 4
    assert samples[("inferbox_workers_alive", None, None)] == 2  # w1 and w2, seen 5 s ago


def test_metrics_and_activity_need_an_admin(http):
    client = {"Authorization": "Bearer c"}
    for path in ("/metrics", "/activity"):
        assert http.get(path).status_code == 401
        assert http.get(path, headers=client).status_code == 403


def test_activity_document(http):
    doc = http.get("/activity", headers=ADMIN).json
    q = next(item for item in doc["queues"] if item["name"] == "q")
    assert (q["depth"], q["succeeded"], q["failed"], q["redelivered"]) == (1, 2, 1, 1)
    assert {w["worker_id"] for w in doc["workers"]} == {"w1", "w2"}
    assert doc["failures"][0]["final"] is True and doc["failures"][0]["at"].endswith("Z")
    assert doc["webhook_backlog"] == 0
