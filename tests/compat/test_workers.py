"""inferbox's semantics behind the v0 surface: leases, FIFO, failures, isolation, and v0 <-> native
interoperation. Real HTTP to a broker with two server processes, on the test Redis."""

from __future__ import annotations

import base64
import threading
import time

import pytest
import requests

from broker.compat import parse_id
from client_sdk import Client
from tests.compat.conftest import (
    ADMIN_TOKEN,
    CLIENT_TOKEN,
    KEY_NEXT,
    KEY_PUT,
    SENTINEL,
    WORKER_TOKEN,
    StartBroker,
    V0Broker,
)
from worker import Worker

pytestmark = pytest.mark.redis


def predict(broker: V0Broker, payload: bytes) -> str:
    body = {"payload": base64.b64encode(payload).decode()}
    answer = requests.post(broker.predict_url, json=body, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.text


def take(broker: V0Broker, session: requests.Session | None = None) -> tuple[str, bytes] | None:
    answer = (session or requests).post(broker.getnexttask_url, data={}, timeout=30)
    if answer.status_code == 204:
        return None
    assert answer.status_code == 200, answer.text
    task_id, _, payload = answer.text.partition("|")
    return task_id, base64.b64decode(payload)


def put(broker: V0Broker, task_id: str, result: bytes) -> requests.Response:
    body = {"task_id": task_id, "result": base64.b64encode(result).decode()}
    return requests.post(broker.puttaskresult_url, json=body, timeout=30)


def get_result(broker: V0Broker, task_id: str) -> requests.Response:
    return requests.post(broker.getresult_url, json={"task_id": task_id}, timeout=30)


def test_two_v0_workers_polling_at_once_never_get_the_same_task(v0_broker: V0Broker):
    client_ids = [predict(v0_broker, f"task {n}".encode()) for n in range(60)]
    taken: dict[str, list[str]] = {"a": [], "b": []}
    start = threading.Barrier(2)

    def worker(name: str) -> None:
        with requests.Session() as session:
            start.wait()
            while (task := take(v0_broker, session)) is not None:
                taken[name].append(task[0])
                assert put(v0_broker, task[0], task[1].upper()).status_code == 200

    threads = [threading.Thread(target=worker, args=(name,)) for name in taken]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    guids = {name: [task_id.split(".")[0] for task_id in ids] for name, ids in taken.items()}
    assert guids["a"] and guids["b"], "both workers took part"
    assert not set(guids["a"]) & set(guids["b"])
    assert sorted(guids["a"] + guids["b"]) == sorted(c.split(".")[0] for c in client_ids)
    for n, client_id in enumerate(client_ids):
        answer = get_result(v0_broker, client_id)
        assert base64.b64decode(answer.text) == f"TASK {n}".encode()


def test_a_vanished_workers_task_is_handed_out_again_after_the_lease(
    start_v0_broker: StartBroker,
):
    broker = start_v0_broker(INFERBOX_COMPAT_LEASE="2")
    client_id = predict(broker, b"image")
    first = take(broker)
    assert first is not None
    assert take(broker) is None, "leased: no other worker gets it meanwhile"
    time.sleep(2.5)  # the first worker vanished without a result
    second = take(broker)
    assert second is not None and second[1] == b"image"
    assert second[0].split(".")[0] == first[0].split(".")[0] and second[0] != first[0]

    assert put(broker, second[0], b"from the second").status_code == 200
    late = put(broker, first[0], b"from the first")
    assert late.status_code == 409 and late.headers["Content-Type"].startswith("text/plain")
    assert base64.b64decode(get_result(broker, client_id).text) == b"from the second"
    assert put(broker, second[0], b"from the second").status_code == 200  # a repeat is harmless


def test_a_task_that_keeps_failing_does_not_block_the_others(start_v0_broker: StartBroker):
    broker = start_v0_broker(INFERBOX_COMPAT_LEASE="1", INFERBOX_DEFAULT_MAX_ATTEMPTS="2")
    poison = predict(broker, b"poison")
    healthy = [predict(broker, f"ok {n}".encode()) for n in range(3)]
    done, poison_takes, status = [], 0, ""
    deadline = time.monotonic() + 30
    while status != "failed" and time.monotonic() < deadline:
        task = take(broker)
        if task is None:
            status = get_result(broker, poison).headers["X-Inferbox-Status"]
            time.sleep(0.2)
        elif task[1] == b"poison":
            poison_takes += 1  # the worker dies on it: no result, the lease lapses
        else:
            assert put(broker, task[0], b"done").status_code == 200
            done.append(task[0].split(".")[0])
    assert done == [h.split(".")[0] for h in healthy], "served while the poison was leased"
    assert (poison_takes, status) == (2, "failed")
    assert get_result(broker, poison).text == SENTINEL
    task_id = parse_id(poison)[0]
    document = requests.get(f"{broker.url}/tasks/{task_id}", timeout=5,
                            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).json()  # fmt: skip
    assert document["status"] == "failed" and "lease expired" in document["error"]


def test_a_native_client_reads_what_a_v0_worker_posted(v0_broker: V0Broker):
    with Client(v0_broker.url, token=CLIENT_TOKEN) as client:
        task = client.submit(b"\x00\x01native bytes\xff", queue="default")
        taken = take(v0_broker)
        assert taken is not None and taken[1] == b"\x00\x01native bytes\xff"
        assert put(v0_broker, taken[0], b"\xffresult\x00").status_code == 200
        assert task.result(timeout=10) == b"\xffresult\x00"
        assert task.info()["worker_id"].startswith("v0@")


def test_a_v0_client_reads_what_a_native_worker_posted(v0_broker: V0Broker):
    client_id = predict(v0_broker, b"to be reversed")
    assert get_result(v0_broker, client_id).text == SENTINEL
    with Worker(v0_broker.url, token=WORKER_TOKEN, queue="default", wait=5) as worker:
        worker.run(lambda payload: payload[::-1], max_tasks=1)
    assert base64.b64decode(get_result(v0_broker, client_id).text) == b"desrever eb ot"


def test_each_function_key_reaches_the_tasks_of_the_others(v0_broker: V0Broker):
    client_id = predict(v0_broker, b"x")  # submitted with the predict_v0 key
    for key in (KEY_NEXT, KEY_PUT):  # the original's keys were per function; all are compat keys
        answer = requests.post(v0_broker.function_url("getresult_v0", key),
                               json={"task_id": client_id}, timeout=30)  # fmt: skip
        assert (answer.status_code, answer.text) == (200, SENTINEL)
    # A native client token is someone else: it does not see the v0 tasks, nor they its own.
    native = requests.post(v0_broker.function_url("getresult_v0", CLIENT_TOKEN),
                           json={"task_id": client_id}, timeout=30)  # fmt: skip
    assert native.headers["X-Inferbox-Status"] == "unknown"
    with Client(v0_broker.url, token=CLIENT_TOKEN) as client:
        mine = client.submit(b"mine")
    theirs = get_result(v0_broker, mine.id)
    assert (theirs.text, theirs.headers["X-Inferbox-Status"]) == (SENTINEL, "unknown")
