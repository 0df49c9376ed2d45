"""Batches, contexts, interrupts and background runs of the worker, against a mocked broker."""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
import requests
import responses

from client_sdk import AuthError
from client_sdk.http import parse_multipart
from worker import BatchContext, Canceled, TaskContext, Worker, handler
from worker.worker import default_model_version

BROKER = "http://broker.test"
TAKE = f"{BROKER}/getnexttask"
PUT_MANY = f"{BROKER}/puttaskresults"
ERROR_TYPE = "application/vnd.inferbox.error+json"


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def take_answer(tasks: list[tuple[str, bytes, str]]) -> dict:
    """A multipart/mixed take answer: (task id, body, content type) per part."""
    body = b""
    for task_id, payload, content_type in tasks:
        head = (f"--zz\r\nContent-Type: {content_type}\r\nX-Inferbox-Task-Id: {task_id}\r\n"
                f"X-Inferbox-Lease-Id: L-{task_id}\r\nX-Inferbox-Attempt: 1\r\n\r\n")  # fmt: skip
        body += head.encode() + payload + b"\r\n"
    return {"body": body + b"--zz--\r\n", "content_type": "multipart/mixed; boundary=zz"}


def posted_parts(call: responses.Call) -> dict[str, tuple[str, bytes]]:
    request = call.request
    parts = parse_multipart(request.headers["Content-Type"], request.body)
    return {p.headers["X-Inferbox-Task-Id"]: (p.headers["Content-Type"], p.body) for p in parts}


def accept_all(request: requests.PreparedRequest) -> tuple[int, dict, str]:
    parts = parse_multipart(request.headers["Content-Type"], request.body)
    results = [{"task_id": p.headers["X-Inferbox-Task-Id"], "status": "succeeded"}
               for p in parts]  # fmt: skip
    return 200, {}, json.dumps({"results": results})


@pytest.fixture
def broker() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.add_callback(responses.POST, PUT_MANY, callback=accept_all)
        yield rsps


def put_many_calls(broker: responses.RequestsMock) -> list[responses.Call]:
    return [call for call in broker.calls if call.request.url == PUT_MANY]


def test_a_batch_handler_gets_stacked_arrays_and_results_go_back_to_their_tasks(broker) -> None:
    tasks = [(f"T{i}", npy(np.full((2, 2), i, dtype=np.float32)), "application/x-npy")
             for i in range(4)]  # fmt: skip
    broker.add(responses.POST, TAKE, **take_answer(tasks))
    calls = []

    def double(batch):
        calls.append(batch)
        return batch * 2

    stats = Worker(BROKER, batch_size=4, worker_id="w").run(double, max_tasks=4)
    [batch] = calls
    assert isinstance(batch, np.ndarray) and batch.shape == (4, 2, 2)
    [take] = [call.request for call in broker.calls if call.request.url.startswith(TAKE)]
    assert take.params["max_tasks"] == "4"
    [put] = put_many_calls(broker)  # one request for the whole batch
    parts = posted_parts(put)
    for i in range(4):
        content_type, body = parts[f"T{i}"]
        assert content_type == "application/x-npy"
        np.testing.assert_array_equal(np.load(io.BytesIO(body)), np.full((2, 2), 2 * i))
    assert (stats.succeeded, stats.batches) == (4, 1)


def test_inputs_that_do_not_stack_come_as_a_list(broker) -> None:
    tasks = [("A", b'{"x": 1}', "application/json"), ("B", b"hi", "text/plain")]
    broker.add(responses.POST, TAKE, **take_answer(tasks))
    seen = []

    @handler(batched=True)
    def echo(batch):
        seen.append(batch)
        return [{"got": item} for item in batch]

    Worker(BROKER, batch_size=2).run(echo, max_tasks=2)
    assert seen == [[{"x": 1}, "hi"]]
    parts = posted_parts(put_many_calls(broker)[0])
    assert json.loads(parts["B"][1]) == {"got": "hi"}


def test_one_bad_item_fails_only_its_own_task(broker) -> None:
    tasks = [("A", b'{"x": 1}', "application/json"), ("B", b"{broken", "application/json"),
             ("C", b'{"x": 0}', "application/json"), ("D", b'{"x": 4}', "application/json")]
    broker.add(responses.POST, TAKE, **take_answer(tasks))
    calls = []

    def inverse(batch):
        calls.append(len(batch))
        return [1 / item["x"] for item in batch]  # C divides by zero

    Worker(BROKER, batch_size=4).run(inverse, max_tasks=4, batched=True)
    assert calls == [3, 1, 1, 1]  # B never reached the model; the failing batch was split
    parts = posted_parts(put_many_calls(broker)[0])
    assert json.loads(parts["A"][1]) == 1.0 and json.loads(parts["D"][1]) == 0.25
    assert parts["B"][0] == parts["C"][0] == ERROR_TYPE
    assert json.loads(parts["B"][1])["retryable"] is False  # it will never decode
    assert json.loads(parts["C"][1])["error"].startswith("ZeroDivisionError")


