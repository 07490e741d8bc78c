"""Tables the authorization server keeps for itself."""

from __future__ import annotations

from datetime import UTC, datetime

from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import BigInteger, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from hub.core.db import Base

_ID = BigInteger().with_variant(Integer, "sqlite")


class UsedAssertion(Base):
    """A client assertion's jti, remembered until the assertion expires (RFC 7523 §3, replay)."""

    __tablename__ = "oauth_used_assertions"

    id: Mapped[int] = mapped_column(_ID, primary_key=True, autoincrement=True)
    client_id: Mapped[str] = mapped_column(String(64))
    jti: Mapped[str] = mapped_column(String(200))
    expires_at: Mapped[int] = mapped_column(BigInteger, index=True)

    __table_args__ = (UniqueConstraint("client_id", "jti", name="uq_used_assertion"),)


class AuthFailure(Base):
    """A failed client authentication, counted to throttle guessing."""

    __tablename__ = "oauth_auth_failures"

    id: Mapped[int] = mapped_column(_ID, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(200))
    at: Mapped[datetime] = mapped_column(
        DateTimeUTC(timezone=True), default=lambda: datetime.now(UTC)
    )

    __table_args__ = (Index("ix_auth_failures_key_at", "key", "at"),)
