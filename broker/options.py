"""Validation of the options callers send (query strings, headers, JSON fields).

Everything that reaches a Redis key or a blob key from a request passes through here first.
"""

from __future__ import annotations

import math
import re
from typing import Any

from . import keys as K
from .errors import InvalidOption, InvalidQueue, TaskNotFound

QUEUE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
TASK_ID = re.compile(r"[A-Za-z0-9_-]{22}")
PRINTABLE = re.compile(r"[\x20-\x7e]+")


def queue_name(raw: Any, default: str | None = None) -> str:
    """A valid queue name; ``default`` when ``raw`` is None (absent) and a default is given."""
    if raw is None and default is not None:
        return default
    if not isinstance(raw, str) or not QUEUE_NAME.fullmatch(raw):
        raise InvalidQueue(
            f"invalid queue name {raw!r}: use 1-64 of A-Z a-z 0-9 . _ -, "
            "starting with a letter or digit"
        )
    return raw


def queue_names(raw: Any, default: str | None = None) -> list[str]:
    """One name, a comma-separated string or a list; order kept, duplicates dropped."""
    if raw is None and default is not None:
        return [default]
    items = raw.split(",") if isinstance(raw, str) else raw
    if not isinstance(items, list) or not items:
        raise InvalidQueue("queue must be a name, comma-separated names or a list of names")
    return list(dict.fromkeys(queue_name(item.strip() if isinstance(item, str) else item)
                              for item in items))  # fmt: skip


def integer(name: str, raw: Any, *, default: int, low: int, high: int) -> int:
    """``raw`` (None for absent) as an int in ``low..high``; an empty value is not absent."""
    if raw is None:
        return default
    if isinstance(raw, bool):
        raise InvalidOption(f"{name} must be an integer, not {raw!r}")
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise InvalidOption(f"{name} must be an integer, not {raw!r}") from None
    if not low <= value <= high:
        raise InvalidOption(f"{name} must be between {low} and {high}, not {value}")
    return value


def number(name: str, raw: Any, *, default: float, low: float, high: float) -> float:
    if raw is None:
        return default
    if isinstance(raw, bool):
        raise InvalidOption(f"{name} must be a number, not {raw!r}")
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise InvalidOption(f"{name} must be a number, not {raw!r}") from None
    if not math.isfinite(value) or not low <= value <= high:
        raise InvalidOption(f"{name} must be between {low} and {high}, not {raw!r}")
    return value


def wait_seconds(raw: Any, cap: float) -> float:
    """A long-poll length: 0 when absent, never negative, longer asks clamped to ``cap``."""
    return min(number("wait", raw, default=0.0, low=0.0, high=float("inf")), cap)


def text(name: str, raw: Any, *, default: str = "", max_length: int = 255) -> str:
    """Printable ASCII of at most ``max_length`` characters."""
    if raw is None or raw == "":
        return default
    if not isinstance(raw, str) or len(raw) > max_length or not PRINTABLE.fullmatch(raw):
        raise InvalidOption(f"{name} must be 1-{max_length} printable ASCII characters")
    return raw


def task_id(raw: str) -> str:
    if not TASK_ID.fullmatch(raw):
        raise TaskNotFound(f"no task {raw[:64]!r}")
    return raw


def progress(raw: Any) -> tuple[float, str] | None:
    """``{"fraction": 0.4, "message": "step 2/5"}`` -> (0.4, "step 2/5")."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise InvalidOption('progress must be an object {"fraction": 0..1, "message": "..."}')
    fraction = number("progress.fraction", raw.get("fraction"), default=0.0, low=0.0, high=1.0)
    message = raw.get("message", "")
    if not isinstance(message, str) or len(message) > 500:
        raise InvalidOption("progress.message must be a string of at most 500 characters")
    return fraction, message




def webhook_events(raw: Any) -> tuple[str, ...]:
    """Comma-separated events of ``K.WEBHOOK_EVENTS``; absent: ``K.DEFAULT_WEBHOOK_EVENTS``."""
    if raw is None or raw == "":
        return K.DEFAULT_WEBHOOK_EVENTS
    items = raw.split(",") if isinstance(raw, str) else None
    events = tuple(dict.fromkeys(item.strip() for item in items or [] if item.strip()))
    if not events or not set(events) <= set(K.WEBHOOK_EVENTS):
        known = ", ".join(K.WEBHOOK_EVENTS)
        raise InvalidOption(f"webhook_events must be comma-separated of {known}")
    return events
