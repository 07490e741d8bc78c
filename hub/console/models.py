"""Tables of the admin console: its users, their sessions, and failed sign-ins.

A session row is keyed by the SHA-256 of the cookie's token, never the token itself: a copy of
the database does not let anyone take over a session.
"""

from __future__ import annotations

from datetime import UTC, datetime

from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from hub.core.db import Base

_ID = BigInteger().with_variant(Integer, "sqlite")


def _now() -> datetime:
    return datetime.now(UTC)


class ConsoleUser(Base):
    """A coalition admin who signs in to the console (made with ``hub admin users create``)."""

    __tablename__ = "console_users"

    id: Mapped[int] = mapped_column(_ID, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(100), unique=True)
    # argon2id, as client secrets are (hub.core.secrets.SecretHasher).
    password_hash: Mapped[str] = mapped_column(String(200))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), default=_now)
    last_sign_in_at: Mapped[datetime | None] = mapped_column(
        DateTimeUTC(timezone=True), nullable=True
    )


class ConsoleSession(Base):
    __tablename__ = "console_sessions"

    # SHA-256 (hex) of the random token the cookie carries.
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("console_users.id", ondelete="CASCADE"))
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), default=_now)
    # Slides with use (idle timeout), never past created_at + the absolute lifetime.
    expires_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True))
    last_seen_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), default=_now)

    __table_args__ = (Index("ix_console_sessions_user_id", "user_id"),)


class ConsoleSignInFailure(Base):
    """A failed sign-in, counted per username and per client address to throttle guessing."""

    __tablename__ = "console_sign_in_failures"

    id: Mapped[int] = mapped_column(_ID, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(200))
    at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), default=_now)

    __table_args__ = (Index("ix_console_sign_in_failures_key_at", "key", "at"),)
