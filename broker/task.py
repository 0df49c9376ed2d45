"""Task records as the broker reads them from Redis, and the status document clients see."""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any

from . import keys as K


def new_task_id() -> str:
    """128 random bits, URL-safe: 22 characters of base64url."""
    return secrets.token_urlsafe(16)


def iso(timestamp: float | None) -> str | None:
    """Epoch seconds -> ``2026-11-21T17:05:52.123Z`` (None stays None)."""
    if timestamp is None:
        return None
    fraction, whole = math.modf(timestamp)
    micros = round(fraction * 1_000_000)  # as datetime rounds: to the microsecond, then cut
    second, micros = int(whole) + micros // 1_000_000, micros % 1_000_000
    return f"{_iso_second(second)}.{micros // 1000:03d}Z"


@lru_cache(maxsize=4096)
def _iso_second(second: int) -> str:
    """``2026-11-21T17:05:52`` for epoch ``second``; cached, as a status document formats up to
    five times of the same few seconds (the hottest path of the broker's JSON answers)."""
    return datetime.fromtimestamp(second, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")


def _float(value: str) -> float | None:
    return float(value) if value else None


@dataclass(frozen=True)
class Task:
    id: str
    queue: str
    owner: str
    status: str
    priority: int
    attempts: int
    max_attempts: int
    created_at: float
    expires_at: float | None
    started_at: float | None
    finished_at: float | None
    lease_id: str
    lease_deadline: float | None
    worker_id: str
    model_version: str
    progress_fraction: float | None
    progress_message: str
    error: str
    content_type: str
    size: int
    payload_key: str
    result_key: str
    result_content_type: str
    result_size: int | None
    webhook_url: str = ""
    webhook_events: tuple[str, ...] = ()

    @classmethod
    def from_redis(cls, raw: dict[bytes, bytes]) -> Task:
        return cls.from_fields({k.decode(): v.decode() for k, v in raw.items()})

    @classmethod
    def from_fields(cls, f: dict[str, str]) -> Task:
        """A task from its hash's fields, decoded."""
        get = f.get
        return cls(
            id=f["id"], queue=f["queue"], owner=get("owner", ""), status=f["status"],
            priority=int(get("priority", "0")), attempts=int(get("attempts", "0")),
            max_attempts=int(get("max_attempts", "1")), created_at=float(f["created_at"]),
            expires_at=_float(get("expires_at", "")), started_at=_float(get("started_at", "")),
            finished_at=_float(get("finished_at", "")), lease_id=get("lease_id", ""),
            lease_deadline=_float(get("lease_deadline", "")), worker_id=get("worker_id", ""),
            model_version=get("model_version", ""),
            progress_fraction=_float(get("progress_fraction", "")),
            progress_message=get("progress_message", ""), error=get("error", ""),
            content_type=get("content_type", ""), size=int(get("size", "0")),
            payload_key=get("payload_key", K.payload_key(f["id"])),
            result_key=get("result_key", ""), result_content_type=get("result_content_type", ""),
            result_size=int(f["result_size"]) if get("result_size") else None,
            webhook_url=get("webhook_url", ""),
            webhook_events=tuple(filter(None, get("webhook_events", "").split(","))),
        )  # fmt: skip

    @property
    def is_final(self) -> bool:
        return self.status in K.FINAL_STATUSES

    def is_overdue(self, now: float) -> bool:
        """True when a lease or the queueing ttl ran out and the index does not show it yet."""
        if self.status == K.RUNNING:
            return self.lease_deadline is not None and self.lease_deadline <= now
        if self.status == K.QUEUED:
            return self.expires_at is not None and self.expires_at <= now
        return False

    def to_doc(self, deliveries: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """The status document (docs/api.md); ``deliveries``: the webhook's attempts so far."""
        progress = None
        if self.status == K.SUCCEEDED:
            progress = {"fraction": 1.0, "message": self.progress_message}
        elif self.progress_fraction is not None:
            progress = {"fraction": self.progress_fraction, "message": self.progress_message}
        return {
            "task_id": self.id, "status": self.status, "queue": self.queue,
            "priority": self.priority, "attempts": self.attempts,
            "max_attempts": self.max_attempts, "created_at": iso(self.created_at),
            "started_at": iso(self.started_at), "finished_at": iso(self.finished_at),
            "expires_at": iso(self.expires_at) if self.status == K.QUEUED else None,
            "worker_id": self.worker_id or None, "model_version": self.model_version or None,
            "progress": progress, "error": self.error or None,
            "content_type": self.content_type, "size": self.size,
            "result_content_type": self.result_content_type or None,
            "result_size": self.result_size,
            "webhook": {"url": self.webhook_url, "events": list(self.webhook_events),
                        "deliveries": deliveries or []} if self.webhook_url else None,
        }  # fmt: skip


@dataclass(frozen=True)
class Lease:
    """One task handed to a worker by a take."""

    task_id: str
    lease_id: str
    deadline: float
    attempt: int
    queue: str
    content_type: str
    size: int

    @classmethod
    def from_row(cls, row: list[bytes]) -> Lease:
        task_id, lease_id, deadline, attempt, queue, content_type, size = (
            v.decode() if v else "" for v in row
        )
        return cls(task_id, lease_id, float(deadline), int(attempt), queue, content_type,
                   int(size or 0))  # fmt: skip


@dataclass(frozen=True)
class QueueStats:
    name: str
    depth: int
    in_flight: int
    oldest_age_seconds: float | None

    @classmethod
    def from_row(cls, row: list[Any], now: float) -> QueueStats:
        name, depth, in_flight, oldest = row
        age = round(max(0.0, now - float(oldest)), 3) if oldest else None
        return cls(name.decode(), int(depth), int(in_flight), age)
