"""Handlers the integration tests run in real worker processes."""

from __future__ import annotations

import hashlib
import os
import time
from typing import Any

from worker import handler


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


def describe(payload: Any) -> dict[str, Any]:
    """What arrived, decoded: its Python type and the value itself (bytes by their length)."""
    if isinstance(payload, bytes):
        return {"kind": "bytes", "length": len(payload)}
    return {"kind": type(payload).__name__, "echo": payload}


def steps(payload: dict[str, Any], ctx: Any) -> dict[str, Any]:
    """A long task in ``payload["steps"]`` steps of 0.2 s: reports progress, stops when canceled.
    Each step reached is appended to the file ``payload["trace"]``."""
    total = int(payload["steps"])
    for step in range(total):
        ctx.check()
        ctx.progress(step / total, f"step {step + 1}/{total}")
        with open(payload["trace"], "a") as trace:
            trace.write(f"{step}\n")
        time.sleep(0.2)
    return {"steps": total}


def slow_checksum(payloads: list[bytes]) -> list[dict[str, str]]:
    """A batch handler: the SHA-256 of each payload, 20 ms per batch (so a batch job takes a
    few seconds and can be interrupted halfway)."""
    time.sleep(0.02)
    return [checksum(payload) for payload in payloads]


@handler(batched=False)
def slow_each(payload: dict[str, Any]) -> dict[str, Any]:
    """``slow``, called once per task even when the worker takes tasks in batches."""
    return slow(payload)


def doomed(payload: dict[str, Any]) -> dict[str, Any]:
    """Kill the worker process outright for a poison payload (a segfault, the OOM killer...):
    no error document, no goodbye. Answer for the others."""
    if payload.get("poison"):
        os._exit(3)
    return {"value": payload["value"] * 2}


def poison_batch(payloads: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``poison`` as a batch handler: a batch with a poison pill raises, and the worker then
    runs its items one by one, so only the pill fails."""
    return [poison(payload) for payload in payloads]
