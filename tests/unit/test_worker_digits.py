"""The bundled digits model: a real classifier, good on images it never saw."""

from __future__ import annotations

import pytest

from client_sdk.codec import encode
from worker.examples import digits


def test_held_out_accuracy_is_above_90_percent() -> None:
    assert digits.accuracy() > 0.90


def test_sample_is_a_valid_payload_with_its_label() -> None:
    payload, label = digits.sample(5)
    assert len(payload["pixels"]) == 64
    assert all(isinstance(p, int) and 0 <= p <= 16 for p in payload["pixels"])
    assert label in range(10)


def test_predict_accepts_an_object_or_a_bare_list() -> None:
    payload, _ = digits.sample(0)
    from_object = digits.predict(payload)
    assert from_object == digits.predict(payload["pixels"])
    assert from_object["digit"] in range(10)
    assert 0.1 < from_object["confidence"] <= 1.0
    assert encode(from_object).content_type == "application/json"  # plain ints and floats


def test_predictions_match_labels_on_most_samples() -> None:
    right = 0
    for index in range(50):
        payload, label = digits.sample(index)
        right += digits.predict(payload)["digit"] == label
    assert right >= 45


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"image": [0] * 64}, '"pixels"'),
        ([0] * 63, "64 numbers"),
        (["0"] * 64, "64 numbers"),
        ([True] * 64, "64 numbers"),
        ([17] * 64, "between 0 and 16"),
        ([-1] + [0] * 63, "between 0 and 16"),
        ([float("nan")] * 64, "between 0 and 16"),
        (b"\x00" * 64, "JSON list"),
        ("0,0,0", "JSON list"),
    ],
)
def test_bad_input_raises_value_error_saying_why(payload, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        digits.predict(payload)


def test_sample_index_out_of_range() -> None:
    with pytest.raises(IndexError):
        digits.sample(digits.HELD_OUT)
