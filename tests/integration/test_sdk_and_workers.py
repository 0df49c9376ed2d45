"""The worker and the client SDK as users meet them: real Redis, the broker over HTTP, workers and
the ``inferbox`` CLI as separate processes."""

from __future__ import annotations

import hashlib
import json
import random
import signal
import subprocess
import sys
import time

import pytest
import redis

from client_sdk import Client, TaskCanceled, TaskFailed
from client_sdk.batch import JOURNAL
from tests.conftest import REDIS_URL
from tests.integration.conftest import CLIENT_TOKEN, ROOT, Broker, child_env
from worker.examples import digits

pytestmark = pytest.mark.redis


def wait_for(predicate, timeout: float = 60.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_the_keras_digits_model_through_the_broker_reads_held_out_digits(broker: Broker):
    broker.spawn_worker("", "--queue", "digits", "--batch-size", "32",
                        "--keras", str(ROOT / "worker/examples/digits.keras"),
                        "--preprocess", "worker.examples.digits_keras:preprocess",
                        "--postprocess", "worker.examples.digits_keras:postprocess",
                        worker_id="keras")  # fmt: skip
    samples = [digits.sample(i) for i in range(digits.HELD_OUT)]
    with Client(broker.url, token=CLIENT_TOKEN) as client:
        answers = list(client.map([payload for payload, _ in samples], queue="digits",
                                  concurrency=32, timeout=120))  # fmt: skip
        version = client.status(client.submit(samples[0][0], queue="digits").id)
    right = sum(a["digit"] == label for a, (_, label) in zip(answers, samples, strict=True))
    accuracy = right / len(samples)
    print(f"held-out accuracy through the broker: {accuracy:.4f} ({right}/{len(samples)})")
    assert accuracy >= 0.95
    assert version["queue"] == "digits"


def test_progress_reaches_the_client_and_a_cancel_stops_the_handler(broker: Broker, tmp_path):
    trace = tmp_path / "trace.txt"
    broker.spawn_worker("steps", "--queue", "long", worker_id="w-long")
    with Client(broker.url, token=CLIENT_TOKEN) as client:
        task = client.submit({"steps": 300, "trace": str(trace)}, queue="long")
        progress = wait_for(lambda: (task.info().get("progress") or {}).get("fraction", 0) > 0
                            and task.info()["progress"], what="progress")  # fmt: skip
        assert progress["message"].startswith("step ")
        task.cancel()
        canceled_at = len(trace.read_text().split())
        time.sleep(4)  # the worker learns within its cancel poll (2 s) and the handler stops
        steps_run = len(trace.read_text().split())
        assert steps_run < canceled_at + 15 and steps_run < 300
        with pytest.raises(TaskCanceled):
            task.result(timeout=5)
        assert task.status() == "canceled"
        time.sleep(1)
        assert len(trace.read_text().split()) == steps_run  # it really stopped
        follow_up = client.submit({"steps": 1, "trace": str(tmp_path / "next.txt")}, queue="long")
        assert follow_up.result(timeout=30) == {"steps": 1}  # and the worker goes on


def test_batch_killed_halfway_resumes_without_resubmitting(broker: Broker, tmp_path):
    inputs, out = tmp_path / "inputs", tmp_path / "out"
    inputs.mkdir()
    rng = random.Random(3)
    expected = {}
    for i in range(500):
        data = rng.randbytes(rng.randint(1, 2048))
        (inputs / f"item-{i:03d}.bin").write_bytes(data)
        expected[f"item-{i:03d}.json"] = hashlib.sha256(data).hexdigest()
    broker.spawn_worker("slow_checksum", "--queue", "files", "--batch-size", "8",
                        worker_id="w-files")  # fmt: skip
    command = [sys.executable, "-m", "client_sdk.cli", "--broker", broker.url, "--token",
               CLIENT_TOKEN, "batch", str(inputs), "-o", str(out), "--queue", "files",
               "--no-progress"]  # fmt: skip
    first = subprocess.Popen(command, cwd=ROOT, env=child_env(), stdout=subprocess.PIPE)
    journal = out / JOURNAL

    def done_lines() -> int:
        if not journal.exists():
            return 0
        return sum('"event": "done"' in line for line in journal.read_text().splitlines())

    wait_for(lambda: done_lines() >= 250 or first.poll() is not None, timeout=180,
             what="half of the batch")  # fmt: skip
    first.send_signal(signal.SIGKILL)
    first.wait()
    halfway = done_lines()
    assert 250 <= halfway < 500, halfway
    second = subprocess.run(command, cwd=ROOT, env=child_env(), capture_output=True, text=True,
                            timeout=300)  # fmt: skip
    assert second.returncode == 0, second.stdout + second.stderr
    assert f"{halfway} earlier" in second.stdout and "0 submitted in this run" in second.stdout
    outputs = {p.name: json.loads(p.read_bytes())["sha256"] for p in out.glob("*.json")}
    assert outputs == expected  # 500 correct outputs
    tasks = redis.Redis.from_url(REDIS_URL).keys("inferbox:task:*")
    assert len(tasks) == 500  # no file was submitted twice


@pytest.mark.parametrize(("batch_size", "prefetch"), [("1", "1"), ("16", "1"), ("1", "3")])
def test_sigterm_hands_fetched_tasks_back_at_once(broker: Broker, batch_size: str, prefetch: str):
    """A worker told to stop finishes the batch in hand and releases the ones fetched ahead: a
    second worker gets them at once, with the attempts not counted."""
    with Client(broker.url, token=CLIENT_TOKEN) as client:
        n = (1 + int(prefetch)) * int(batch_size)  # the batch in hand and those fetched ahead
        tasks = [client.submit({"sleep": 3, "value": i}, queue="stop") for i in range(n)]
        first = broker.spawn_worker("slow_each", "--queue", "stop", "--batch-size", batch_size,
                                    "--prefetch", prefetch, worker_id="first",
                                    env={"INFERBOX_TEST_SLOW": "1"})  # fmt: skip
        wait_for(lambda: all(t.info()["status"] == "running" for t in tasks), what="all taken")
        first.send_signal(signal.SIGTERM)
        broker.spawn_worker("slow_each", "--queue", "stop", "--batch-size", batch_size,
                            worker_id="second")  # fmt: skip
        results = [t.result(timeout=60) for t in tasks]
        docs = [t.info() for t in tasks]
        assert first.wait(timeout=30) == 0
    assert [r["value"] for r in results] == list(range(n))
    by_worker = {doc["worker_id"] for doc in docs}
    assert by_worker == {"first", "second"}
    assert all(doc["attempts"] == 1 for doc in docs)  # released attempts do not count


def test_map_over_250_payloads_takes_a_few_requests_per_batch(broker: Broker):
    broker.spawn_worker("poison_batch", "--batch-size", "16", worker_id="w-batched")
    payloads = [{"value": i, "poison": i == 17} for i in range(250)]
    sent: list[str] = []
    with Client(broker.url, token=CLIENT_TOKEN, timeout=60) as client:
        client._session.hooks["response"].append(
            lambda response, *args, **kwargs: sent.append(response.request.path_url))
        outcomes = list(client.map(payloads, concurrency=128, timeout=120,
                                   return_exceptions=True))  # fmt: skip
    assert [outcome for i, outcome in enumerate(outcomes) if i != 17] == [
        {"value": 2 * i} for i in range(250) if i != 17]
    assert isinstance(outcomes[17], TaskFailed) and "poison pill" in outcomes[17].error
    print(f"Client.map: {len(sent)} requests for 250 tasks")
    assert {path.split("?")[0] for path in sent} == {"/predictbatch", "/getresults"}
    assert len(sent) <= 250 // 5, f"{len(sent)} requests for 250 tasks"
