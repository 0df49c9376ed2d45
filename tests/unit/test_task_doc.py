"""Timestamps in status documents: the fast formatter agrees with ``datetime`` to the ms."""

from __future__ import annotations

import random
from datetime import datetime, timezone

import pytest

from broker.task import iso


def reference(timestamp: float) -> str:
    moment = datetime.fromtimestamp(timestamp, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@pytest.mark.parametrize("timestamp", [0.0, 1.5, 59.9995, 1763744752.123, 1763744752.9999996,
                                       1825426520.2339995, 4102444799.999])  # fmt: skip
def test_iso_matches_datetime_on_edges(timestamp: float) -> None:
    assert iso(timestamp) == reference(timestamp)


def test_iso_matches_datetime_on_random_times() -> None:
    rng = random.Random(5)
    for _ in range(20_000):
        timestamp = rng.choice([rng.uniform(0, 4e9), float(f"{rng.uniform(0, 4e9):.3f}")])
        assert iso(timestamp) == reference(timestamp)


def test_iso_keeps_none() -> None:
    assert iso(None) is None
