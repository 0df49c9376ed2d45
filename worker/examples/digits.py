"""A small real model for the demo: handwritten digits, 8x8 pixels, softmax regression.

Trained with numpy on scikit-learn's bundled ``load_digits`` set (no download) the first time
it is used, in well under a second, then cached for the life of the process. A fixed,
seeded split holds out ``HELD_OUT`` images that the model never sees; ``sample`` serves them
and ``accuracy`` scores them.

::

    inferbox-worker --queue digits --handler worker.examples.digits:predict
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["HELD_OUT", "accuracy", "predict", "sample"]

PIXELS = 64
MAX_INTENSITY = 16.0
CLASSES = 10
HELD_OUT = 360
_SEED = 0
_STEPS = 300
_LEARNING_RATE = 1.0
_L2 = 1e-3


@dataclass(frozen=True)
class _Model:
    weights: np.ndarray  # (PIXELS + 1, CLASSES): the last row is the bias
    test_images: np.ndarray  # (HELD_OUT, PIXELS), raw 0-16 intensities
    test_labels: np.ndarray  # (HELD_OUT,)


def _with_bias(images: np.ndarray) -> np.ndarray:
    scaled = images / MAX_INTENSITY
    return np.hstack([scaled, np.ones((scaled.shape[0], 1))])


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def _fit(images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Full-batch gradient descent on the L2-regularised cross-entropy."""
    features = _with_bias(images)
    targets = np.eye(CLASSES)[labels]
    weights = np.zeros((features.shape[1], CLASSES))
    penalty = np.ones_like(weights)
    penalty[-1] = 0.0  # the bias is not regularised
    for _ in range(_STEPS):
        gradient = features.T @ (_softmax(features @ weights) - targets) / len(labels)
        weights -= _LEARNING_RATE * (gradient + _L2 * penalty * weights)
    return weights


@functools.lru_cache(maxsize=1)
def _model() -> _Model:
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(_SEED).permutation(len(digits.target))
    test, train = order[:HELD_OUT], order[HELD_OUT:]
    weights = _fit(digits.data[train], digits.target[train])
    return _Model(weights, digits.data[test], digits.target[test])


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _pixels(payload: Any) -> np.ndarray:
    """The payload as a (64,) float array, or ``ValueError`` saying what is wrong."""
    if isinstance(payload, dict):
        if "pixels" not in payload:
            raise ValueError('expected a JSON object with a "pixels" key')
        payload = payload["pixels"]
    if not isinstance(payload, list):
        kind = type(payload).__name__
        raise ValueError(f"expected a JSON list of {PIXELS} pixel values, got {kind}")
    if len(payload) != PIXELS or not all(_is_number(value) for value in payload):
        raise ValueError(f"expected {PIXELS} numbers (8x8 pixels, row by row)")
    pixels = np.asarray(payload, dtype=float)
    if not np.all(np.isfinite(pixels)) or pixels.min() < 0 or pixels.max() > MAX_INTENSITY:
        raise ValueError("pixel values must be between 0 and 16")
    return pixels


def predict(payload: Any) -> dict[str, Any]:
    """Classify one 8x8 image: ``{"pixels": [64 numbers 0-16]}`` or the bare list.

    Returns ``{"digit": 0-9, "confidence": probability of that digit}``; raises
    ``ValueError`` for any other input.
    """
    pixels = _pixels(payload)
    probabilities = _softmax(_with_bias(pixels[np.newaxis, :]) @ _model().weights)[0]
    digit = int(probabilities.argmax())
    return {"digit": digit, "confidence": round(float(probabilities[digit]), 4)}


def sample(index: int = 0) -> tuple[dict[str, list[int]], int]:
    """Held-out image ``index`` (0 to ``HELD_OUT - 1``) as a payload, and its true digit."""
    model = _model()
    if not 0 <= index < len(model.test_labels):
        raise IndexError(f"sample index must be 0-{len(model.test_labels) - 1}, got {index}")
    pixels = [int(value) for value in model.test_images[index]]
    return {"pixels": pixels}, int(model.test_labels[index])


def accuracy() -> float:
    """The share of held-out images ``predict`` gets right."""
    model = _model()
    probabilities = _softmax(_with_bias(model.test_images) @ model.weights)
    return float((probabilities.argmax(axis=1) == model.test_labels).mean())
