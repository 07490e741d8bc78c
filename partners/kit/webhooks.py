"""Verify the hub's webhooks (Standard Webhooks: ``webhook-id``, ``webhook-timestamp``,
``webhook-signature``), with the standard library only.

The signed content is ``{id}.{timestamp}.{body}``; the signature is the base64 HMAC-SHA256 of
it under the secret (``whsec_`` then base64 of the key). A header may carry several
signatures (``v1,<sig> v1,<sig>`` while a secret rotates): one match is enough. Timestamps
outside ``tolerance`` seconds are refused, so a captured delivery cannot be replayed later.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

__all__ = ["InvalidWebhook", "sign_webhook", "verify_webhook"]

SECRET_PREFIX = "whsec_"  # noqa: S105 (the format's prefix)


class InvalidWebhook(ValueError):
    """The delivery is not the hub's (or is too old): do not act on it."""


def _key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def sign_webhook(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value the hub sends for this content."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def verify_webhook(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    tolerance: int = 300,
    now: float | None = None,
) -> Any:
    """The delivery's JSON payload when it is signed with ``secret`` and recent; raises
    :class:`InvalidWebhook` otherwise. ``headers`` as received (any case)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    try:
        msg_id = lowered["webhook-id"]
        timestamp = int(lowered["webhook-timestamp"])
        signatures = lowered["webhook-signature"].split()
    except (KeyError, ValueError) as exc:
        raise InvalidWebhook("missing or malformed webhook-* headers") from exc
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        raise InvalidWebhook("the delivery's timestamp is outside the tolerance (a replay?)")
    expected = sign_webhook(secret, msg_id, timestamp, body).split(",", 1)[1]
    if not any(
        hmac.compare_digest(expected, signature.split(",", 1)[-1])
        for signature in signatures
        if signature.startswith("v1,")
    ):
        raise InvalidWebhook("no signature matches the secret")
    return json.loads(body)
