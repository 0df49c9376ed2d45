"""Keeping a lease alive while the handler works, from a background thread."""

from __future__ import annotations

import logging
import threading
import time
from types import TracebackType
from typing import Any

import requests

from client_sdk.errors import Conflict, InferboxError, NotFound
from client_sdk.http import json_document, raise_for_error, send

__all__ = ["Heartbeat"]

logger = logging.getLogger("inferbox.worker")


class Heartbeat:
    """Posts ``POST /tasks/<id>/heartbeat`` every ``lease / 3`` seconds until stopped.

    Use as a context manager around the handler call. ``lost`` turns true when the broker
    says the task was canceled or the lease is gone (``409``, ``404``); ``reason`` says
    which, and beating stops. A failed beat (broker away) is logged and tried again at the
    next tick. ``deadline`` is the ``time.monotonic()`` instant the lease is believed to end.
    """

    def __init__(
        self,
        session: requests.Session,
        url: str,
        lease_id: str,
        *,
        lease: float,
        timeout: float,
    ) -> None:
        self._session = session
        self._url = url
        self._lease_id = lease_id
        self._lease = lease
        self._timeout = timeout
        self._stopped = threading.Event()
        self._lost = threading.Event()
        self.reason: str | None = None
        self.deadline = time.monotonic() + lease
        self._thread = threading.Thread(target=self._beat_until_stopped, daemon=True)

    @property
    def lost(self) -> bool:
        """Whether the task was canceled or the lease lost: its result must be dropped."""
        return self._lost.is_set()

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stopped.set()
        self._thread.join(timeout=self._timeout)

    def _beat_until_stopped(self) -> None:
        while not self._stopped.wait(self._lease / 3) and not self.lost:
            self.beat()

    def beat(self) -> None:
        """Post one heartbeat now and record what the broker answered."""
        sent_at = time.monotonic()
        try:
            answer = self._post()
        except (Conflict, NotFound) as exc:
            self._mark_lost(f"lease lost ({exc})")
        except InferboxError as exc:
            logger.warning("heartbeat failed, will try again: %s", exc)
        else:
            self.deadline = sent_at + self._lease
            if answer.get("canceled"):
                self._mark_lost("canceled by a client")

    def _post(self) -> dict[str, Any]:
        response = send(
            self._session,
            "POST",
            self._url,
            json={"lease_id": self._lease_id},
            timeout=self._timeout,
        )
        raise_for_error(response)
        return json_document(response)

    def _mark_lost(self, reason: str) -> None:
        self.reason = reason
        self._lost.set()
