"""Handlers the integration tests run in real worker processes."""

from __future__ import annotations

import hashlib
import os
import time
from typing import Any


def checksum(payload: bytes) -> dict[str, str]:
    """The SHA-256 of the payload: a result the test can verify for every task."""
    return {"sha256": hashlib.sha256(payload).hexdigest()}


def slow(payload: dict[str, Any]) -> dict[str, Any]:
    """In a worker started with INFERBOX_TEST_SLOW=1, sleep as long as the payload asks; then
    answer with the worker's pid. (So a rescuing worker finishes what a killed one could not.)"""
    if os.environ.get("INFERBOX_TEST_SLOW") == "1":
        time.sleep(float(payload.get("sleep", 0)))
    return {"value": payload.get("value"), "pid": os.getpid()}


def poison(payload: dict[str, Any]) -> dict[str, Any]:
    """Raise for a poison payload, answer for the others."""
    if payload.get("poison"):
        raise ValueError("poison pill: this input always breaks the model")
    return {"value": payload["value"] * 2}


def doomed(payload: dict[str, Any]) -> dict[str, Any]:
    """Kill the worker process outright for a poison payload (a segfault, the OOM killer...):
    no error document, no goodbye. Answer for the others."""
    if payload.get("poison"):
        os._exit(3)
    return {"value": payload["value"] * 2}
