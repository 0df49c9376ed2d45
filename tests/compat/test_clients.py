"""The original C# client and Python notebook worker, unchanged, against inferbox over real HTTP.

Each plays its role byte for byte (see ``v0_clients``): the C# client submits a PNG with the
trailing zero bytes of its MemoryStream buffer and polls for the mask, seeing the sentinel until
it exists; the notebook worker fetches, segments and posts. Once on file:// storage, once on
Azure Blob storage (Azurite).
"""

from __future__ import annotations

import base64
import random
import re

import pytest

from tests.compat.conftest import StartBroker, V0Broker
from tests.compat.v0_clients import (
    SENTINEL,
    CSharpClient,
    memory_stream_buffer,
    perform_next_task,
    png,
    segmentation_model,
)

pytestmark = pytest.mark.redis

GUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


def noisy_image(seed: int, width: int = 96, height: int = 64) -> bytes:
    rng = random.Random(seed)
    return png(width, height, lambda x, y: rng.randrange(256))


@pytest.fixture(params=["file", "azure"])
def broker(request: pytest.FixtureRequest, start_v0_broker: StartBroker) -> V0Broker:
    if request.param == "file":
        return start_v0_broker()
    container = request.getfixturevalue("azure_container")  # also sets the Azure variables
    return start_v0_broker(INFERBOX_STORAGE_URL=f"az://{container}/inferbox")


@pytest.fixture
def csharp() -> CSharpClient:
    client = CSharpClient()
    yield client
    client.close()


def test_csharp_client_and_notebook_worker_round_trip(broker: V0Broker, csharp: CSharpClient):
    image = noisy_image(1)
    buffer = memory_stream_buffer(image)
    assert len(buffer) > len(image) and buffer.endswith(b"\x00" * (len(buffer) - len(image)))

    status, headers, task_id = csharp.post_string_content(
        broker.predict_url,
        "{'payload': '" + base64.b64encode(buffer).decode() + "'}",
    )
    assert status == 200 and headers["content-type"] == "text/plain; charset=utf-8"
    assert re.fullmatch(GUID + r"\.payload", task_id), task_id  # plain text, not JSON-quoted

    assert csharp.get_results(broker.getresult_url, task_id) is None  # "Task result not found"

    seen, lines = [], []

    def model(payload: bytes) -> bytes:
        seen.append(payload)
        return segmentation_model(payload)

    answer = perform_next_task(
        broker.getnexttask_url, broker.puttaskresult_url, model, lines.append
    )
    assert answer is not None and answer.status_code == 200
    worker_task_id = lines[0].removeprefix("Computing task ")
    assert re.fullmatch(task_id.removesuffix(".payload") + r"\.[A-Za-z0-9_-]+\.payload",
                        worker_task_id)  # fmt: skip
    assert answer.text == worker_task_id  # echoed, plain text
    assert seen == [buffer], "the payload arrives byte for byte, trailing zeros included"

    assert csharp.get_results(broker.getresult_url, task_id) == segmentation_model(buffer)
    status, _, text = csharp.post_string_content(
        broker.getresult_url, f"{{'task_id': '{task_id}'}}"
    )
    assert status == 200 and text != SENTINEL


def test_notebook_worker_drains_in_fifo_order_then_sees_no_task(
    v0_broker: V0Broker, csharp: CSharpClient
):
    images = [memory_stream_buffer(noisy_image(seed, 40 + seed, 30)) for seed in range(8)]
    task_ids = [csharp.send_predict(v0_broker.predict_url, image) for image in images]
    lines: list[str] = []
    while perform_next_task(v0_broker.getnexttask_url, v0_broker.puttaskresult_url,
                            segmentation_model, lines.append):  # fmt: skip
        pass
    assert lines[-1] == "No task available"
    taken = [line.removeprefix("Computing task ").split(".")[0] for line in lines[:-1]]
    assert taken == [task_id.split(".")[0] for task_id in task_ids], "submission order"
    for task_id, image in zip(task_ids, images, strict=True):
        assert csharp.get_results(v0_broker.getresult_url, task_id) == segmentation_model(image)
