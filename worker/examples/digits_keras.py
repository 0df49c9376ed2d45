"""The digits model as a real Keras network: 8x8 handwritten digits -> which digit.

``digits.keras`` beside this file is a small dense network trained by
``python -m worker.examples.train_digits_keras`` on scikit-learn's bundled digits, with the
same held-out split as ``worker.examples.digits`` (its ``sample`` and ``HELD_OUT`` serve here
too). Nothing is downloaded; TensorFlow loads on the first prediction.

::

    inferbox-worker --queue digits --batch-size 32 --handler worker.examples.digits_keras:predict
    inferbox-worker --queue digits --keras worker/examples/digits.keras \\
        --preprocess worker.examples.digits_keras:preprocess \\
        --postprocess worker.examples.digits_keras:postprocess
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from worker.examples.digits import MAX_INTENSITY, _pixels
from worker.keras import KerasHandler

__all__ = ["MODEL_FILE", "postprocess", "predict", "preprocess"]

MODEL_FILE = Path(__file__).with_name("digits.keras")


def preprocess(payload: Any) -> np.ndarray:
    """``{"pixels": [64 numbers 0-16]}`` (or the bare list) -> 64 floats in 0..1."""
    if isinstance(payload, np.ndarray):
        payload = payload.reshape(-1).tolist()
    return (_pixels(payload) / MAX_INTENSITY).astype(np.float32)


def postprocess(probabilities: np.ndarray) -> dict[str, Any]:
    """The network's 10 probabilities -> ``{"digit", "confidence"}``."""
    digit = int(np.argmax(probabilities))
    return {"digit": digit, "confidence": round(float(probabilities[digit]), 4)}


predict = KerasHandler(MODEL_FILE, preprocess=preprocess, postprocess=postprocess)
