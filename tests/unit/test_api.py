"""The HTTP API through Flask's test client, on fakeredis and memory storage."""

from __future__ import annotations

import io
import json
import re
import threading
import time

import fakeredis
import pytest

from broker import Settings, create_app
from broker.queue import TaskQueue
from tests.unit.brokerkit import count_reads, recheck_every

CLIENT = {"Authorization": "Bearer alice-token"}
OTHER_CLIENT = {"Authorization": "Bearer bob-token"}
WORKER = {"Authorization": "Bearer worker-token"}
ADMIN = {"Authorization": "Bearer admin-token"}


@pytest.fixture
def app(store, clock):
    settings = Settings(
        client_tokens=("alice-token", "bob-token"), worker_tokens=("worker-token",),
        admin_tokens=("admin-token",), max_payload_bytes=1000, storage_url="memory://",
    )  # fmt: skip
    queue = TaskQueue(fakeredis.FakeRedis(server=fakeredis.FakeServer()), clock=clock)
    app = create_app(settings, queue=queue, store=store)
    recheck_every(app, 0.05)
    return app


def submit(http, body=b'{"x": 1}', content_type="application/json", headers=CLIENT, **query):
    response = http.post("/predict", data=body, content_type=content_type, headers=headers,
                         query_string=query)  # fmt: skip
    assert response.status_code == 202, response.json
    return response.json["task_id"]


def take(http, **query):
    response = http.post("/getnexttask", headers=WORKER, query_string=query)
    assert response.status_code == 200, response.status_code
    return response


def put(http, task_id, lease_id, body=b"ok", content_type="text/plain", **headers):
    return http.post(f"/puttaskresult/{task_id}", data=body, content_type=content_type,
                     headers={**WORKER, "X-Inferbox-Lease-Id": lease_id, **headers})  # fmt: skip


def put_error(http, task_id, lease_id, error="ValueError: nope", retryable=True):
    body = json.dumps({"error": error, "retryable": retryable})
    return put(http, task_id, lease_id, body, "application/vnd.inferbox.error+json")


# -- the happy path ---------------------------------------------------------------------------


def test_submit_take_put_get_binary_payload_untouched(http):
    payload = bytes(range(256)) * 3
    response = http.post("/predict?queue=images", data=payload, content_type="image/png",
                         headers=CLIENT)  # fmt: skip
    assert response.status_code == 202
    doc = response.json
    assert doc["status"] == "queued" and doc["queue"] == "images" and len(doc["task_id"]) == 22
    assert response.headers["Location"] == f"/tasks/{doc['task_id']}"

    got = take(http, queue="images")
    assert got.data == payload and got.content_type == "image/png"
    assert got.headers["X-Inferbox-Task-Id"] == doc["task_id"]
    assert got.headers["X-Inferbox-Attempt"] == "1"
    lease_id = got.headers["X-Inferbox-Lease-Id"]

    result = bytes(reversed(payload))
    answer = put(http, doc["task_id"], lease_id, result, "application/octet-stream",
                 **{"X-Inferbox-Model-Version": "digits-1"})  # fmt: skip
    assert answer.status_code == 200 and answer.json["status"] == "succeeded"

    fetched = http.get(f"/getresult/{doc['task_id']}", headers=CLIENT)
    assert fetched.status_code == 200 and fetched.data == result
    assert fetched.content_type == "application/octet-stream"
    assert fetched.headers["X-Inferbox-Model-Version"] == "digits-1"
    status = http.get(f"/tasks/{doc['task_id']}", headers=CLIENT).json
    assert status["model_version"] == "digits-1" and status["worker_id"] == "anonymous"


def test_nothing_to_do_is_204_after_the_wait(http):
    started = time.monotonic()
    response = http.post("/getnexttask?wait=0.2", headers=WORKER)
    assert response.status_code == 204 and time.monotonic() - started >= 0.2


def test_take_long_poll_wakes_when_a_task_arrives(http):
    threading.Timer(0.2, lambda: submit(http)).start()
    response = http.post("/getnexttask", headers=WORKER, json={"wait": 20})
    assert response.status_code == 200


