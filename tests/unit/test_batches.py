"""Client batches over HTTP: POST /predictbatch and POST /getresults (fakeredis, memory storage)."""

from __future__ import annotations

import json
import re
import sys
import threading

import pytest

from broker.errors import Unavailable
from broker.mailbox import PayloadUpload, ResultUpload
from client_sdk.http import multipart_body, parse_multipart
from storage import StorageError
from storage.file import FileStore
from tests.unit.brokerkit import (
    CLIENT,
    OTHER_CLIENT,
    WORKER,
    box,
    make_app,
    put,
    put_error,
    status,
    submit,
    take,
)


def predictbatch(http, parts, headers=CLIENT, **query):
    body, content_type = multipart_body(parts)
    return http.post("/predictbatch", data=body, content_type=content_type, headers=headers,
                     query_string=query)  # fmt: skip


def getresults(http, task_ids, wait=0, headers=CLIENT):
    return http.post("/getresults", json={"task_ids": task_ids, "wait": wait}, headers=headers)


def parts_of(response):
    assert response.status_code == 200, (response.status_code, response.data[:300])
    return {part.headers["X-Inferbox-Task-Id"]: part
            for part in parse_multipart(response.headers["Content-Type"], response.data)}


def stored(store):
    return list(store.list("inbox/"))


# -- /predictbatch ------------------------------------------------------------------------------


def test_a_batch_queues_every_part_in_order_with_its_own_type(http, store):
    parts = [({"Content-Type": "application/json"}, b'{"i": 0}'),
             ({"Content-Type": "image/png"}, b"\x89PNG\r\n--not-a-boundary"),
             ({}, b"")]  # fmt: skip
    answer = predictbatch(http, parts, queue="q", priority=7, ttl=60)
    assert answer.status_code == 202, answer.json
    docs = answer.json["tasks"]
    assert [doc["content_type"] for doc in docs] == [
        "application/json", "image/png", "application/octet-stream"]
    assert {(doc["status"], doc["queue"], doc["priority"], doc["replayed"]) for doc in docs} == {
        ("queued", "q", 7, False)}
    assert len(stored(store)) == 3
    for doc, (_, body) in zip(docs, parts, strict=True):  # workers get them in input order
        got = http.post("/getnexttask", headers=WORKER, query_string={"queue": "q"})
        assert got.headers["X-Inferbox-Task-Id"] == doc["task_id"] and got.data == body


def test_idempotency_keys_replay_per_part_and_store_no_second_payload(http, store):
    first = submit(http, headers={**CLIENT, "Idempotency-Key": "k1"})
    parts = [({"Idempotency-Key": "k1"}, b"again"), ({"Idempotency-Key": "k2"}, b"new"),
             ({"Idempotency-Key": "k2"}, b"twice in one batch"), ({}, b"no key")]
    docs = predictbatch(http, parts).json["tasks"]
    assert docs[0]["task_id"] == first and docs[2]["task_id"] == docs[1]["task_id"]
    assert [doc["replayed"] for doc in docs] == [True, False, True, False]
    assert len(stored(store)) == 1 + 2
    retried = predictbatch(http, parts).json["tasks"]  # a retried batch queues nothing new
    assert [doc["task_id"] for doc in retried[:3]] == [doc["task_id"] for doc in docs[:3]]
    assert [doc["replayed"] for doc in retried] == [True, True, True, False]
    assert len(stored(store)) == 1 + 2 + 1
    other = predictbatch(http, parts[:1], headers=OTHER_CLIENT).json["tasks"][0]
    assert other["task_id"] != first and not other["replayed"]  # keys are per owner


@pytest.mark.parametrize("parts, query, code", [
    ([({"Content-Type": "text/plain"}, b"ok"), ({"Content-Type": "bad\x7f"}, b"x")], {},
     "invalid_option"),
    ([({}, b"ok"), ({"Idempotency-Key": "k" * 256}, b"x")], {}, "invalid_option"),
    ([({}, b"ok"), ({"Content-Type": "application/vnd.inferbox.payload-ref+json"},
                    b'{"url": "memory://x/y"}')], {}, "bad_request"),
    ([({}, b"ok")] * 101, {}, "bad_request"),
    ([({}, b"ok")], {"priority": 10}, "invalid_option"),
    ([({}, b"ok")], {"queue": "no spaces"}, "invalid_queue"),
    ([({}, b"ok")], {"wait": 1}, "invalid_option"),
    ([({}, b"ok")], {"webhook": "https://example.com/"}, "invalid_option"),
])  # fmt: skip
def test_a_bad_batch_is_refused_whole_and_stores_nothing(http, store, app, parts, query, code):
    answer = predictbatch(http, parts, **query)
    assert answer.status_code == 400 and answer.json["error"] == code, answer.json
    assert answer.json["message"]
    assert stored(store) == [] and box(app).mailbox.queue.stats() == []


