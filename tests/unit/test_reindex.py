"""The index rebuilt from storage: every state comes back, only what the index lacks is added."""

from __future__ import annotations

import json
import time

import fakeredis
import pytest

from broker import keys as K
from broker.cli import main
from broker.janitor import ensure_index
from broker.reindex import rebuild
from storage import open_store
from tests.conftest import REDIS_URL
from tests.unit.brokerkit import (
    ADMIN,
    CLIENT,
    box,
    make_app,
    put,
    put_error,
    status,
    submit,
    take,
)


def lived_a_day(store, clock):
    """A broker that saw every kind of task; returns (app, {name: task id})."""
    app = make_app(store, clock)
    http = app.test_client()
    ids = {}
    for name in ("succeeded", "failed", "running", "canceled", "queued-1", "queued-2"):
        ids[name] = submit(http, name.encode(), content_type="text/plain", queue="q")
        clock.advance(0.01)  # the rebuilt order is the submit order, to the millisecond
    ids["urgent"] = submit(http, b"urgent", queue="q", priority=7)
    ids["other-queue"] = submit(http, b"x", queue="other", max_attempts=5, ttl=600)
    ids["expiring"] = submit(http, b"x", queue="slow", ttl=30)
    assert take(http, queue="q")[0] == ids["urgent"]  # taken, then its worker vanishes
    task_id, lease = take(http, queue="q")
    assert put(http, task_id, lease, b"the answer").status_code == 200
    task_id, lease = take(http, queue="q")
    assert put_error(http, task_id, lease, "ValueError: bad", retryable=False).status_code == 200
    assert take(http, queue="q")[0] == ids["running"]
    assert http.post(f"/tasks/{ids['canceled']}/cancel", headers=CLIENT).status_code == 200
    box(app).janitor.run_once()  # state records the requests could not write, if any
    return app, ids


def test_an_empty_index_is_rebuilt_with_every_state(store, clock):
    _, ids = lived_a_day(store, clock)
    clock.advance(60)  # the `expiring` task's ttl runs out while the broker is down
    app = make_app(store, clock)  # a new, empty index on the same storage
    report = ensure_index(box(app).mailbox)
    assert report is not None and report.scanned == len(ids)
    assert report.restored == {"queued": 6, "succeeded": 1, "failed": 1, "canceled": 1}
    http = app.test_client()

    done = http.get(f"/getresult/{ids['succeeded']}", headers=CLIENT)
    assert done.status_code == 200 and done.data == b"the answer"
    failed = status(http, ids["failed"])
    assert (failed["status"], failed["error"], failed["attempts"]) == ("failed", "ValueError: bad",
                                                                       1)  # fmt: skip
    assert status(http, ids["canceled"])["status"] == "canceled"
    assert status(http, ids["running"])["status"] == "queued"  # it runs again: at least once
    assert status(http, ids["expiring"])["status"] == "expired"
    other = status(http, ids["other-queue"])
    assert (other["queue"], other["max_attempts"], other["status"]) == ("other", 5, "queued")
    # Priority first, then the original order: the rebuilt queue reads as the lost one did.
    order = [take(http, queue="q")[0] for _ in range(4)]
    assert order == [ids["urgent"], ids["running"], ids["queued-1"], ids["queued-2"]]
    # The owner came back: another client still cannot see the task, an admin can.
    assert http.get(f"/tasks/{ids['queued-1']}", headers={"Authorization": "Bearer bob-token"}
                    ).status_code == 404  # fmt: skip
    assert http.get(f"/tasks/{ids['queued-1']}", headers=ADMIN).status_code == 200


def test_a_non_empty_index_is_left_alone_at_start(store, clock):
    app, _ = lived_a_day(store, clock)
    assert ensure_index(box(app).mailbox) is None


def test_an_empty_store_needs_no_rebuild(store, clock):
    assert ensure_index(box(make_app(store, clock)).mailbox) is None


