"""A small segmentation model built in code: foreground mask of an image, as a PNG.

The "model" is Otsu's threshold on a lightly smoothed grayscale image (no weights, nothing
downloaded): bright objects on a darker background come out white (255), the rest black (0).
It is a batch handler that returns one ``uint8`` mask per image, sent back as PNG.

    inferbox-worker --queue segment --batch-size 8 --handler examples.segmentation.model:segment
"""

from __future__ import annotations

from typing import Any

import numpy as np

from worker import handler

__all__ = ["mask_of", "segment"]


def _gray(image: np.ndarray) -> np.ndarray:
    pixels = image.astype(np.float32)
    if pixels.ndim == 3:
        pixels = pixels[:, :, :3].mean(axis=2)
    padded = np.pad(pixels, 1, mode="edge")  # 3x3 box blur against speckle noise
    height, width = pixels.shape
    return sum(padded[dy:dy + height, dx:dx + width] for dy in range(3) for dx in range(3)) / 9


def _otsu(gray: np.ndarray) -> float:
    histogram, edges = np.histogram(gray, bins=256, range=(0, 256))
    weights = histogram.cumsum()
    means = (histogram * edges[:-1]).cumsum()
    total, total_mean = weights[-1], means[-1]
    between = np.zeros(256)
    inside = (weights > 0) & (weights < total)
    w0, m0 = weights[inside], means[inside]
    between[inside] = (total_mean * w0 / total - m0) ** 2 / (w0 * (total - w0))
    return float(edges[int(between.argmax()) + 1])


def mask_of(image: np.ndarray) -> np.ndarray:
    """HxW(xC) image -> HxW uint8 mask, 255 where the foreground is."""
    gray = _gray(image)
    return np.where(gray > _otsu(gray), 255, 0).astype(np.uint8)


@handler(batched=True, result_type="image/png")
def segment(images: Any) -> list[np.ndarray]:
    """A batch of images (PNG or JPEG payloads arrive as arrays) -> one PNG mask each."""
    return [mask_of(np.asarray(image)) for image in images]