def test_several_tasks_come_as_multipart_with_binary_bodies(http):
    bodies = [b"\r\n--not-a-boundary\r\n", bytes(range(256)), b""]
    ids = [submit(http, body, "application/octet-stream") for body in bodies]
    response = take(http, max_tasks=5, worker_id="gpu-1")
    assert response.mimetype == "multipart/mixed"
    boundary = response.mimetype_params["boundary"].encode()
    raw = response.data
    assert raw.endswith(b"--" + boundary + b"--\r\n")
    parts = raw[: -len(boundary) - 6].split(b"--" + boundary + b"\r\n")[1:]
    assert len(parts) == 3
    for part, task_id, body in zip(parts, ids, bodies, strict=True):
        head, _, rest = part.partition(b"\r\n\r\n")
        assert f"X-Inferbox-Task-Id: {task_id}".encode() in head
        assert rest[:-2] == body and rest.endswith(b"\r\n")
    assert len(raw) == int(response.headers["Content-Length"])


def test_priority_then_fifo_over_http(http):
    first, second = submit(http), submit(http)
    urgent = submit(http, priority=9)
    order = [take(http).headers["X-Inferbox-Task-Id"] for _ in range(3)]
    assert order == [urgent, first, second]


def test_idempotency_key_returns_the_same_task(http, store):
    headers = {**CLIENT, "Idempotency-Key": "order-42"}
    first = http.post("/predict", data=b"a", headers=headers)
    again = http.post("/predict", data=b"a", headers=headers)
    assert again.status_code == 202 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json["task_id"] == first.json["task_id"]
    assert list(store.list("inbox/")) == [f"inbox/{first.json['task_id']}"]


def test_payload_blob_carries_index_metadata(http, store):
    task_id = submit(http, queue="m", priority=3)
    info = store.head(f"inbox/{task_id}")
    assert info.content_type == "application/json"
    assert {k: info.metadata[k] for k in ("task_id", "queue", "priority", "max_attempts")} == {
        "task_id": task_id, "queue": "m", "priority": "3", "max_attempts": "3"}


# -- result status codes, long-poll, cancel, progress --------------------------------------------


def test_getresult_status_codes(http, clock):
    pending = submit(http)
    assert http.get(f"/getresult/{pending}", headers=CLIENT).status_code == 202
    assert http.get(f"/getresult/{'A' * 22}", headers=CLIENT).status_code == 404

    canceled = submit(http)
    assert http.post(f"/tasks/{canceled}/cancel", headers=CLIENT).json["status"] == "canceled"
    assert http.get(f"/getresult/{canceled}", headers=CLIENT).status_code == 409

    got = take(http)  # takes `pending`
    put_error(http, pending, got.headers["X-Inferbox-Lease-Id"], retryable=False)
    failed = http.get(f"/getresult/{pending}", headers=CLIENT)
    assert failed.status_code == 424 and failed.json["error"] == "ValueError: nope"

    expiring = submit(http, ttl=5)
    clock.advance(6)
    expired = http.get(f"/getresult/{expiring}", headers=CLIENT)
    assert expired.status_code == 410 and expired.json["status"] == "expired"


def test_getresult_long_poll_answers_when_the_task_finishes(http):
    task_id = submit(http)
    got = take(http)

    def finish():
        time.sleep(0.3)
        put(http, task_id, got.headers["X-Inferbox-Lease-Id"], b"done")

    threading.Thread(target=finish).start()
    started = time.monotonic()
    response = http.get(f"/getresult/{task_id}?wait=30", headers=CLIENT)
    assert response.status_code == 200 and response.data == b"done"
    assert time.monotonic() - started < 10  # woken by the notification, not by the wait running out


def test_a_woken_getresult_answers_from_the_done_notice_without_reading_the_task(app, http):
    mailbox = app.extensions["inferbox"].mailbox
    recheck_every(app, 60)  # only the notice wakes the wait
    task_id = submit(http)
    lease_id = take(http).headers["X-Inferbox-Lease-Id"]
    reads = count_reads(mailbox.queue)  # by this thread: the waiting request

    def finish():
        time.sleep(0.3)
        put(http, task_id, lease_id, b"done")

    threading.Thread(target=finish).start()
    response = http.get(f"/getresult/{task_id}?wait=30", headers=CLIENT)
    assert response.status_code == 200 and response.data == b"done"
    assert reads == [task_id]  # the look before waiting; the answer came with the notice