def test_a_wrong_number_of_outputs_is_an_error_not_a_mismatch(broker) -> None:
    broker.add(responses.POST, TAKE, **take_answer([("A", b"1", "application/json"),
                                                     ("B", b"2", "application/json")]))
    Worker(BROKER, batch_size=2).run(lambda batch: [0], max_tasks=2, batched=True)
    parts = posted_parts(put_many_calls(broker)[0])
    assert json.loads(parts["A"][1]) == 0 and json.loads(parts["B"][1]) == 0  # one by one


def test_png_results_when_the_handler_says_so(broker) -> None:
    from PIL import Image

    broker.add(responses.POST, TAKE, **take_answer([("A", b"[3]", "application/json"),
                                                     ("B", b"[5]", "application/json")]))

    @handler(batched=True, result_type="image/png")
    def masks(batch):
        return np.stack([np.full((4, 6), value[0], dtype=np.uint8) for value in batch])

    Worker(BROKER, batch_size=2).run(masks, max_tasks=2)
    parts = posted_parts(put_many_calls(broker)[0])
    content_type, body = parts["B"]
    assert content_type == "image/png"
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(body))),
                                  np.full((4, 6), 5, dtype=np.uint8))  # fmt: skip


def test_refused_parts_are_counted_as_dropped(broker) -> None:
    broker.replace(responses.POST, PUT_MANY, json={"results": [
        {"task_id": "A", "status": "succeeded"},
        {"task_id": "B", "error": "lease_lost", "message": "gone"}]})  # fmt: skip
    broker.add(responses.POST, TAKE, **take_answer([("A", b"1", "application/json"),
                                                     ("B", b"2", "application/json")]))
    stats = Worker(BROKER, batch_size=2).run(lambda batch: list(batch), max_tasks=2)
    assert (stats.succeeded, stats.dropped) == (1, 1)


def test_context_reports_progress_and_sees_a_cancel(broker) -> None:
    broker.add(responses.POST, TAKE, body=b"{}", content_type="application/json",
               headers={"X-Inferbox-Task-Id": "T1", "X-Inferbox-Lease-Id": "L1"})  # fmt: skip
    beats = []

    def heartbeat(request):
        beats.append(json.loads(request.body))
        return 200, {}, json.dumps({"lease_deadline": None, "canceled": len(beats) >= 2})

    broker.add_callback(responses.POST, f"{BROKER}/tasks/T1/heartbeat", callback=heartbeat)
    steps = []

    def long_task(payload, ctx: TaskContext):
        assert ctx.task_id == "T1" and ctx.attempt == 1
        for step in range(200):
            ctx.check()
            ctx.progress(step / 200, f"step {step}")
            steps.append(step)
            time.sleep(0.05)
        return "finished"

    stats = Worker(BROKER, cancel_poll=0.3).run(long_task, max_tasks=1)
    assert beats[0]["progress"]["message"].startswith("step")
    assert 0 < len(steps) < 200  # stopped at a check, long before the end
    assert not [c for c in broker.calls if "/puttaskresult" in c.request.url]  # result dropped
    assert stats.dropped == 1


def test_batch_context_covers_every_task(broker) -> None:
    broker.add(responses.POST, TAKE, **take_answer([("A", b"1", "application/json"),
                                                     ("B", b"2", "application/json")]))
    seen = []

    def batch_fn(batch, ctx: BatchContext):
        seen.append([task.task_id for task in ctx])
        ctx.progress(0.5, "half")
        assert not ctx.canceled
        return list(batch)

    Worker(BROKER, batch_size=2).run(batch_fn, max_tasks=2)
    assert seen == [["A", "B"]]


def test_a_canceled_batch_raises_canceled_from_check() -> None:
    class Gone:
        def lost(self, task):
            return "canceled by a client"

        def ask(self, task):
            pass

    from worker.task import TakenTask

    task = TakenTask("T", "L", "", "q", 1, "application/json", b"1")
    ctx = BatchContext([TaskContext(task, Gone())])  # type: ignore[arg-type]
    assert ctx.canceled
    with pytest.raises(Canceled):
        ctx.check()


