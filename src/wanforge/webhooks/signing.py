"""Webhook signatures, as WaveSpeed v3 sends them.

`webhook-signature: v3,<hex>` where hex is HMAC-SHA256 over `{webhook-id}.{webhook-timestamp}.{body}`
keyed with the secret minus its `whsec_` prefix.
"""

from __future__ import annotations

import hashlib
import hmac

VERSION = "v3"
SECRET_PREFIX = "whsec_"


def signature(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    key = secret.removeprefix(SECRET_PREFIX).encode()
    message = f"{webhook_id}.{timestamp}.".encode() + body
    return f"{VERSION},{hmac.new(key, message, hashlib.sha256).hexdigest()}"


def headers(secret: str, webhook_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "content-type": "application/json",
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(secret, webhook_id, timestamp, body),
    }


def verify(secret: str, headers: dict[str, str], body: bytes, *, tolerance_s: int, now: int) -> bool:
    """What a receiver does: check the signature and that the timestamp is recent."""
    try:
        timestamp = int(headers["webhook-timestamp"])
        expected = signature(secret, headers["webhook-id"], timestamp, body)
    except (KeyError, ValueError):
        return False
    return abs(now - timestamp) <= tolerance_s and hmac.compare_digest(expected, headers["webhook-signature"])