def test_progress_and_cancel_reach_the_worker(http):
    task_id = submit(http)
    lease_id = take(http).headers["X-Inferbox-Lease-Id"]
    beat = http.post(f"/tasks/{task_id}/heartbeat", headers=WORKER,
                     json={"lease_id": lease_id, "progress": {"fraction": 0.4, "message": "2/5"}})
    assert beat.status_code == 200 and beat.json["canceled"] is False
    status = http.get(f"/tasks/{task_id}", headers=CLIENT).json
    assert status["status"] == "running" and status["progress"] == {"fraction": 0.4,
                                                                    "message": "2/5"}
    http.post(f"/tasks/{task_id}/cancel", headers=CLIENT)
    beat = http.post(f"/tasks/{task_id}/heartbeat", headers=WORKER, json={"lease_id": lease_id})
    assert beat.json["canceled"] is True
    late = put(http, task_id, lease_id)
    assert late.status_code == 409 and late.json["error"] == "task_finished"
    assert http.post(f"/tasks/{task_id}/cancel", headers=CLIENT).status_code == 409


def test_stale_lease_result_is_refused_and_deleted(http, store, clock):
    task_id = submit(http)
    stale = take(http, lease=5).headers["X-Inferbox-Lease-Id"]
    clock.advance(6)
    live = take(http).headers["X-Inferbox-Lease-Id"]
    assert put(http, task_id, live, b"live").status_code == 200
    refused = put(http, task_id, stale, b"stale")
    assert refused.status_code == 409 and refused.json["error"] == "lease_lost"
    assert http.get(f"/getresult/{task_id}", headers=CLIENT).data == b"live"
    assert list(store.list(f"outbox/{task_id}/")) == [f"outbox/{task_id}/{live}"]
    again = put(http, task_id, live, b"live")
    assert again.status_code == 200 and again.json["status"] == "succeeded"


def test_failed_attempts_retry_with_the_error_text(http):
    task_id = submit(http, max_attempts=2)
    for attempt in (1, 2):
        got = take(http)
        assert got.headers["X-Inferbox-Attempt"] == str(attempt)
        put_error(http, task_id, got.headers["X-Inferbox-Lease-Id"], f"boom {attempt}")
    status = http.get(f"/tasks/{task_id}", headers=CLIENT).json
    assert (status["status"], status["attempts"], status["error"]) == ("failed", 2, "boom 2")


def test_queue_stats_for_admins(http):
    submit(http, queue="a")
    submit(http, queue="a")
    take(http, queue="a")
    stats = http.get("/queues", headers=ADMIN).json["queues"]
    assert stats[0]["name"] == "a" and (stats[0]["depth"], stats[0]["in_flight"]) == (1, 1)


def test_healthz(http):
    response = http.get("/healthz")
    assert response.status_code == 200
    assert response.json == {"status": "ok", "redis": "ok", "storage": "ok"}


# -- bad input: a clear 4xx with a JSON body, nothing half-written -----------------------------


def assert_error(response, status, code):
    assert response.status_code == status, (response.status_code, response.data[:300])
    assert response.is_json and response.json["error"] == code and response.json["message"]


@pytest.mark.parametrize(
    "query, code",
    [({"queue": "../etc"}, "invalid_queue"), ({"queue": ""}, "invalid_queue"),
     ({"queue": "a" * 65}, "invalid_queue"), ({"priority": "high"}, "invalid_option"),
     ({"priority": "10"}, "invalid_option"), ({"max_attempts": "0"}, "invalid_option"),
     ({"ttl": "-1"}, "invalid_option"), ({"queue": " "}, "invalid_queue"),
     ({"priority": ""}, "invalid_option")],
)  # fmt: skip
def test_bad_submit_options(http, store, query, code):
    assert_error(http.post("/predict", data=b"x", headers=CLIENT, query_string=query), 400, code)
    assert list(store.list("inbox/")) == []


