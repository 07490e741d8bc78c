"""What makes a validly signed token stop working: a revoked ``jti``, a revoked client, a
suspended partner, or a partner's reactivation (tokens of an older partner epoch stay dead).

The table is the source of truth for every process; each process keeps the whole (small) set in
memory and reloads it every ``revocation_poll_seconds``. The process that revokes updates its own
copy as soon as the change commits, so a revocation is refused immediately there and within one
poll elsewhere.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import BigInteger, Integer, String, UniqueConstraint, delete, event, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from hub.core.db import Base, rowcount

TOKEN, CLIENT, PARTNER, PARTNER_FLOOR = "token", "client", "partner", "partner_floor"
# A token row is kept this long past the token's exp: verifiers accept exp plus a clock-skew
# leeway, and the row must outlive every moment the token could still verify.
RETENTION_PAST_EXP = 120


class Revocation(Base):
    __tablename__ = "revocations"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    kind: Mapped[str] = mapped_column(String(20))
    subject: Mapped[str] = mapped_column(String(200))
    # For tokens: their exp; the row is purged RETENTION_PAST_EXP later. Null: until lifted.
    expires_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # For partner floors: tokens whose partner_epoch claim is below this are refused.
    not_before: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    created_at: Mapped[datetime] = mapped_column(
        DateTimeUTC(timezone=True), default=lambda: datetime.now(UTC)
    )

    __table_args__ = (UniqueConstraint("kind", "subject", name="uq_revocations_kind_subject"),)


class RevocationCache:
    """In-memory view of the revocations table, refreshed by a background task.

    Local changes are applied after their transaction commits (see :func:`after_commit`), and a
    reload that overlapped a local change is discarded (the next one is current), so a reload
    can never undo a change this process just made.
    """

    def __init__(self) -> None:
        self.tokens: set[str] = set()
        self.clients: set[str] = set()
        self.partners: set[str] = set()
        self.partner_floors: dict[str, int] = {}
        self._changes = 0

    def is_revoked(
        self, jti: str, client_id: str, partner_id: str | None, partner_epoch: int
    ) -> str | None:
        """Why the token must be refused, or None."""
        if jti in self.tokens:
            return "the token has been revoked"
        if client_id in self.clients:
            return "the client has been revoked"
        if partner_id is not None:
            if partner_id in self.partners:
                return "the partner is suspended"
            if partner_epoch < self.partner_floors.get(partner_id, 0):
                return "it was issued before the partner was suspended; get a new token"
        return None

    def note(self, kind: str, subject: str, value: int | None = None) -> None:
        self._changes += 1
        if kind == PARTNER_FLOOR:
            self.partner_floors[subject] = max(value or 0, self.partner_floors.get(subject, 0))
        else:
            self._set(kind).add(subject)

    def lift(self, kind: str, subject: str) -> None:
        self._changes += 1
        if kind == PARTNER_FLOOR:
            self.partner_floors.pop(subject, None)
        else:
            self._set(kind).discard(subject)

    def _set(self, kind: str) -> set[str]:
        return {TOKEN: self.tokens, CLIENT: self.clients, PARTNER: self.partners}[kind]

    async def refresh(self, session: AsyncSession) -> bool:
        """Reload from the table. Returns False if a local change overlapped (kept as is)."""
        changes = self._changes
        now = int(time.time())
        rows = await session.execute(
            select(Revocation.kind, Revocation.subject, Revocation.not_before).where(
                or_(
                    Revocation.expires_at.is_(None),
                    Revocation.expires_at >= now - RETENTION_PAST_EXP,
                )
            )
        )
        sets: dict[str, set[str]] = {TOKEN: set(), CLIENT: set(), PARTNER: set()}
        floors: dict[str, int] = {}
        for kind, subject, not_before in rows:
            if kind == PARTNER_FLOOR:
                floors[subject] = int(not_before or 0)
            elif kind in sets:
                sets[kind].add(subject)
        if changes != self._changes:
            return False
        self.tokens, self.clients, self.partners = sets[TOKEN], sets[CLIENT], sets[PARTNER]
        self.partner_floors = floors
        return True


def after_commit(session: AsyncSession, apply: Callable[[], None]) -> None:
    """Run ``apply`` once the session's transaction has committed (never if it rolls back)."""
    event.listen(session.sync_session, "after_commit", lambda _: apply(), once=True)


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


async def set_floor(session: AsyncSession, partner_id: str, not_before: int) -> None:
    """Refuse the partner's tokens of an epoch below ``not_before`` (used on reactivation)."""
    row = await session.scalar(
        select(Revocation).where(Revocation.kind == PARTNER_FLOOR, Revocation.subject == partner_id)
    )
    if row is None:
        session.add(Revocation(kind=PARTNER_FLOOR, subject=partner_id, not_before=not_before))
    else:
        row.not_before = not_before
    await session.flush()


async def lift(session: AsyncSession, kind: str, subject: str) -> None:
    await session.execute(
        delete(Revocation).where(Revocation.kind == kind, Revocation.subject == subject)
    )


async def purge_expired(session: AsyncSession) -> int:
    result = await session.execute(
        delete(Revocation).where(Revocation.expires_at < int(time.time()) - RETENTION_PAST_EXP)
    )
    return rowcount(result)
