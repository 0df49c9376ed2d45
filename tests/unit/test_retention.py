"""Retention: payloads and results are deleted after the retention period by the janitor, and
the task answers a clear `expired` meanwhile; queued tasks nobody takes expire by their ttl."""

from __future__ import annotations

import pytest

from broker import Settings
from broker import keys as K
from broker.errors import SettingsError
from storage import StorageUnavailable
from tests.unit.brokerkit import CLIENT, box, make_app, put, put_error, status, submit, take

RETENTION = 3600


@pytest.fixture
def app(store, clock):
    return make_app(store, clock, retention=RETENTION)


def finished_tasks(http):
    done, failed, canceled = submit(http, b"a"), submit(http, b"b"), submit(http, b"c")
    task_id, lease = take(http)
    put(http, task_id, lease, b"result")
    task_id, lease = take(http)
    put_error(http, task_id, lease, retryable=False)
    http.post(f"/tasks/{canceled}/cancel", headers=CLIENT)
    return done, failed, canceled


def test_final_tasks_keep_their_blobs_until_the_retention_period_ends(app, store, clock):
    http = app.test_client()
    done, failed, canceled = finished_tasks(http)
    janitor = box(app).janitor
    clock.advance(RETENTION - 1)
    assert janitor.run_once(reconcile=False).retired == 0
    assert http.get(f"/getresult/{done}", headers=CLIENT).data == b"result"
    assert len(list(store.list(""))) == 6  # 3 payloads, 1 result, 2 state records

    clock.advance(2)
    swept = janitor.run_once(reconcile=False)
    assert (swept.retired, swept.purged) == (3, 3)
    assert list(store.list("")) == []  # storage does not grow without bound
    for task_id in (done, failed, canceled):
        gone = http.get(f"/getresult/{task_id}", headers=CLIENT)
        assert gone.status_code == 410 and gone.json["status"] == "expired"
        assert "retention period" in gone.json["error"]
        assert gone.json["result_size"] is None and gone.json["result_content_type"] is None
    # The tombstone itself lasts one more retention period in Redis, then the id is unknown.
    redis = box(app).mailbox.queue.redis
    assert 0 < redis.ttl(f"inferbox:task:{done}") <= RETENTION
    assert redis.zcard("inferbox:finished") == 0 and redis.scard("inferbox:purge") == 0


def test_a_queue_nobody_polls_still_expires_and_is_cleaned(app, store, clock):
    http = app.test_client()
    task_id = submit(http, queue="abandoned", ttl=60)
    clock.advance(61)
    assert box(app).janitor.run_once(reconcile=False).expired == 1
    redis = box(app).mailbox.queue.redis
    assert redis.zcard("inferbox:queue:abandoned") == 0  # not waiting for a take to notice
    assert status(http, task_id)["status"] == "expired"
    assert store.exists(K.payload_key(task_id))
    clock.advance(RETENTION + 1)
    assert box(app).janitor.run_once(reconcile=False).purged == 1
    assert not store.exists(K.payload_key(task_id))


def test_only_final_tasks_are_retired(store, clock):
    app = make_app(store, clock, retention=100)
    http = app.test_client()
    running, queued = submit(http, queue="a"), submit(http, queue="b", ttl=1000)
    take(http, queue="a", lease=K.MAX_LEASE)
    clock.advance(500)
    assert box(app).janitor.run_once(reconcile=False).retired == 0
    assert status(http, running)["status"] == "running"
    assert status(http, queued)["status"] == "queued"
    assert len(list(store.list(""))) == 2


def test_a_purge_that_fails_is_retried(app, store, clock, monkeypatch):
    http = app.test_client()
    task_id = submit(http)
    http.post(f"/tasks/{task_id}/cancel", headers=CLIENT)
    clock.advance(RETENTION + 1)

    def broken(key):
        raise StorageUnavailable("disk on fire")

    monkeypatch.setattr(store, "delete", broken)
    with pytest.raises(Exception, match="disk on fire"):
        box(app).janitor.run_once(reconcile=False)
    assert status(http, task_id)["status"] == "expired"
    assert store.exists(K.payload_key(task_id))
    monkeypatch.undo()
    assert box(app).janitor.run_once(reconcile=False).purged == 1
    assert list(store.list("")) == []


def test_a_retired_task_is_not_brought_back_by_a_rebuild_while_purging(app, store, clock,
                                                                       monkeypatch):  # fmt: skip
    from broker.reindex import rebuild

    http = app.test_client()
    task_id = submit(http)
    http.post(f"/tasks/{task_id}/cancel", headers=CLIENT)
    clock.advance(RETENTION + 1)
    monkeypatch.setattr(store, "delete", lambda key: (_ for _ in ()).throw(
        StorageUnavailable("still down")))  # fmt: skip
    with pytest.raises(Exception, match="still down"):
        box(app).janitor.run_once(reconcile=False)
    queue = box(app).mailbox.queue
    queue.redis.delete(f"inferbox:task:{task_id}")  # the tombstone ran out before the purge
    assert rebuild(queue, store).restored == {}


def test_retention_setting():
    assert Settings.from_env({"INFERBOX_RETENTION": "120"}).retention == 120
    assert Settings.from_env({}).retention == K.DEFAULT_RETENTION == 86_400
    with pytest.raises(SettingsError, match="INFERBOX_RETENTION"):
        Settings.from_env({"INFERBOX_RETENTION": "0"})