def test_payload_over_the_limit_is_413_and_stores_nothing(http, store):
    assert_error(http.post("/predict", data=b"x" * 1001, headers=CLIENT), 413,
                 "payload_too_large")  # fmt: skip

    # Chunked, no Content-Length (as gunicorn passes it on): the limit holds while it streams in.
    response = http.post("/predict", input_stream=io.BytesIO(b"x" * 2000), headers=CLIENT,
                         environ_overrides={"wsgi.input_terminated": True})
    assert_error(response, 413, "payload_too_large")
    assert list(store.list("")) == []
    assert http.get("/queues", headers=ADMIN).json["queues"] == []


def test_result_over_the_limit_is_413_and_the_task_still_runs(http):
    task_id = submit(http)
    lease_id = take(http).headers["X-Inferbox-Lease-Id"]
    assert_error(put(http, task_id, lease_id, b"y" * 1001), 413, "payload_too_large")
    assert http.get(f"/tasks/{task_id}", headers=CLIENT).json["status"] == "running"


def test_bad_take_options(http):
    assert_error(http.post("/getnexttask", headers=WORKER, data=b"{not json",
                           content_type="application/json"), 400, "bad_request")  # fmt: skip
    assert_error(http.post("/getnexttask", headers=WORKER, json=[1]), 400, "bad_request")
    assert_error(http.post("/getnexttask", headers=WORKER, json={"max_tasks": 0}), 400,
                 "invalid_option")  # fmt: skip
    assert_error(http.post("/getnexttask?wait=nan", headers=WORKER), 400, "invalid_option")
    assert_error(http.post("/getnexttask?wait=-1", headers=WORKER), 400, "invalid_option")
    assert_error(http.post("/getnexttask?wait=inf", headers=WORKER), 400, "invalid_option")
    assert_error(http.post("/getnexttask", headers=WORKER, json={"queue": ["ok", "no/pe"]}),
                 400, "invalid_queue")  # fmt: skip


def test_bad_lease_and_error_documents(http):
    task_id = submit(http)
    lease_id = take(http).headers["X-Inferbox-Lease-Id"]
    no_lease = http.post(f"/puttaskresult/{task_id}", data=b"r", headers=WORKER)
    assert_error(no_lease, 400, "bad_request")
    assert_error(put(http, task_id, "not-the-lease"), 409, "lease_lost")
    assert_error(put(http, task_id, lease_id, b"{oops", "application/vnd.inferbox.error+json"),
                 400, "bad_request")  # fmt: skip
    assert_error(put(http, task_id, lease_id, b'{"retryable": 1}',
                     "application/vnd.inferbox.error+json"), 400, "bad_request")  # fmt: skip
    beat = http.post(f"/tasks/{task_id}/heartbeat", headers=WORKER,
                     json={"lease_id": lease_id, "progress": {"fraction": 2}})  # fmt: skip
    assert_error(beat, 400, "invalid_option")
    assert_error(http.post(f"/tasks/{task_id}/heartbeat", headers=WORKER, json={}), 400,
                 "bad_request")  # fmt: skip
    assert http.get(f"/tasks/{task_id}", headers=CLIENT).json["status"] == "running"


def test_wrong_method_unknown_route_and_unknown_task(http):
    response = http.get("/predict", headers=CLIENT)
    assert_error(response, 405, "method_not_allowed")
    assert "POST" in response.headers["Allow"]
    assert_error(http.get("/nope"), 404, "not_found")
    assert_error(http.get("/tasks/" + "Z" * 22, headers=CLIENT), 404, "not_found")
    assert_error(http.get("/tasks/..%2F..%2Fetc", headers=CLIENT), 404, "not_found")
    assert_error(http.get("/getresult/short", headers=CLIENT), 404, "not_found")


def test_tokens_and_roles(http):
    assert_error(http.post("/predict", data=b"x"), 401, "unauthorized")
    assert_error(http.post("/predict", data=b"x", headers={"Authorization": "Bearer nope"}), 401,
                 "unauthorized")  # fmt: skip
    assert_error(http.post("/predict", data=b"x", headers={"Authorization": "Basic abc"}), 401,
                 "unauthorized")  # fmt: skip
    assert_error(http.post("/predict", data=b"x", headers=WORKER), 403, "forbidden")
    assert_error(http.post("/getnexttask", headers=CLIENT), 403, "forbidden")
    assert_error(http.get("/queues", headers=CLIENT), 403, "forbidden")
    assert_error(http.get("/queues", headers=WORKER), 403, "forbidden")
    assert http.get("/healthz").status_code == 200


