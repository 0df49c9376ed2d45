"""Serve a Keras model: ``KerasHandler`` turns a ``.keras`` file (or a model object) into a
batch handler.

::

    from worker import Worker
    from worker.keras import KerasHandler

    model = KerasHandler("digits.keras", preprocess=to_pixels, postprocess=to_label)
    Worker(url, token, queue="digits", batch_size=32).run(model)

or ``inferbox-worker --keras digits.keras --preprocess mymod:to_pixels --batch-size 32``.

Each input goes through ``preprocess`` (default: ``numpy.asarray(x, float32)``), the batch is
stacked and run with one ``model.predict_on_batch`` call, on the GPU when TensorFlow sees one
(else the CPU), and each row of the output goes through ``postprocess`` (default: the row as a
list). The model version is a hash of the model file (or of the weights of a model object).
TensorFlow is imported when the model is first needed, not when this module is.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from worker.errors import HandlerLoadError

__all__ = ["KerasHandler"]

logger = logging.getLogger("inferbox.worker")


def _default_preprocess(value: Any) -> Any:
    import numpy as np

    return np.asarray(value, dtype=np.float32)


def _default_postprocess(row: Any) -> Any:
    return row.tolist() if hasattr(row, "tolist") else row


class KerasHandler:
    """A batch handler around a Keras model (see the module docstring)."""

    __inferbox_handler__ = {"batched": True}

    def __init__(
        self,
        model: str | os.PathLike[str] | Any,
        *,
        preprocess: Callable[[Any], Any] | None = None,
        postprocess: Callable[[Any], Any] | None = None,
        device: str | None = None,
    ) -> None:
        self.preprocess = preprocess or _default_preprocess
        self.postprocess = postprocess or _default_postprocess
        self._device = device
        self._lock = threading.Lock()
        if isinstance(model, (str, os.PathLike)):
            self.path: Path | None = Path(model)
            if not self.path.is_file():
                raise HandlerLoadError(f"no Keras model file at {self.path}")
            digest = hashlib.sha256(self.path.read_bytes()).hexdigest()
            self.model_version = f"{self.path.stem}@{digest[:12]}"
            self._model: Any = None
        else:
            self.path = None
            self._model = model
            self.model_version = f"{getattr(model, 'name', 'model')}@{_weights_digest(model)}"

    def __repr__(self) -> str:
        return f"KerasHandler({self.model_version!r}, device={self._device!r})"

    @property
    def device(self) -> str:
        """Where the model runs: ``/GPU:0`` when TensorFlow sees a GPU, else ``/CPU:0``."""
        self.load()
        assert self._device is not None
        return self._device

    def load(self) -> Any:
        """Import TensorFlow and load the model (done by the first call if not before)."""
        with self._lock:
            if self._device is None:
                self._device = _pick_device()
            if self._model is None:
                self._model = _load(self.path)
                logger.info("Keras model %s loaded on %s", self.model_version, self._device)
        return self._model

    def __call__(self, inputs: Sequence[Any]) -> list[Any]:
        import numpy as np
        import tensorflow as tf

        model = self.load()
        batch = np.stack([self.preprocess(value) for value in inputs])
        with tf.device(self._device):
            outputs = model.predict_on_batch(batch)
        return [self.postprocess(row) for row in _rows(outputs, len(batch))]


def _rows(outputs: Any, count: int) -> list[Any]:
    """One output per input, whether the model has one output, a list or a dict of them."""
    if isinstance(outputs, dict):
        return [{name: value[i] for name, value in outputs.items()} for i in range(count)]
    if isinstance(outputs, (list, tuple)):
        return [[value[i] for value in outputs] for i in range(count)]
    return list(outputs)


def _pick_device() -> str:
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        # Take GPU memory as needed, so a notebook can still run other work on it; a GPU that
        # someone already initialised is left as it is.
        with contextlib.suppress(RuntimeError):
            tf.config.experimental.set_memory_growth(gpu, True)
    return "/GPU:0" if gpus else "/CPU:0"


def _load(path: Path | None) -> Any:
    import keras

    if path is None:
        raise HandlerLoadError("no model to load")
    try:
        return keras.saving.load_model(path, compile=False)
    except (ValueError, OSError) as exc:
        raise HandlerLoadError(f"cannot load the Keras model {path}: {exc}") from exc


def _weights_digest(model: Any) -> str:
    digest = hashlib.sha256()
    for weights in model.get_weights():
        digest.update(weights.tobytes())
    return digest.hexdigest()[:12]
