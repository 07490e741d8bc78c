"""Tables of partner webhooks: each partner's signing secret (sealed) and the deliveries.

A delivery's ``id`` is its Standard Webhooks ``webhook-id``: receivers deduplicate on it, so a
retry or a replay sends the same id with the same body. Ids are ``msg_`` and a UUIDv7 in hex,
so ordering by id is ordering by creation time (lists page newest first on it).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import ForeignKey, Index, Integer, LargeBinary, SmallInteger, String
from sqlalchemy.orm import Mapped, mapped_column

from hub.core.db import Base, JsonType

PENDING, DELIVERED, DEAD = "pending", "delivered", "dead"
STATUSES = (PENDING, DELIVERED, DEAD)
ERROR_CHARS = 300


def utc_now() -> datetime:
    return datetime.now(UTC)


class WebhookSecret(Base):
    """A partner's signing secret, only ever stored under AES-GCM with the keyring's data key."""

    __tablename__ = "webhook_secrets"

    partner_id: Mapped[UUID] = mapped_column(
        ForeignKey("partners.id", ondelete="CASCADE"), primary_key=True
    )
    # The data-key version that sealed it (the key can be rotated; old versions still open).
    key_version: Mapped[int] = mapped_column(SmallInteger)
    sealed: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), default=utc_now)
    rotated_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), default=utc_now)


class WebhookDelivery(Base):
    """One webhook: a batch of feed items for one partner, retried until delivered or dead."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    partner_id: Mapped[UUID] = mapped_column(ForeignKey("partners.id", ondelete="CASCADE"))
    payload: Mapped[dict[str, Any]] = mapped_column(JsonType)
    item_count: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(12), default=PENDING)
    # Attempts started: raised when a sender claims the delivery, so an attempt whose sender
    # crashed still counts and a sender that lost its claim cannot record a result.
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True))
    # Held by a sender until then: a second sender never sends it at the same time.
    lease_until: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), nullable=True)
    last_status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # Short and free of payload data: "HTTP 503", "timeout", "refused by the URL policy: ...".
    last_error: Mapped[str | None] = mapped_column(String(ERROR_CHARS), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), default=utc_now)
    updated_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), default=utc_now)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), nullable=True)

    __table_args__ = (
        Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
        Index("ix_webhook_deliveries_partner", "partner_id", "id"),
        Index("ix_webhook_deliveries_status_id", "status", "id"),
        Index("ix_webhook_deliveries_finished", "status", "updated_at"),
    )