def test_a_body_that_is_not_multipart_is_refused(http, store):
    for body, content_type in ((b"{}", "application/json"),
                               (b"--x\r\n\r\nno end", "multipart/mixed; boundary=x")):
        answer = http.post("/predictbatch", data=body, content_type=content_type, headers=CLIENT)
        assert answer.status_code == 400 and answer.json["error"] == "bad_request"
    assert stored(store) == []


def test_a_batch_over_the_payload_limit_is_413(http, store):
    answer = predictbatch(http, [({}, b"x" * 6_000), ({}, b"y" * 6_000)])
    assert answer.status_code == 413 and answer.json["message"]
    assert stored(store) == []


def test_a_batch_that_does_not_fit_in_the_queue_is_refused_whole(store, clock):
    http = make_app(store, clock, max_queue_depth=5).test_client()
    submit(http, queue="q")
    submit(http, queue="q")
    refused = predictbatch(http, [({}, b"x")] * 4, queue="q")
    assert refused.status_code == 429 and refused.json["error"] == "queue_full"
    assert int(refused.headers["Retry-After"]) >= 1
    assert len(stored(store)) == 2
    assert predictbatch(http, [({}, b"x")] * 3, queue="q").status_code == 202
    assert len(stored(store)) == 5


def test_every_task_of_a_batch_spends_a_rate_token(store, clock):
    http = make_app(store, clock, submit_rate=1, submit_burst=4).test_client()
    assert predictbatch(http, [({}, b"x")] * 3).status_code == 202
    refused = predictbatch(http, [({}, b"x")] * 2)  # one token left, two needed
    assert refused.status_code == 429 and refused.json["error"] == "rate_limited"
    clock.advance(1)
    assert predictbatch(http, [({}, b"x")] * 2).status_code == 202
    assert http.post("/predict", data=b"x", headers=CLIENT).status_code == 429
    big = predictbatch(http, [({}, b"x")] * 10)  # larger than the burst: needs a full bucket
    assert big.status_code == 429
    clock.advance(4)
    assert predictbatch(http, [({}, b"x")] * 10).status_code == 202
    clock.advance(5)  # the bucket is 6 tokens in debt: still empty after 5 seconds
    assert http.post("/predict", data=b"x", headers=CLIENT).status_code == 429
    clock.advance(2)
    assert http.post("/predict", data=b"x", headers=CLIENT).status_code == 202


def test_payloads_already_stored_are_deleted_when_indexing_fails(app, store, monkeypatch):
    mailbox = box(app).mailbox

    def broken(batch):
        raise KeyboardInterrupt  # stopped mid-submit, before Redis saw the batch

    monkeypatch.setattr(mailbox.queue, "submit_many", broken)
    with pytest.raises(KeyboardInterrupt):
        mailbox.submit_many([PayloadUpload(b"a", "text/plain")] * 3, queue="q", owner="alice",
                            priority=0, max_attempts=1, ttl=60)  # fmt: skip
    assert stored(store) == []


def test_a_batch_writes_its_payloads_several_at_a_time(app, store, monkeypatch):
    mailbox = box(app).mailbox
    in_flight = _InFlight(store, monkeypatch, "_put")
    submitted = mailbox.submit_many([PayloadUpload(b"%d" % i, "text/plain") for i in range(16)],
                                    queue="q", owner="alice", priority=0, max_attempts=1,
                                    ttl=60)  # fmt: skip
    assert in_flight.most >= 2  # the first write waited for a second one to start
    assert [store.get(f"inbox/{task.id}").read() for task, _ in submitted] == [
        b"%d" % i for i in range(16)]  # each id names its own payload, in input order


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="syncfs(2) is Linux's")
def test_on_a_file_store_a_batch_is_made_durable_together(tmp_path, clock, monkeypatch):
    """A batch of payloads, then of results: two file system syncs each, no fsync a blob."""
    import storage.file

    real_syncfs, syncs, fsyncs = storage.file._syncfs, [], []
    assert real_syncfs is not None

    def syncfs(fd):
        syncs.append(fd)
        real_syncfs(fd)

    monkeypatch.setattr(storage.file, "_syncfs", syncfs)
    monkeypatch.setattr(storage.file.os, "fsync", fsyncs.append)
    store = FileStore(tmp_path)
    mailbox = box(make_app(store, clock)).mailbox
    mailbox.submit_many([PayloadUpload(b"%d" % i, "text/plain") for i in range(8)], queue="q",
                        owner="alice", priority=0, max_attempts=1, ttl=60)  # fmt: skip
    assert (len(syncs), fsyncs) == (2, [])
    taken = mailbox.take(["q"], max_tasks=8, lease_seconds=30, worker_id="w", wait=0)
    done = mailbox.complete_many([ResultUpload(lease.task_id, lease.lease_id, blob.read() * 2,
                                               "text/plain") for lease, blob in taken])  # fmt: skip
    assert (len(syncs), fsyncs) == (4, [])
    assert sorted(mailbox.open_result(task).read() for task in done) == sorted(
        b"%d%d" % (i, i) for i in range(8))  # fmt: skip