def test_an_interrupt_hands_back_the_batch_in_hand_and_the_one_fetched_ahead(broker) -> None:
    broker.add(responses.POST, TAKE, **take_answer([("A", b"1", "application/json"),
                                                     ("B", b"2", "application/json")]))
    broker.add(responses.POST, TAKE, **take_answer([("C", b"3", "application/json"),
                                                     ("D", b"4", "application/json")]))
    for task_id in "ABCD":
        broker.add(responses.POST, f"{BROKER}/tasks/{task_id}/release", json={"status": "queued"})

    def model(batch):
        deadline = time.monotonic() + 5
        while len([c for c in broker.calls if c.request.url.startswith(TAKE)]) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        raise KeyboardInterrupt  # what Ctrl-C or a notebook interrupt does to the model code

    stats = Worker(BROKER, batch_size=2).run(model)
    released = sorted(c.request.url.split("/")[-2] for c in broker.calls
                      if c.request.url.endswith("/release"))  # fmt: skip
    assert released == ["A", "B", "C", "D"]
    assert stats.interrupted and stats.released == 4 and stats.done == 0


def takes(broker: responses.RequestsMock) -> list[requests.PreparedRequest]:
    return [call.request for call in broker.calls if call.request.url.startswith(TAKE)]


def max_tasks_asked(request: requests.PreparedRequest) -> int:
    return int(parse_qs(urlsplit(request.url).query)["max_tasks"][0])


def test_prefetch_takes_the_batches_ahead_in_one_request_and_cuts_them_up(broker) -> None:
    broker.add(responses.POST, TAKE, **take_answer([(task_id, b"1", "application/json")
                                                     for task_id in "ABC"]))  # fmt: skip
    broker.add(responses.POST, TAKE, **take_answer([("D", b"1", "application/json")]))
    for task_id in "CD":  # a batch of one is posted alone, unless it waited with another
        broker.add(responses.POST, f"{BROKER}/puttaskresult/{task_id}",
                   json={"task_id": task_id, "status": "succeeded"})  # fmt: skip
    seen: list[list[int]] = []

    def model(batch):
        seen.append(list(batch))
        return [value + 1 for value in batch]

    stats = Worker(BROKER, batch_size=2, prefetch=2).run(model, batched=True, max_tasks=4)
    assert [max_tasks_asked(request) for request in takes(broker)] == [4, 1]
    assert [len(batch) for batch in seen] == [2, 1, 1]  # A+B, C, then D from the second take
    assert stats.succeeded == 4


def test_one_take_asks_for_no_more_than_the_broker_gives_in_one_request(broker) -> None:
    broker.add(responses.POST, TAKE, json={"error": "unauthorized", "message": "bad"}, status=401)
    with pytest.raises(AuthError):
        Worker(BROKER, batch_size=40, prefetch=4).run(lambda batch: batch, batched=True)
    assert max_tasks_asked(takes(broker)[0]) == 80  # two batches of 40: the broker's limit is 100


def test_with_prefetch_finished_results_waiting_for_the_poster_go_in_one_post(broker) -> None:
    broker.add(responses.POST, TAKE, **take_answer([("A", b"1", "application/json"),
                                                     ("B", b"2", "application/json"),
                                                     ("C", b"3", "application/json")]))
    worker = Worker(BROKER, prefetch=3)
    posting_a = threading.Event()

    def first_post(request):  # held until B and C are finished and waiting for the poster
        posting_a.set()
        deadline = time.monotonic() + 5
        while worker._run is None or worker._run.done.qsize() < 2:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        return 200, {}, json.dumps({"task_id": "A", "status": "succeeded"})

    def model(payload):
        if payload == 2:  # B starts once A's post is under way
            assert posting_a.wait(5)
        return payload * 10

    broker.add_callback(responses.POST, f"{BROKER}/puttaskresult/A", callback=first_post)
    stats = worker.run(model, max_tasks=3)
    assert max_tasks_asked(takes(broker)[0]) == 3
    (coalesced,) = put_many_calls(broker)
    assert posted_parts(coalesced) == {"B": ("application/json", b"20"),
                                       "C": ("application/json", b"30")}  # fmt: skip
    assert stats.succeeded == 3


def test_an_interrupt_hands_back_every_task_prefetched(broker) -> None:
    broker.add(responses.POST, TAKE, **take_answer([(task_id, b"1", "application/json")
                                                     for task_id in "ABC"]))  # fmt: skip
    for task_id in "ABC":
        broker.add(responses.POST, f"{BROKER}/tasks/{task_id}/release", json={"status": "queued"})

    def model(payload):
        raise KeyboardInterrupt

    stats = Worker(BROKER, prefetch=3).run(model, max_tasks=3)
    released = sorted(c.request.url.split("/")[-2] for c in broker.calls
                      if c.request.url.endswith("/release"))  # fmt: skip
    assert released == ["A", "B", "C"]
    assert stats.interrupted and stats.released == 3 and stats.done == 0