def test_a_client_cannot_see_another_clients_task(http):
    task_id = submit(http)
    for response in (
        http.get(f"/tasks/{task_id}", headers=OTHER_CLIENT),
        http.get(f"/getresult/{task_id}", headers=OTHER_CLIENT),
        http.post(f"/tasks/{task_id}/cancel", headers=OTHER_CLIENT),
    ):
        assert_error(response, 404, "not_found")
    assert http.get(f"/tasks/{task_id}", headers=CLIENT).json["status"] == "queued"
    assert http.get(f"/tasks/{task_id}", headers=ADMIN).status_code == 200


def test_open_broker_without_tokens(store, clock):
    queue = TaskQueue(fakeredis.FakeRedis(server=fakeredis.FakeServer()), clock=clock)
    http = create_app(Settings(storage_url="memory://"), queue=queue, store=store).test_client()
    task_id = http.post("/predict", data=b"x").json["task_id"]
    assert http.post("/getnexttask").headers["X-Inferbox-Task-Id"] == task_id


def test_unstorable_content_type_is_400_not_503(http, store):
    headers = {**CLIENT, "Content-Type": "t/" + "x" * 1100}
    response = http.post("/predict", data=b"x", headers=headers)
    assert_error(response, 400, "bad_request")
    assert list(store.list("")) == []


def test_release_puts_the_task_back_for_another_worker_at_once(http):
    task_id = submit(http)
    lease_id = take(http).headers["X-Inferbox-Lease-Id"]
    released = http.post(f"/tasks/{task_id}/release", headers=WORKER, json={"lease_id": lease_id})
    assert released.status_code == 200
    assert (released.json["status"], released.json["attempts"]) == ("queued", 0)
    again = take(http, worker_id="w2")
    assert again.headers["X-Inferbox-Task-Id"] == task_id
    assert again.headers["X-Inferbox-Attempt"] == "1"  # the released attempt did not count


def test_release_wakes_a_waiting_take(http, app):
    task_id = submit(http)
    lease_id = take(http).headers["X-Inferbox-Lease-Id"]
    answers = []
    waiter = threading.Thread(target=lambda: answers.append(
        app.test_client().post("/getnexttask", headers=WORKER, query_string={"wait": 20})))
    waiter.start()
    time.sleep(0.2)
    started = time.monotonic()
    http.post(f"/tasks/{task_id}/release", headers={**WORKER, "X-Inferbox-Lease-Id": lease_id})
    waiter.join(timeout=20)
    assert answers[0].status_code == 200 and answers[0].headers["X-Inferbox-Task-Id"] == task_id
    assert time.monotonic() - started < 5  # woken by the release, not by the wait running out


def test_bad_releases_change_nothing(http):
    task_id = submit(http)
    lease_id = take(http).headers["X-Inferbox-Lease-Id"]
    assert_error(http.post(f"/tasks/{task_id}/release", headers=WORKER, json={}), 400,
                 "bad_request")  # fmt: skip
    assert_error(http.post(f"/tasks/{task_id}/release", headers=WORKER,
                           json={"lease_id": "not-the-lease"}), 409, "lease_lost")  # fmt: skip
    assert_error(http.post(f"/tasks/{task_id}/release", headers=CLIENT,
                           json={"lease_id": lease_id}), 403, "forbidden")  # fmt: skip
    assert_error(http.post("/tasks/" + "Z" * 22 + "/release", headers=WORKER,
                           json={"lease_id": lease_id}), 404, "not_found")  # fmt: skip
    http.post(f"/tasks/{task_id}/cancel", headers=CLIENT)
    assert_error(http.post(f"/tasks/{task_id}/release", headers=WORKER,
                           json={"lease_id": lease_id}), 409, "task_finished")  # fmt: skip
    assert http.get(f"/tasks/{task_id}", headers=CLIENT).json["status"] == "canceled"