def test_a_storage_failure_mid_batch_deletes_every_payload_written(app, store, monkeypatch):
    mailbox = box(app).mailbox
    real_put, calls, lock = store._put, [], threading.Lock()

    def put(key, source, content_type, metadata):
        with lock:
            calls.append(key)
            if len(calls) == 6:
                raise StorageError("disk full")
        return real_put(key, source, content_type, metadata)

    monkeypatch.setattr(store, "_put", put)
    with pytest.raises(Unavailable, match="disk full"):
        mailbox.submit_many([PayloadUpload(b"%d" % i, "text/plain") for i in range(12)],
                            queue="q", owner="alice", priority=0, max_attempts=1, ttl=60)
    assert stored(store) == []
    assert mailbox.queue.take(["q"], max_tasks=20, lease_seconds=30, worker_id="w") == []


def test_a_batch_of_results_is_written_several_at_a_time_and_undone_on_failure(
    app, store, monkeypatch
):  # fmt: skip
    mailbox = box(app).mailbox
    mailbox.submit_many([PayloadUpload(b"%d" % i, "text/plain") for i in range(16)], queue="q",
                        owner="alice", priority=0, max_attempts=1, ttl=60)  # fmt: skip
    taken = mailbox.take(["q"], max_tasks=16, lease_seconds=30, worker_id="w", wait=0)
    uploads = [ResultUpload(lease.task_id, lease.lease_id, b"r", "text/plain")
               for lease, _ in taken]  # fmt: skip
    real_put = store._put

    def put(key, source, content_type, metadata):
        if key.startswith("outbox/" + uploads[9].task_id):
            raise StorageError("disk full")
        return real_put(key, source, content_type, metadata)

    monkeypatch.setattr(store, "_put", put)
    with pytest.raises(Unavailable, match="disk full"):
        mailbox.complete_many(uploads)
    assert list(store.list("outbox/")) == []  # the other fifteen were written, then deleted
    assert {mailbox.queue.get(u.task_id).status for u in uploads} == {"running"}

    monkeypatch.setattr(store, "_put", real_put)
    in_flight = _InFlight(store, monkeypatch, "_put")
    done = mailbox.complete_many(uploads)
    assert in_flight.most >= 2
    assert {task.status for task in done} == {"succeeded"}


class _InFlight:
    """Wraps ``store.<method>`` to count calls running at once; the first call waits (up to
    5 s) for a second to start, so calls made one after another show ``most == 1``."""

    def __init__(self, store, monkeypatch, method):
        self.now = self.most = 0
        self._lock = threading.Lock()
        self._second = threading.Event()
        real = getattr(store, method)

        def wrapped(*args, **kwargs):
            with self._lock:
                self.now += 1
                self.most = max(self.most, self.now)
                first = self.most == 1 and self.now == 1 and not self._second.is_set()
                if self.now >= 2:
                    self._second.set()
            try:
                if first:
                    self._second.wait(5)
                return real(*args, **kwargs)
            finally:
                with self._lock:
                    self.now -= 1

        monkeypatch.setattr(store, method, wrapped)


# -- /getresults --------------------------------------------------------------------------------


def finish(http, task_id, lease_id, body=b"done"):
    assert put(http, task_id, lease_id, body, "text/plain").status_code == 200


