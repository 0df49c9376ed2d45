"""One delivery attempt: read the task, build and sign the body, POST it through the guard.

Every attempt is logged on the task (``<p>:webhook:log:<task_id>``, shown in its status
document), whichever runner made it: the rq jobs worker or the broker's own thread.
"""

from __future__ import annotations

import enum
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
import urllib3

from .. import keys as K
from ..errors import TaskNotFound, Unavailable, WebhookRefused
from ..queue import TaskQueue
from ..task import iso
from . import signing
from .guard import AddressPolicy, Target

log = logging.getLogger("inferbox.webhooks")

USER_AGENT = "inferbox-webhook/1"


class Outcome(enum.Enum):
    DELIVERED = "delivered"
    RETRY = "retrying"  # this attempt failed; another one will follow
    FAILED = "failed"  # no further attempt: out of retries, or retrying cannot help


@dataclass(frozen=True)
class Event:
    """One webhook message, as the scripts queue it (``webhook_event`` in common.lua)."""

    id: str
    task_id: str
    event: str  # completed, failed, canceled, expired or progress
    at: float
    progress: dict[str, Any] | None = None

    @classmethod
    def from_json(cls, raw: bytes | str) -> Event:
        doc = json.loads(raw)
        progress = doc.get("progress")
        return cls(doc["id"], doc["task_id"], doc["event"], float(doc["at"]),
                   progress if isinstance(progress, dict) else None)  # fmt: skip

    def to_json(self) -> str:
        return json.dumps({"id": self.id, "task_id": self.task_id, "event": self.event,
                           "at": self.at, "progress": self.progress})  # fmt: skip


class Deliverer:
    """Makes delivery attempts for one broker's tasks (one per process; thread-safe)."""

    def __init__(
        self, queue: TaskQueue, secret: str, policy: AddressPolicy, *,
        timeout: float = K.WEBHOOK_TIMEOUT, clock: Callable[[], float] = time.time,
    ) -> None:  # fmt: skip
        self.queue = queue
        self.key = signing.secret_key(secret)
        self.policy = policy
        self.timeout = timeout
        self.clock = clock

    def attempt(self, event: Event, number: int, *, last: bool) -> Outcome:
        """Attempt ``number`` (from 1) of ``event``; ``last``: no retry follows a failure."""
        try:
            task = self.queue.get(event.task_id)
        except TaskNotFound:
            log.warning("webhook %s: task %s is gone; dropped", event.id, event.task_id)
            return Outcome.FAILED
        body = self._body(event, task.to_doc())
        status, error, retryable = self._post(task.webhook_url, event.id, body)
        if status is not None and 200 <= status < 300:
            outcome = Outcome.DELIVERED
        else:
            outcome = Outcome.RETRY if retryable and not last else Outcome.FAILED
        self._log(event, number, status, error, outcome)
        return outcome

    def _body(self, event: Event, doc: dict[str, Any]) -> bytes:
        doc.pop("webhook", None)
        if event.progress is not None:
            doc["progress"] = event.progress  # what the event announced, not what came after
        body = {"type": f"task.{event.event}", "timestamp": iso(event.at), "data": doc}
        return json.dumps(body, separators=(",", ":")).encode()

    def _post(self, url: str, message_id: str, body: bytes) -> tuple[int | None, str, bool]:
        """(HTTP status or None, error text, whether a retry may help)."""
        try:
            target = self.policy.resolve(url)
        except WebhookRefused as exc:
            return None, exc.message, False
        headers = {
            "Content-Type": "application/json", "User-Agent": USER_AGENT,
            "Host": target.host_header,
            **signing.headers(self.key, message_id, int(self.clock()), body),
        }  # fmt: skip
        error = "no address to connect to"
        for address in target.addresses:  # the checked addresses, never a fresh lookup
            try:
                status = self._send(target, str(address), headers, body)
            except urllib3.exceptions.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
                continue
            if 300 <= status < 400:
                return status, "the receiver answered a redirect; webhooks follow none", False
            return status, "" if status < 300 else f"the receiver answered {status}", True
        return None, error, True

    def _send(self, target: Target, address: str, headers: dict[str, str], body: bytes) -> int:
        pool: urllib3.HTTPConnectionPool
        if target.scheme == "https":  # connect to the address; check the certificate by name
            pool = urllib3.HTTPSConnectionPool(
                address, target.port, server_hostname=target.host, assert_hostname=target.host,
                cert_reqs="CERT_REQUIRED", retries=False, maxsize=1,
            )
        else:
            pool = urllib3.HTTPConnectionPool(address, target.port, retries=False, maxsize=1)
        try:
            response = pool.urlopen(
                "POST", target.path, body=body, headers=headers, redirect=False, retries=False,
                timeout=urllib3.Timeout(total=self.timeout), preload_content=False,
                assert_same_host=False,
            )
            response.read(64 * 1024)  # a receiver's answer is not used; do not read it all
            response.release_conn()
            return int(response.status)
        finally:
            pool.close()

    def _log(self, event: Event, number: int, status: int | None, error: str,
             outcome: Outcome) -> None:  # fmt: skip
        entry = {"id": event.id, "event": event.event, "attempt": number, "at": iso(self.clock()),
                 "status_code": status, "error": error or None, "outcome": outcome.value}
        key = self.queue.keys.webhook_log(event.task_id)
        try:
            pipe = self.queue.redis.pipeline()
            pipe.rpush(key, json.dumps(entry))
            pipe.ltrim(key, -K.WEBHOOK_LOG_MAX, -1)
            pipe.execute()
        except redis.RedisError as exc:
            raise Unavailable(f"Redis failed: {exc}") from exc
        level = logging.INFO if outcome is Outcome.DELIVERED else logging.WARNING
        log.log(level, "webhook %s (task %s, %s) attempt %d: %s %s", event.id, event.task_id,
                event.event, number, outcome.value, error or status)  # fmt: skip
