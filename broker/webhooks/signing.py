"""Webhook signatures in the Standard Webhooks style.

Each delivery carries ``webhook-id`` (the message id, the same on every retry),
``webhook-timestamp`` (epoch seconds of the attempt) and ``webhook-signature``: ``v1,`` and the
base64 HMAC-SHA256, keyed by the secret, of ``<id>.<timestamp>.<body>``. A secret written
``whsec_<base64>`` is used as the bytes it encodes (what Standard Webhooks libraries expect); any
other string as its UTF-8 bytes. ``client_sdk.webhooks.verify`` checks them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

from ..errors import SettingsError

PREFIX = "whsec_"


def secret_key(secret: str) -> bytes:
    if secret.startswith(PREFIX):
        try:
            return base64.b64decode(secret.removeprefix(PREFIX), validate=True)
        except binascii.Error:
            raise SettingsError("INFERBOX_WEBHOOK_SECRET: whsec_ must precede base64") from None
    return secret.encode()


def signature(key: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(key: bytes, message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(key, message_id, timestamp, body),
    }