def test_getresults_answers_each_final_task_and_leaves_out_the_rest(http, store):
    done, failed, canceled, pending = (submit(http) for _ in range(4))
    for task_id in (done, failed):
        got = take(http)
        assert got[0] == task_id
        if task_id == done:
            finish(http, done, got[1], b"\x00result")
        else:
            put_error(http, failed, got[1], "ValueError: bad", retryable=False)
    http.post(f"/tasks/{canceled}/cancel", headers=CLIENT)
    theirs = submit(http, headers=OTHER_CLIENT)
    unknown, malformed = "Q" * 22, "not an id"
    asked = [pending, done, failed, canceled, theirs, unknown, malformed, done]
    parts = parts_of(getresults(http, asked, wait=5))
    assert set(parts) == {done, failed, canceled, theirs, unknown, malformed}
    assert parts[done].body == b"\x00result"
    assert parts[done].headers["Content-Type"] == "text/plain"
    assert parts[done].headers["X-Inferbox-Status"] == "succeeded"
    assert json.loads(parts[failed].body)["error"] == "ValueError: bad"
    assert parts[failed].headers["X-Inferbox-Status"] == "failed"
    assert json.loads(parts[canceled].body)["status"] == "canceled"
    for task_id in (theirs, unknown, malformed):  # another owner's task looks unknown
        assert parts[task_id].headers["X-Inferbox-Status"] == "not_found"
        assert json.loads(parts[task_id].body) == {"error": "not_found",
                                                   "message": f"no task {task_id}"}
    assert status(http, theirs, OTHER_CLIENT)["status"] == "queued"


def test_getresults_is_204_when_nothing_ended_within_the_wait(http):
    ids = [submit(http) for _ in range(3)]
    take(http)
    assert getresults(http, ids, wait=0.2).status_code == 204


def test_getresults_wakes_when_one_of_its_tasks_ends(http, app):
    ids = [submit(http) for _ in range(3)]
    task_id, lease_id = take(http)
    notifier = box(app).mailbox.notifier
    listening = threading.Event()
    real_listen = notifier.listen

    def listen(topics, **options):  # tell the test once /getresults is listening
        listening.set()
        return real_listen(topics, **options)

    notifier.listen = listen  # type: ignore[method-assign]
    worker = threading.Thread(target=lambda: listening.wait(10) and finish(
        http, task_id, lease_id))  # fmt: skip
    worker.start()
    answer = getresults(http, ids, wait=60)  # box().settings.max_wait caps it anyway
    worker.join()
    assert list(parts_of(answer)) == [task_id]


def test_getresults_names_the_model_version(http):
    task_id = submit(http)
    _, lease_id = take(http)
    http.post(f"/puttaskresult/{task_id}", data=b"[]", content_type="application/json",
              headers={**WORKER, "X-Inferbox-Lease-Id": lease_id,
                       "X-Inferbox-Model-Version": "v7"})  # fmt: skip
    part = parts_of(getresults(http, [task_id]))[task_id]
    assert part.headers["X-Inferbox-Model-Version"] == "v7"
    assert part.headers["Content-Type"] == "application/json" and part.body == b"[]"


@pytest.mark.parametrize("body", [
    {}, {"task_ids": []}, {"task_ids": "abc"}, {"task_ids": ["a"] * 101},
    {"task_ids": [1]}, {"task_ids": [None]}, {"task_ids": ["a\nb"]},
    {"task_ids": ["a"], "wait": -1},
    {"task_ids": ["a"], "wait": "soon"}, {"task_ids": ["a"], "wait": None},
    {"task_ids": ["a"], "other": 1}, {"task_ids": None},
])  # fmt: skip
def test_bad_getresults_bodies_are_400(http, body):
    answer = http.post("/getresults", json=body, headers=CLIENT)
    assert answer.status_code == 400 and answer.json["message"], answer.json


def test_getresults_refuses_query_parameters_and_workers(http):
    assert http.post("/getresults?wait=1", json={"task_ids": ["a"]},
                     headers=CLIENT).status_code == 400  # fmt: skip
    assert http.post("/getresults", json={"task_ids": ["a"]}, headers=WORKER).status_code == 403


def test_predictbatch_and_getresults_round_trip(http):
    docs = predictbatch(http, [({}, str(i).encode()) for i in range(5)]).json["tasks"]
    ids = [doc["task_id"] for doc in docs]
    taken = http.post("/getnexttask", headers=WORKER, query_string={"max_tasks": 5})
    leases = dict(re.findall(r"X-Inferbox-Task-Id: (\S+)\r\nX-Inferbox-Lease-Id: (\S+)",
                             taken.data.decode("latin-1")))  # fmt: skip
    for task_id in ids:
        finish(http, task_id, leases[task_id], task_id.encode())
    parts = parts_of(getresults(http, ids))
    assert list(parts) == ids and all(parts[i].body == i.encode() for i in ids)
