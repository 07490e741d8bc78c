from __future__ import annotations

from datetime import datetime
from uuid import UUID

from advanced_alchemy.base import UUIDv7AuditBase
from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import Boolean, Float, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from hub.core.db import JsonType

PROPOSED, ACTIVE, SUSPENDED, ENDED = "proposed", "active", "suspended", "ended"
PURPOSES = ("analytics", "joint_offers", "rewards_sharing")


class Partnership(UUIDv7AuditBase):
    """Two partners agreeing to work together for some purposes, under privacy terms."""

    __tablename__ = "partnerships"

    status: Mapped[str] = mapped_column(String(20), default=PROPOSED, index=True)
    purposes: Mapped[list[str]] = mapped_column(JsonType)
    min_audience: Mapped[int] = mapped_column(Integer)
    epsilon: Mapped[float | None] = mapped_column(Float, nullable=True)
    # The epsilon that overlap queries may spend per budget period (None: 10 queries' worth).
    epsilon_budget: Mapped[float | None] = mapped_column(Float, nullable=True)
    budget_period: Mapped[str] = mapped_column(String(10), default="day", server_default="day")
    allow_competitors: Mapped[bool] = mapped_column(Boolean, default=False)
    members: Mapped[list[PartnershipMember]] = relationship(
        back_populates="partnership",
        lazy="selectin",
        cascade="all, delete-orphan",
        order_by="PartnershipMember.partner_id",
    )


class PartnershipMember(UUIDv7AuditBase):
    __tablename__ = "partnership_members"

    partnership_id: Mapped[UUID] = mapped_column(
        ForeignKey("partnerships.id", ondelete="CASCADE"), index=True
    )
    partner_id: Mapped[UUID] = mapped_column(ForeignKey("partners.id"), index=True)
    accepted_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), nullable=True)
    partnership: Mapped[Partnership] = relationship(back_populates="members")

    __table_args__ = (UniqueConstraint("partnership_id", "partner_id"),)
