"""A task as a worker holds it: identity, lease, payload; read from ``POST /getnexttask``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import requests

from client_sdk.codec import decode
from client_sdk.errors import ProtocolError
from client_sdk.http import parse_multipart

__all__ = ["TakenTask", "taken_tasks"]


@dataclass(frozen=True)
class TakenTask:
    """One task taken under a lease. ``body`` is the payload exactly as submitted."""

    id: str
    lease_id: str
    lease_deadline: str
    queue: str
    attempt: int
    content_type: str | None
    body: bytes

    @classmethod
    def from_headers(cls, headers: Mapping[str, str], body: bytes) -> TakenTask:
        """Build from the ``X-Inferbox-*`` headers of a take answer (or of one multipart
        part); ``ProtocolError`` when the task id or lease id is missing."""
        task_id = headers.get("X-Inferbox-Task-Id")
        lease_id = headers.get("X-Inferbox-Lease-Id")
        if not task_id or not lease_id:
            raise ProtocolError("a taken task came without X-Inferbox-Task-Id/-Lease-Id")
        attempt = headers.get("X-Inferbox-Attempt", "1")
        return cls(
            id=task_id,
            lease_id=lease_id,
            lease_deadline=headers.get("X-Inferbox-Lease-Deadline", ""),
            queue=headers.get("X-Inferbox-Queue", ""),
            attempt=int(attempt) if attempt.isdigit() else 1,
            content_type=headers.get("Content-Type"),
            body=body,
        )

    def payload(self) -> Any:
        """The payload decoded by its Content-Type: JSON -> object, text/* -> str, else bytes.

        Raises ``ValueError`` when the body is not what its Content-Type declares.
        """
        return decode(self.body, self.content_type)


def taken_tasks(response: requests.Response) -> list[TakenTask]:
    """The tasks in a ``200`` answer to ``POST /getnexttask``.

    A single task travels as the body with the task in headers; several travel as
    ``multipart/mixed`` parts. The task-id header decides, not the Content-Type: a single
    payload may itself be ``multipart/mixed``.
    """
    if "X-Inferbox-Task-Id" in response.headers:
        return [TakenTask.from_headers(response.headers, response.content)]
    content_type = response.headers.get("Content-Type", "")
    if not content_type.lower().startswith("multipart/"):
        raise ProtocolError("a take answer has neither task headers nor multipart parts")
    parts = parse_multipart(content_type, response.content)
    return [TakenTask.from_headers(part.headers, part.body) for part in parts]