def test_rebuild_adds_only_what_the_index_lacks_and_respects_the_grace(store, clock):
    redis = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    app = make_app(store, clock, redis=redis)
    http = app.test_client()
    kept, lost = submit(http, b"kept"), submit(http, b"lost")
    task_id, lease = take(http)
    put(http, task_id, lease, b"result of kept")
    redis.delete(f"inferbox:task:{lost}")  # a Redis crash dropped this one's last write
    redis.zrem("inferbox:queue:default", lost)

    mailbox = box(app).mailbox
    assert rebuild(mailbox.queue, store, grace=60).young == 1  # could be a submit in flight
    assert http.get(f"/tasks/{lost}", headers=CLIENT).status_code == 404
    clock.advance(61)
    report = rebuild(mailbox.queue, store, grace=60)
    assert report.restored == {"queued": 1} and report.scanned == 2
    assert status(http, lost)["status"] == "queued"
    assert status(http, kept)["status"] == "succeeded"  # untouched
    assert take(http)[0] == lost


def test_the_latest_result_wins_when_a_refused_one_was_left_behind(store, clock):
    app = make_app(store, clock)
    http = app.test_client()
    task_id = submit(http)
    _, stale = take(http, lease=5)
    clock.advance(6)
    _, live = take(http)
    clock.advance(1)
    put(http, task_id, live, b"live")
    # A broker died between writing the stale attempt's blob and refusing it:
    store.put(K.result_key(task_id, stale), b"stale", content_type="text/plain",
              metadata={"task_id": task_id, "queue": "default", "owner": "x", "attempt": "1",
                        "finished_at": "2000-01-01T00:00:00.000Z"})  # fmt: skip
    rebuilt = make_app(store, clock)
    ensure_index(box(rebuilt).mailbox)
    assert rebuilt.test_client().get(f"/getresult/{task_id}", headers=CLIENT).data == b"live"


def test_a_failure_by_lapsed_lease_is_recorded_by_the_janitor(store, clock):
    app = make_app(store, clock)
    http = app.test_client()
    task_id = submit(http, max_attempts=1)
    take(http, lease=5)
    clock.advance(6)
    assert status(http, task_id)["status"] == "failed"  # settled by the read, in Lua
    assert not store.exists(K.state_key(task_id))
    assert box(app).janitor.run_once(reconcile=False).recorded == 1
    record = json.loads(store.read_bytes(K.state_key(task_id)))
    assert (record["status"], record["attempts"]) == ("failed", 1)
    assert "lease expired" in record["error"]


def test_blobs_that_describe_no_task_are_skipped(store, clock):
    app = make_app(store, clock)
    good = submit(app.test_client())
    store.put("inbox/not-a-task-id", b"x")
    store.put("inbox/" + "A" * 22, b"x", metadata={"task_id": "A" * 22, "queue": "../etc"})
    store.put(K.state_key("B" * 22), b"{not json")
    report = rebuild(box(make_app(store, clock)).mailbox.queue, store)
    assert report.scanned == 3 and report.broken == 2
    assert report.restored == {"queued": 1}
    assert good


@pytest.mark.redis
def test_reindex_command_on_a_real_redis(real_redis, tmp_path, monkeypatch, capsys):
    data = tmp_path / "data"
    monkeypatch.setenv("INFERBOX_REDIS_URL", REDIS_URL)
    monkeypatch.setenv("INFERBOX_STORAGE_URL", data.as_uri())
    store = open_store(data.as_uri())
    app = make_app(store, clock=time.time, redis=real_redis)
    ids = [submit(app.test_client(), str(i).encode()) for i in range(3)]
    real_redis.flushdb()  # the index is lost; storage is not
    assert main(["reindex"]) == 0
    assert "restored 3 (3 queued)" in capsys.readouterr().out
    assert {real_redis.hget(f"inferbox:task:{i}", "status") for i in ids} == {b"queued"}
    assert main(["reindex"]) == 0  # again: nothing missing, nothing added
    assert "restored 0;" in capsys.readouterr().out


def test_reindex_command_refuses_the_embedded_index(monkeypatch, capsys):
    monkeypatch.delenv("INFERBOX_REDIS_URL", raising=False)
    assert main(["reindex"]) == 2
    assert "embedded index lives inside the broker process" in capsys.readouterr().err
