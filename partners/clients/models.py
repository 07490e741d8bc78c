from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from advanced_alchemy.base import UUIDv7AuditBase
from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from hub.core.db import JsonType

ACTIVE, REVOKED = "active", "revoked"
AUTH_METHODS = ("client_secret_basic", "client_secret_post", "private_key_jwt")


class OAuthClient(UUIDv7AuditBase):
    """An OAuth client registration. ``partner_id`` is null for coalition-admin clients."""

    __tablename__ = "oauth_clients"

    client_id: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    partner_id: Mapped[UUID | None] = mapped_column(
        ForeignKey("partners.id", ondelete="RESTRICT"), nullable=True, index=True
    )
    scopes: Mapped[list[str]] = mapped_column(JsonType)
    auth_method: Mapped[str] = mapped_column(String(40))
    # argon2id hash; the secret itself is shown once at creation and never stored.
    secret_hash: Mapped[str | None] = mapped_column(String(200), nullable=True)
    jwks: Mapped[dict[str, Any] | None] = mapped_column(JsonType, nullable=True)
    status: Mapped[str] = mapped_column(String(20), default=ACTIVE)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), nullable=True)