def test_prefetch_is_checked() -> None:
    for bad in (0, 17):
        with pytest.raises(ValueError, match="prefetch"):
            Worker(BROKER, prefetch=bad)


def test_start_runs_in_the_background_and_stop_hands_back_what_is_left(broker) -> None:
    broker.add(responses.POST, TAKE, body=b"1", content_type="application/json",
               headers={"X-Inferbox-Task-Id": "T1", "X-Inferbox-Lease-Id": "L1"})  # fmt: skip
    broker.add(responses.POST, f"{BROKER}/puttaskresult/T1", json={"status": "succeeded"})
    broker.add(responses.POST, TAKE, status=204)
    worker = Worker(BROKER, wait=0).start(lambda payload: payload + 1)
    deadline = time.monotonic() + 5
    while worker.stats.done < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert worker.running
    worker.stop()
    assert not worker.running and worker.stats.succeeded == 1
    put = next(c.request for c in broker.calls if "/puttaskresult/" in c.request.url)
    assert put.body == b"2"


def test_a_fatal_take_error_in_the_background_is_raised_by_stop(broker) -> None:
    broker.add(responses.POST, TAKE, json={"error": "unauthorized", "message": "bad"}, status=401)
    worker = Worker(BROKER).start(lambda payload: payload)
    deadline = time.monotonic() + 5
    while worker.running or worker._thread.is_alive():  # type: ignore[union-attr]
        assert time.monotonic() < deadline
        time.sleep(0.01)
    from client_sdk import AuthError

    with pytest.raises(AuthError):
        worker.stop()


def test_model_version_defaults_to_a_hash_of_the_handlers_module() -> None:
    from worker.examples import digits

    version = default_model_version(digits.predict)
    assert version.startswith("worker.examples.digits@") and len(version.split("@")[1]) == 12
    assert default_model_version(digits.predict) == version  # stable

    class Versioned:
        model_version = "resnet-7"

        def __call__(self, payload):
            return payload

    assert default_model_version(Versioned()) == "resnet-7"


def test_stats_and_the_progress_line(broker, capsys) -> None:
    broker.add(responses.POST, TAKE, **take_answer([("A", b"1", "application/json"),
                                                     ("B", b"2", "application/json")]))

    def slow(batch):
        time.sleep(0.05)
        return list(batch)

    stats = Worker(BROKER, batch_size=2).run(slow, max_tasks=2, progress=True)
    assert stats.busy_seconds >= 0.05 and 0 < stats.busy_fraction <= 1
    line = capsys.readouterr().err
    assert "2 tasks" in line and "batch=" in line and "busy=" in line


def test_threads_do_not_outlive_the_run(broker) -> None:
    broker.add(responses.POST, TAKE, body=b"1", content_type="application/json",
               headers={"X-Inferbox-Task-Id": "T1", "X-Inferbox-Lease-Id": "L1"})  # fmt: skip
    broker.add(responses.POST, f"{BROKER}/puttaskresult/T1", json={"status": "succeeded"})
    before = threading.active_count()
    Worker(BROKER).run(lambda payload: payload, max_tasks=1)
    deadline = time.monotonic() + 3
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert threading.active_count() == before


def test_stop_hands_back_unstarted_tasks_at_once_not_after_the_batch(broker) -> None:
    tasks = [(f"T{i}", b"1", "application/json") for i in range(4)]
    broker.add(responses.POST, TAKE, **take_answer(tasks[:2]))
    broker.add(responses.POST, TAKE, **take_answer(tasks[2:]))
    for task_id, _, _ in tasks:
        broker.add(responses.POST, f"{BROKER}/tasks/{task_id}/release", json={"status": "queued"})
    broker.add(responses.POST, f"{BROKER}/puttaskresult/T0", json={"status": "succeeded"})
    worker = Worker(BROKER, batch_size=2)
    released_at = {}

    def one_at_a_time(payload):  # per task, in batches of two
        deadline = time.monotonic() + 5
        while len([c for c in broker.calls if c.request.url.startswith(TAKE)]) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        worker.stop(wait=False)
        deadline = time.monotonic() + 5
        while len(released_at) < 2 and time.monotonic() < deadline:  # T2, T3: fetched ahead
            released_at.update({c.request.url.split("/")[-2]: time.monotonic()
                                for c in broker.calls if c.request.url.endswith("/release")})
            time.sleep(0.01)
        return payload

    stats = worker.run(one_at_a_time, batched=False)
    assert sorted(released_at) == ["T2", "T3"]  # released while T0 was still in the handler
    released = sorted(c.request.url.split("/")[-2] for c in broker.calls
                      if c.request.url.endswith("/release"))  # fmt: skip
    assert released == ["T1", "T2", "T3"]  # T1, never started, goes back too
    assert (stats.succeeded, stats.released) == (1, 3)
