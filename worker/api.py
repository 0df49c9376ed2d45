"""The worker's side of the broker API: take, heartbeat, post results, release (docs/api.md).

One ``BrokerAPI`` per thread: each holds its own ``requests.Session``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from client_sdk.codec import Encoded
from client_sdk.errors import ProtocolError
from client_sdk.http import (
    json_document,
    make_session,
    multipart_body,
    raise_for_error,
    send,
    task_url,
)
from worker.task import TakenTask, taken_tasks

__all__ = ["BrokerAPI"]


class BrokerAPI:
    def __init__(self, url: str, token: str | None, *, timeout: float, retries: int = 3) -> None:
        self.url = url
        self.token = token
        self.timeout = timeout
        self._session = make_session(token, retries=retries, base_url=url)

    def close(self) -> None:
        self._session.close()

    def take(
        self, queue: str, *, max_tasks: int, wait: float, lease: int, worker_id: str
    ) -> list[TakenTask]:
        """Up to ``max_tasks`` tasks, long-polling ``wait`` seconds; [] when there is none."""
        params = {"queue": queue, "max_tasks": max_tasks, "wait": wait, "lease": lease,
                  "worker_id": worker_id}  # fmt: skip
        response = send(self._session, "POST", task_url(self.url, "getnexttask"), params=params,
                        timeout=self.timeout + wait)  # fmt: skip
        if response.status_code == 204:
            return []
        raise_for_error(response)
        return taken_tasks(response)

    def heartbeat(self, task: TakenTask, progress: tuple[float, str] | None) -> dict[str, Any]:
        body: dict[str, Any] = {"lease_id": task.lease_id}
        if progress is not None:
            body["progress"] = {"fraction": progress[0], "message": progress[1]}
        url = task_url(self.url, "tasks", task.id, "heartbeat")
        response = send(self._session, "POST", url, json=body, timeout=self.timeout)
        raise_for_error(response)
        return json_document(response)

    def release(self, task: TakenTask) -> None:
        url = task_url(self.url, "tasks", task.id, "release")
        response = send(self._session, "POST", url, json={"lease_id": task.lease_id},
                        timeout=self.timeout)  # fmt: skip
        raise_for_error(response)

    def put(self, task: TakenTask, outcome: Encoded, model_version: str | None) -> None:
        headers = {"Content-Type": outcome.content_type, "X-Inferbox-Lease-Id": task.lease_id}
        if model_version:
            headers["X-Inferbox-Model-Version"] = model_version
        response = send(self._session, "POST", task_url(self.url, "puttaskresult", task.id),
                        data=outcome.body, headers=headers, timeout=self.timeout)  # fmt: skip
        raise_for_error(response)

    def put_many(
        self, items: Sequence[tuple[TakenTask, Encoded]], model_version: str | None
    ) -> list[dict[str, Any]]:
        """Post several results in one ``multipart/mixed`` request; the per-task answers."""
        body, content_type = multipart_body(
            ({"Content-Type": outcome.content_type, "X-Inferbox-Task-Id": task.id,
              "X-Inferbox-Lease-Id": task.lease_id}, outcome.body)
            for task, outcome in items)  # fmt: skip
        headers = {"Content-Type": content_type}
        if model_version:
            headers["X-Inferbox-Model-Version"] = model_version
        response = send(self._session, "POST", task_url(self.url, "puttaskresults"),
                        data=body, headers=headers, timeout=self.timeout)  # fmt: skip
        raise_for_error(response)
        results = json_document(response).get("results")
        if not isinstance(results, list) or len(results) != len(items):
            raise ProtocolError("the broker's answer does not list one result per part")
        return results
