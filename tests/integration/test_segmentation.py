"""examples/segmentation: PNG in, PNG mask out, through a real broker and worker process."""

from __future__ import annotations

import io
import sys

import numpy as np
import pytest
from PIL import Image

from client_sdk import Client
from tests.integration.conftest import CLIENT_TOKEN, ROOT, Broker

sys.path.insert(0, str(ROOT))
from examples.segmentation.client import disc_image, iou, png_bytes  # noqa: E402

pytestmark = pytest.mark.redis


def test_png_images_come_back_as_png_masks(broker: Broker):
    broker.spawn_worker("", "--queue", "segment", "--batch-size", "4",
                        "--handler", "examples.segmentation.model:segment", worker_id="seg")
    drawn = [disc_image(seed) for seed in range(6)]
    with Client(broker.url, token=CLIENT_TOKEN) as client:
        tasks = [client.submit(png_bytes(picture), queue="segment", content_type="image/png")
                 for picture, _ in drawn]  # fmt: skip
        results = [task.result(timeout=60, raw=True) for task in tasks]
        masks = list(client.map([picture for picture, _ in drawn], queue="segment",
                                image="array", timeout=60))  # as client.py sends them
    for (body, content_type), (_, truth) in zip(results, drawn, strict=True):
        assert content_type == "image/png"
        mask = np.asarray(Image.open(io.BytesIO(body)))
        assert mask.shape == truth.shape and set(np.unique(mask)) <= {0, 255}
        assert iou(mask, truth) > 0.9
    for mask, (_, truth) in zip(masks, drawn, strict=True):
        assert iou(mask, truth) > 0.9