def multipart_results(parts, boundary="b0undary"):
    body = b""
    for headers, payload in parts:
        lines = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        body += f"--{boundary}\r\n{lines}\r\n".encode() + payload + b"\r\n"
    return body + f"--{boundary}--\r\n".encode(), f"multipart/mixed; boundary={boundary}"


def test_several_results_in_one_request_each_recorded_alone(http):
    ids = [submit(http) for _ in range(4)]
    taken = take(http, max_tasks=4)
    leases = dict(re.findall(r"X-Inferbox-Task-Id: (\S+)\r\nX-Inferbox-Lease-Id: (\S+)",
                             taken.data.decode("latin-1")))  # fmt: skip
    assert sorted(leases) == sorted(ids)
    a, b, c, d = ids
    body, content_type = multipart_results([
        ({"X-Inferbox-Task-Id": a, "X-Inferbox-Lease-Id": leases[a], "Content-Type": "image/png"},
         b"\x89PNG\r\n--b0und"),
        ({"X-Inferbox-Task-Id": b, "X-Inferbox-Lease-Id": leases[b],
          "Content-Type": "application/vnd.inferbox.error+json"},
         b'{"error": "ValueError: bad pixel", "retryable": false}'),
        ({"X-Inferbox-Task-Id": c, "X-Inferbox-Lease-Id": "stale", "Content-Type": "text/plain"},
         b"late"),
        ({"X-Inferbox-Task-Id": d, "X-Inferbox-Lease-Id": leases[d],
          "Content-Type": "application/json", "X-Inferbox-Model-Version": "v9"}, b"[]"),
    ])  # fmt: skip
    answer = http.post("/puttaskresults", data=body, content_type=content_type,
                       headers={**WORKER, "X-Inferbox-Model-Version": "v1"})  # fmt: skip
    assert answer.status_code == 200
    results = answer.json["results"]
    assert [r["task_id"] for r in results] == ids
    assert [r.get("status") or r["error"] for r in results] == [
        "succeeded", "failed", "lease_lost", "succeeded"]
    got = http.get(f"/getresult/{a}", headers=CLIENT)
    assert got.data == b"\x89PNG\r\n--b0und" and got.headers["Content-Type"] == "image/png"
    assert got.headers["X-Inferbox-Model-Version"] == "v1"
    assert http.get(f"/tasks/{d}", headers=CLIENT).json["model_version"] == "v9"
    assert http.get(f"/tasks/{b}", headers=CLIENT).json["error"] == "ValueError: bad pixel"
    assert http.get(f"/tasks/{c}", headers=CLIENT).json["status"] == "running"
    again = http.post("/puttaskresults", data=body, content_type=content_type, headers=WORKER)
    assert again.json["results"][0]["status"] == "succeeded"  # posting twice is harmless


def test_a_bad_part_refuses_the_whole_batch_and_records_nothing(http):
    task_id = submit(http)
    lease_id = take(http).headers["X-Inferbox-Lease-Id"]
    good = ({"X-Inferbox-Task-Id": task_id, "X-Inferbox-Lease-Id": lease_id}, b"ok")
    for bad in (({"X-Inferbox-Task-Id": task_id}, b"no lease"),
                ({"X-Inferbox-Task-Id": task_id, "X-Inferbox-Lease-Id": lease_id,
                  "Content-Type": "application/vnd.inferbox.error+json"}, b"{oops")):
        body, content_type = multipart_results([good, bad])
        answer = http.post("/puttaskresults", data=body, content_type=content_type,
                           headers=WORKER)  # fmt: skip
        assert_error(answer, 400, "bad_request")
    assert_error(http.post("/puttaskresults", data=b"--x\r\n\r\nunterminated", headers=WORKER,
                           content_type="multipart/mixed; boundary=x"), 400, "bad_request")
    assert_error(http.post("/puttaskresults", data=b"{}", headers=WORKER,
                           content_type="application/json"), 400, "bad_request")
    assert http.get(f"/tasks/{task_id}", headers=CLIENT).json["status"] == "running"
