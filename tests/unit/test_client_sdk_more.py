"""predict, map, content types inferred at submit, and results decoded on request."""

from __future__ import annotations

import io
import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests
import responses
from PIL import Image

from client_sdk import Client, TaskFailed
from client_sdk.codec import decode, encode, read_file
from client_sdk.http import multipart_body, parse_multipart

BROKER = "http://broker.test"


class FakeBroker:
    """Answers /predict with a new task id and /getresult with the payload's JSON doubled;
    /predictbatch and /getresults likewise, in batches."""

    def __init__(self, delay: float = 0.0) -> None:
        self.payloads: dict[str, bytes] = {}
        self.types: dict[str, str] = {}
        self.delay = delay
        self.in_flight = 0
        self.most_in_flight = 0
        self.lock = threading.Lock()
        self.batches: list[int] = []

    def predict(self, request: requests.PreparedRequest):
        with self.lock:
            task_id = f"T{len(self.payloads)}"
            body = request.body  # a file object when a Path was submitted: it streams
            self.payloads[task_id] = body.read() if hasattr(body, "read") else body
            self.types[task_id] = request.headers["Content-Type"]
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        return 202, {}, json.dumps({"task_id": task_id, "status": "queued"})

    def result(self, request: requests.PreparedRequest):
        task_id = request.path_url.split("/")[2].split("?")[0]
        time.sleep(self.delay)
        with self.lock:
            self.in_flight -= 1
        value = json.loads(self.payloads[task_id])
        if value is None:  # the poison pill
            return 424, {}, json.dumps({"task_id": task_id, "status": "failed", "error": "boom"})
        return 200, {"Content-Type": "application/json"}, json.dumps(value * 2)

    def predictbatch(self, request: requests.PreparedRequest):
        docs = []
        for part in parse_multipart(request.headers["Content-Type"], request.body):
            with self.lock:
                task_id = f"T{len(self.payloads)}"
                self.payloads[task_id] = part.body
                self.types[task_id] = part.headers["Content-Type"]
                self.in_flight += 1
                self.most_in_flight = max(self.most_in_flight, self.in_flight)
            docs.append({"task_id": task_id, "status": "queued"})
        self.batches.append(len(docs))
        return 202, {}, json.dumps({"tasks": docs})

    def getresults(self, request: requests.PreparedRequest):
        """The older half of the tasks asked for end now (at least one): the client asks
        again for the rest."""
        asked = json.loads(request.body)["task_ids"]
        time.sleep(self.delay)
        parts = []
        for task_id in asked[: max(1, len(asked) // 2)]:
            with self.lock:
                self.in_flight -= 1
            value = json.loads(self.payloads[task_id])
            if value is None:
                doc = {"task_id": task_id, "status": "failed", "error": "boom"}
                parts.append(({"X-Inferbox-Task-Id": task_id, "X-Inferbox-Status": "failed",
                               "Content-Type": "application/json"}, json.dumps(doc).encode()))
            else:
                parts.append(({"X-Inferbox-Task-Id": task_id, "X-Inferbox-Status": "succeeded",
                               "Content-Type": "application/json"}, json.dumps(value * 2).encode()))
        body, content_type = multipart_body(parts)
        return 200, {"Content-Type": content_type}, body


@pytest.fixture
def fake() -> Iterator[FakeBroker]:
    broker = FakeBroker(delay=0.01)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.add_callback(responses.POST, f"{BROKER}/predict", callback=broker.predict)
        rsps.add_callback(responses.GET, re.compile(rf"{BROKER}/getresult/.*"),
                          callback=broker.result)  # fmt: skip
        rsps.add_callback(responses.POST, f"{BROKER}/predictbatch", callback=broker.predictbatch)
        rsps.add_callback(responses.POST, f"{BROKER}/getresults", callback=broker.getresults)
        yield broker


def test_predict_is_submit_then_result(fake) -> None:
    with Client(BROKER) as client:
        assert client.predict(21, queue="q") == 42


def test_map_yields_results_in_input_order_with_bounded_concurrency(fake) -> None:
    with Client(BROKER) as client:
        results = list(client.map((i for i in range(40)), queue="q", concurrency=4))
    assert results == [2 * i for i in range(40)]
    assert 1 < fake.most_in_flight <= 4


def test_map_submits_in_batches(fake) -> None:
    with Client(BROKER) as client:
        results = list(client.map(range(300), concurrency=200))
    assert results == [2 * i for i in range(300)]
    assert fake.batches[:4] == [64, 64, 64, 8] and sum(fake.batches) == 300
    assert fake.most_in_flight == 200


def test_submit_many_sends_a_key_per_payload_and_keeps_the_order(fake) -> None:
    with Client(BROKER) as client:
        tasks = client.submit_many([{"a": 1}, b"\x00", "text"] * 50)
    assert [task.id for task in tasks] == [f"T{i}" for i in range(150)]
    assert fake.batches == [100, 50]
    assert fake.types["T1"] == "application/octet-stream"


def test_map_raises_a_failure_in_turn_or_yields_it(fake) -> None:
    with Client(BROKER) as client:
        outcomes = list(client.map([1, None, 3], return_exceptions=True, progress=True))
        assert outcomes[0] == 2 and outcomes[2] == 6
        assert isinstance(outcomes[1], TaskFailed) and outcomes[1].error == "boom"
        with pytest.raises(TaskFailed):
            list(client.map([1, None, 3]))


def test_submit_infers_the_content_type_of_paths_arrays_and_images(fake, tmp_path) -> None:
    photo = tmp_path / "cat.png"
    Image.fromarray(np.zeros((2, 2, 3), dtype=np.uint8)).save(photo)
    notes = tmp_path / "notes.txt"
    notes.write_text("héllo")
    with Client(BROKER) as client:
        for payload in (photo, notes, np.eye(2), Image.new("L", (3, 3)), "text", b"\x00"):
            client.submit(payload)
    assert list(fake.types.values()) == [
        "image/png", "text/plain; charset=utf-8", "application/x-npy", "image/png",
        "text/plain; charset=utf-8", "application/octet-stream"]  # fmt: skip
    assert fake.payloads["T0"] == photo.read_bytes()


def test_a_path_is_streamed_from_the_file_and_sent_whole_again_on_a_retry(
    tmp_path, monkeypatch
) -> None:  # fmt: skip
    big = tmp_path / "big.bin"
    big.write_bytes(bytes(range(256)) * 4096)  # 1 MiB

    def read_whole(self):
        raise AssertionError(f"{self} was read whole into memory")

    monkeypatch.setattr(Path, "read_bytes", read_whole)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mocked:
        refusals = iter([True])
        sent: list[bytes] = []

        def flaky(request):
            body = request.body  # responses may have read the stream already
            sent.append(body.read() if hasattr(body, "read") else body)
            if next(refusals, False):  # the first attempt: the broker is away for a moment
                return 503, {"Retry-After": "0"}, json.dumps({"error": "unavailable"})
            return 202, {}, json.dumps({"task_id": "T9", "status": "queued"})

        mocked.add_callback(responses.POST, f"{BROKER}/predict", callback=flaky)
        with Client(BROKER) as client:
            assert client.submit(big).id == "T9"
    whole = bytes(range(256)) * 4096
    assert sent == [whole, whole]


def png_of(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def test_results_decode_like_the_worker_encodes() -> None:
    mask = (np.arange(12).reshape(3, 4) % 2).astype(bool)
    body, content_type = encode(mask, array_type="image/png")
    assert content_type == "image/png"
    assert decode(body, content_type) == body  # images stay bytes unless asked
    np.testing.assert_array_equal(decode(body, content_type, images="array"), mask * 255)
    assert decode(body, content_type, images="pil").size == (4, 3)
    body, content_type = encode(np.arange(3.0))
    np.testing.assert_array_equal(decode(body, content_type), np.arange(3.0))
    with pytest.raises(ValueError):
        decode(b"\x93NUMPY broken", "application/x-npy")
    jpeg = encode(Image.new("RGBA", (2, 2)), array_type="image/jpeg")
    assert jpeg.content_type == "image/jpeg" and jpeg.body[:2] == b"\xff\xd8"


def test_result_can_ask_for_a_pil_image_or_raw_bytes() -> None:
    picture = png_of(np.full((5, 7), 9, dtype=np.uint8))
    with responses.RequestsMock() as broker, Client(BROKER) as client:
        for _ in range(3):
            broker.add(responses.GET, f"{BROKER}/getresult/T1", body=picture,
                       content_type="image/png")  # fmt: skip
        assert client.task("T1").result(image="pil").size == (7, 5)
        assert client.task("T1").result(image="array").shape == (5, 7)
        assert client.task("T1").result(raw=True) == (picture, "image/png")


def test_read_file_types_by_extension(tmp_path: Path) -> None:
    for name, expected in (("a.json", "application/json"), ("a.npy", "application/x-npy"),
                           ("a.bin", "application/octet-stream"), ("a.jpg", "image/jpeg")):
        (tmp_path / name).write_bytes(b"x")
        assert read_file(tmp_path / name).content_type == expected
