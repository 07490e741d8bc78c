"""Wire types of the webhook endpoints."""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from uuid import UUID

import msgspec

DeliveryStatus = Literal["pending", "delivered", "dead"]


class SecretCreated(msgspec.Struct):
    """The partner's new signing secret: shown in this response only."""

    secret: str


class DeliveryOut(msgspec.Struct):
    """A delivery as admins see it: never its payload (customer references)."""

    id: str
    partner_id: UUID
    status: str
    attempts: int
    item_count: int
    created_at: datetime
    next_attempt_at: datetime
    delivered_at: datetime | None
    last_status_code: int | None
    last_error: str | None
