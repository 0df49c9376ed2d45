"""Handlers of the benchmark workers: no model at all, so the systems' own costs show."""

from __future__ import annotations

from typing import Any


def noop(payload: Any) -> Any:
    """Return the payload unchanged (inferbox and RQ workers; Celery's task wraps it)."""
    return payload


def echo_bytes(payload: bytes) -> bytes:
    """Return a binary payload unchanged (the large-payload run)."""
    return payload
