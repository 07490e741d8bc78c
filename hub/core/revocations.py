"""What makes a validly signed token stop working: a revoked ``jti``, a revoked client, a
suspended partner.

The table is the source of truth for every process; each process keeps the whole (small) set in
memory and reloads it every ``revocation_poll_seconds``. The process that revokes updates its own
copy at once, so a revocation is refused immediately there and within one poll elsewhere.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import BigInteger, Integer, String, UniqueConstraint, delete, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from hub.core.db import Base

TOKEN, CLIENT, PARTNER = "token", "client", "partner"


class Revocation(Base):
    __tablename__ = "revocations"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    kind: Mapped[str] = mapped_column(String(20))
    subject: Mapped[str] = mapped_column(String(200))
    # For tokens: their exp, after which the row is useless and purged. Null: until lifted.
    expires_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    created_at: Mapped[datetime] = mapped_column(
        DateTimeUTC(timezone=True), default=lambda: datetime.now(UTC)
    )

    __table_args__ = (UniqueConstraint("kind", "subject", name="uq_revocations_kind_subject"),)


class RevocationCache:
    """In-memory view of the revocations table, refreshed by a background task."""

    def __init__(self) -> None:
        self.tokens: set[str] = set()
        self.clients: set[str] = set()
        self.partners: set[str] = set()
        self.loaded_at = 0.0

    def is_revoked(self, jti: str, client_id: str, partner_id: str | None) -> str | None:
        """Why the token must be refused, or None."""
        if jti in self.tokens:
            return "the token has been revoked"
        if client_id in self.clients:
            return "the client has been revoked"
        if partner_id is not None and partner_id in self.partners:
            return "the partner is suspended"
        return None

    def note(self, kind: str, subject: str) -> None:
        self._set(kind).add(subject)

    def lift(self, kind: str, subject: str) -> None:
        self._set(kind).discard(subject)

    def _set(self, kind: str) -> set[str]:
        return {TOKEN: self.tokens, CLIENT: self.clients, PARTNER: self.partners}[kind]

    async def refresh(self, session: AsyncSession) -> None:
        now = int(time.time())
        rows = await session.execute(
            select(Revocation.kind, Revocation.subject).where(
                or_(Revocation.expires_at.is_(None), Revocation.expires_at >= now)
            )
        )
        fresh: dict[str, set[str]] = {TOKEN: set(), CLIENT: set(), PARTNER: set()}
        for kind, subject in rows:
            fresh.setdefault(kind, set()).add(subject)
        self.tokens, self.clients, self.partners = fresh[TOKEN], fresh[CLIENT], fresh[PARTNER]
        self.loaded_at = time.monotonic()


async def revoke(
    session: AsyncSession, kind: str, subject: str, expires_at: int | None = None
) -> bool:
    """Record a revocation in the caller's transaction. Returns False if it already existed."""
    existing = await session.scalar(
        select(Revocation.id).where(Revocation.kind == kind, Revocation.subject == subject)
    )
    if existing is not None:
        return False
    session.add(Revocation(kind=kind, subject=subject, expires_at=expires_at))
    await session.flush()
    return True


async def lift(session: AsyncSession, kind: str, subject: str) -> None:
    await session.execute(
        delete(Revocation).where(Revocation.kind == kind, Revocation.subject == subject)
    )


async def purge_expired(session: AsyncSession) -> int:
    result = await session.execute(
        delete(Revocation).where(Revocation.expires_at < int(time.time()) - 60)
    )
    return int(getattr(result, "rowcount", 0) or 0)
