"""Check that a webhook delivery came from your broker, in a receiver of any framework::

    from client_sdk.webhooks import verify

    event = verify(SECRET, request.headers, request.get_data())   # raises if forged or stale
    if event["type"] == "task.completed":
        task_id = event["data"]["task_id"]

Deliveries are signed in the Standard Webhooks style (docs/api.md, "Webhooks"): ``webhook-id``,
``webhook-timestamp`` and ``webhook-signature`` = ``v1,`` + base64 HMAC-SHA256 of
``<id>.<timestamp>.<body>`` keyed by the broker's ``INFERBOX_WEBHOOK_SECRET``. The same
``webhook-id`` comes again when a delivery is retried: use it to drop duplicates.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

from client_sdk.errors import WebhookVerificationError

__all__ = ["DEFAULT_TOLERANCE", "sign", "verify"]

DEFAULT_TOLERANCE = 300  # seconds a delivery's timestamp may be off, either way
_PREFIX = "whsec_"


def _key(secret: str | bytes) -> bytes:
    if isinstance(secret, bytes):
        return secret
    if secret.startswith(_PREFIX):
        try:
            return base64.b64decode(secret.removeprefix(_PREFIX), validate=True)
        except binascii.Error:
            raise ValueError("a whsec_ secret must be followed by base64") from None
    return secret.encode()


def sign(secret: str | bytes, message_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value the broker sends for this message (``v1,<base64>``)."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def verify(
    secret: str | bytes, headers: Mapping[str, str], body: bytes, *,
    tolerance: float = DEFAULT_TOLERANCE, now: float | None = None,
) -> dict[str, Any]:  # fmt: skip
    """The delivered event (``{"type", "timestamp", "data"}``) once its signature checks out.

    ``headers`` may be any mapping (lookups ignore case); ``body`` the raw bytes as received,
    before any JSON parsing. Raises ``WebhookVerificationError`` for a missing header, a
    timestamp more than ``tolerance`` seconds from ``now`` (replays), or a wrong signature.
    """
    lowered = {name.lower(): value for name, value in headers.items()}
    try:
        message_id = lowered["webhook-id"]
        stamp = lowered["webhook-timestamp"]
        signatures = lowered["webhook-signature"]
    except KeyError as exc:
        raise WebhookVerificationError(f"missing header {exc.args[0]}") from None
    try:
        timestamp = int(stamp)
    except ValueError:
        raise WebhookVerificationError(f"webhook-timestamp is not an integer: {stamp!r}") from None
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        raise WebhookVerificationError(
            f"webhook-timestamp is {current - timestamp:.0f} s off (tolerance {tolerance:.0f} s)"
        )
    expected = sign(secret, message_id, timestamp, body)
    # Several space-separated signatures may come (a secret being rotated): one must match.
    if not any(hmac.compare_digest(expected, candidate) for candidate in signatures.split()):
        raise WebhookVerificationError("the webhook signature does not match")
    try:
        event = json.loads(body)
    except ValueError as exc:
        raise WebhookVerificationError(f"the body is not JSON: {exc}") from None
    if not isinstance(event, dict):
        raise WebhookVerificationError("the body is not a JSON object")
    return event
