"""The Keras adapter on real TensorFlow (CPU): the bundled digits network, and a model object."""

from __future__ import annotations

import json
import subprocess
import sys

import keras  # the dev extra installs tensorflow-cpu: CI tests the adapter for real
import numpy as np
import pytest
import responses

from worker import HandlerLoadError, Worker
from worker.cli import load_model_handler, parse_args
from worker.examples import digits, digits_keras
from worker.keras import KerasHandler

BROKER = "http://broker.test"


def test_importing_the_worker_and_the_adapter_does_not_load_tensorflow() -> None:
    code = ("import sys, worker, worker.keras, worker.examples.digits_keras; "
            "print('tensorflow' in sys.modules, 'keras' in sys.modules)")  # fmt: skip
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)  # fmt: skip
    assert result.stdout.split() == ["False", "False"]


def test_the_bundled_digits_network_reads_held_out_digits() -> None:
    samples = [digits.sample(i) for i in range(digits.HELD_OUT)]
    answers = digits_keras.predict([payload for payload, _ in samples])
    right = sum(answer["digit"] == label for answer, (_, label) in zip(answers, samples,
                                                                         strict=True))  # fmt: skip
    assert right / len(samples) >= 0.95
    assert all(0 <= answer["confidence"] <= 1 for answer in answers)
    assert digits_keras.predict.device in ("/CPU:0", "/GPU:0")
    assert digits_keras.predict.model_version.startswith("digits@")


def test_a_model_object_with_default_pre_and_postprocessing() -> None:
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input(shape=(3,)), keras.layers.Dense(2)], name="tiny")
    adapter = KerasHandler(model)
    inputs = np.arange(12, dtype=np.float32).reshape(4, 3)
    outputs = adapter(inputs)
    np.testing.assert_allclose(np.array(outputs), model.predict(inputs, verbose=0), rtol=1e-5)
    assert isinstance(outputs[0], list)  # JSON-ready rows
    assert adapter.model_version.startswith("tiny@")
    model.layers[0].set_weights([w + 1 for w in model.layers[0].get_weights()])
    assert KerasHandler(model).model_version != adapter.model_version


def test_served_through_the_worker_in_one_batch() -> None:
    samples = [digits.sample(i) for i in range(4)]
    body = b""
    for i, (payload, _) in enumerate(samples):
        body += (f"--b\r\nContent-Type: application/json\r\nX-Inferbox-Task-Id: T{i}\r\n"
                 f"X-Inferbox-Lease-Id: L{i}\r\n\r\n").encode() + json.dumps(payload).encode()
        body += b"\r\n"
    with responses.RequestsMock() as broker:
        broker.add(responses.POST, f"{BROKER}/getnexttask", body=body + b"--b--\r\n",
                   content_type="multipart/mixed; boundary=b")  # fmt: skip
        broker.add(responses.POST, f"{BROKER}/puttaskresults", json={"results": [
            {"task_id": f"T{i}", "status": "succeeded"} for i in range(4)]})  # fmt: skip
        Worker(BROKER, batch_size=4).run(digits_keras.predict, max_tasks=4)
        put = broker.calls[-1].request
    assert put.headers["X-Inferbox-Model-Version"] == digits_keras.predict.model_version
    for i, (_, label) in enumerate(samples):
        start = put.body.index(f"X-Inferbox-Task-Id: T{i}".encode())
        answer = json.loads(put.body[put.body.index(b"\r\n\r\n", start) + 4:].split(b"\r\n")[0])
        assert answer["digit"] == label


def test_the_cli_builds_the_adapter_from_flags() -> None:
    args = parse_args(["--broker", BROKER, "--keras", str(digits_keras.MODEL_FILE),
                       "--preprocess", "worker.examples.digits_keras:preprocess",
                       "--postprocess", "worker.examples.digits_keras:postprocess",
                       "--batch-size", "8"], {})  # fmt: skip
    adapter = load_model_handler(args)
    assert isinstance(adapter, KerasHandler) and args.batch_size == 8
    payload, label = digits.sample(3)
    assert adapter([payload])[0]["digit"] == label


def test_a_missing_or_broken_model_file_is_a_load_error(tmp_path) -> None:
    with pytest.raises(HandlerLoadError, match="no Keras model"):
        KerasHandler(tmp_path / "absent.keras")
    broken = tmp_path / "broken.keras"
    broken.write_bytes(b"not a zip")
    with pytest.raises(HandlerLoadError, match="cannot load"):
        KerasHandler(broken).load()
