"""Train the bundled Keras digits model and write ``digits.keras`` beside this file.

    python -m worker.examples.train_digits_keras [--out PATH]

Seeded and deterministic on CPU: scikit-learn's bundled digits (nothing downloaded), the same
held-out split as ``worker.examples.digits``, a 64-64-10 dense network, Adam, 60 epochs. Prints
the held-out accuracy. Needs ``inferbox[tensorflow,demo]``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

from worker.examples.digits import _SEED, HELD_OUT, MAX_INTENSITY

DEFAULT_OUT = Path(__file__).with_name("digits.keras")


def split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(_SEED).permutation(len(digits.target))
    test, train = order[:HELD_OUT], order[HELD_OUT:]
    images = (digits.data / MAX_INTENSITY).astype(np.float32)
    return images[train], digits.target[train], images[test], digits.target[test]


def train(out: Path) -> float:
    os.environ.setdefault("TF_DETERMINISTIC_OPS", "1")
    import keras

    keras.utils.set_random_seed(_SEED)
    x_train, y_train, x_test, y_test = split()
    model = keras.Sequential([
        keras.Input(shape=(64,)),
        keras.layers.Dense(64, activation="relu"),
        keras.layers.Dense(10, activation="softmax"),
    ], name="digits")  # fmt: skip
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])  # fmt: skip
    model.fit(x_train, y_train, epochs=60, batch_size=32, verbose=0, shuffle=True)
    _, accuracy = model.evaluate(x_test, y_test, verbose=0)
    model.save(out)
    return float(accuracy)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    accuracy = train(args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes); held-out accuracy {accuracy:.4f}")


if __name__ == "__main__":
    main()
