"""Tables of the matching domain: answered overlap queries, the admin matrix's stored answers,
joint offers, their arms (audience = treated, controls) and their stored results answers."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from advanced_alchemy.base import UUIDv7AuditBase
from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import (
    BigInteger,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column

from hub.core.db import Base, JsonType
from partners.identifiers.models import big_pk, utc_now

PROPOSED, ACTIVE, ENDED = "proposed", "active", "ended"


class OverlapQuery(Base):
    """Every answered overlap query: what it spent of the privacy budget, and its true counts
    (kept to refuse a later answer that differs by fewer than ``min_audience`` people)."""

    __tablename__ = "overlap_queries"

    id: Mapped[int] = mapped_column(big_pk(), primary_key=True, autoincrement=True)
    partnership_id: Mapped[UUID] = mapped_column(ForeignKey("partnerships.id", ondelete="CASCADE"))
    partner_id: Mapped[UUID | None] = mapped_column(nullable=True)  # who asked (None: admin)
    purpose: Mapped[str] = mapped_column(String(20))
    # The breakdown in member terms ("<partner uuid>.<attribute>", comma separated; "" = none):
    # the same question whichever member asks it.
    breakdown: Mapped[str] = mapped_column(String(500))
    answered_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), default=utc_now)
    epsilon: Mapped[float] = mapped_column(Float, default=0.0)
    total: Mapped[int] = mapped_column(BigInteger)
    cells: Mapped[list[Any]] = mapped_column(JsonType)  # [[values..., count], ...]

    __table_args__ = (
        Index("ix_overlap_queries_question", "partnership_id", "purpose", "breakdown"),
        Index("ix_overlap_queries_budget", "partnership_id", "answered_at"),
    )


class MatrixAnswer(Base):
    """The admin matrix's last answer for a pair of partners and a purpose, with the data
    versions of both sides it was computed on (``identifier_state.version``) and the
    partnership whose rules it followed (None: the pair never had one).

    While neither version moves (and the same partnership governs the pair), the answer is
    served again as it is: the same noisy count, without spending epsilon again.
    """

    __tablename__ = "matrix_answers"

    purpose: Mapped[str] = mapped_column(String(20), primary_key=True)
    # The pair, smaller partner id first: one answer whichever way round the matrix lists it.
    partner_low: Mapped[UUID] = mapped_column(primary_key=True)
    partner_high: Mapped[UUID] = mapped_column(primary_key=True)
    low_version: Mapped[int] = mapped_column(BigInteger)
    high_version: Mapped[int] = mapped_column(BigInteger)
    partnership_id: Mapped[UUID | None] = mapped_column(nullable=True)
    min_audience: Mapped[int] = mapped_column(Integer)
    epsilon: Mapped[float | None] = mapped_column(Float, nullable=True)  # None: no noise
    count: Mapped[int | None] = mapped_column(BigInteger, nullable=True)  # None: not shown
    # A refusal (its reason code and text) is kept as well, so that a view that does not
    # spend can say why the last answer was refused; it is never served as an answer.
    refused: Mapped[str | None] = mapped_column(String(40), nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    answered_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), default=utc_now)


class Offer(UUIDv7AuditBase):
    """A joint offer between the two members of a partnership."""

    __tablename__ = "offers"

    partnership_id: Mapped[UUID] = mapped_column(ForeignKey("partnerships.id"), index=True)
    proposer_id: Mapped[UUID] = mapped_column(ForeignKey("partners.id"))
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    points: Mapped[dict[str, int]] = mapped_column(JsonType)  # partner id -> points
    filters: Mapped[dict[str, dict[str, list[str]]]] = mapped_column(JsonType)
    starts_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), nullable=True)
    ends_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), nullable=True)
    status: Mapped[str] = mapped_column(String(20), default=PROPOSED)
    approvals: Mapped[dict[str, str]] = mapped_column(JsonType)  # partner id -> ISO time
    activated_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), nullable=True)
    # partner id -> identifier_state version the audience was last reconciled with
    reconciled: Mapped[dict[str, int]] = mapped_column(JsonType)
    audience_sizes: Mapped[dict[str, int]] = mapped_column(JsonType)  # partner id -> people
    # Measurement (DESIGN.md "Offer measurement"): the share of matched groups held out as a
    # control, the days after the window that still count, the HMAC key that assigns groups
    # to arms (secret: with it, a member could tell which of its people are held out), and
    # the control arm's size per side. Offers activated before holdouts existed: h = 0.
    holdout: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    attribution_days: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    salt: Mapped[bytes | None] = mapped_column(LargeBinary(32), nullable=True)
    control_sizes: Mapped[dict[str, int] | None] = mapped_column(JsonType, nullable=True)


class OfferAudience(Base):
    """A member's people in an active offer's audience (its own customer_refs only)."""

    __tablename__ = "offer_audiences"

    offer_id: Mapped[UUID] = mapped_column(
        ForeignKey("offers.id", ondelete="CASCADE"), primary_key=True
    )
    partner_id: Mapped[UUID] = mapped_column(primary_key=True)
    customer_ref: Mapped[str] = mapped_column(String(200), primary_key=True)


class OfferControl(Base):
    """A member's people held out of an active offer (the control arm), stored at activation
    beside the audience (the treated arm). Reconciliation only removes rows; no one is ever
    added or moved between arms. Never served person by person: only its size and the
    results' aggregates leave the hub."""

    __tablename__ = "offer_controls"

    offer_id: Mapped[UUID] = mapped_column(
        ForeignKey("offers.id", ondelete="CASCADE"), primary_key=True
    )
    partner_id: Mapped[UUID] = mapped_column(primary_key=True)
    customer_ref: Mapped[str] = mapped_column(String(200), primary_key=True)


class OfferResultAnswer(Base):
    """A released results answer (suppressed and noised figures only), kept with the data
    versions it was computed on: the same question at the same versions is served again as it
    is, spending no epsilon. ``question`` is (side, breakdown, window); ``versions`` both
    members' identifier versions and the newest event id of the sides."""

    __tablename__ = "offer_result_answers"

    id: Mapped[int] = mapped_column(big_pk(), primary_key=True, autoincrement=True)
    offer_id: Mapped[UUID] = mapped_column(ForeignKey("offers.id", ondelete="CASCADE"))
    question: Mapped[str] = mapped_column(String(500))
    versions: Mapped[str] = mapped_column(String(200))
    released: Mapped[dict[str, Any]] = mapped_column(JsonType)
    answered_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), default=utc_now)

    __table_args__ = (Index("ix_offer_result_answers_question", "offer_id", "question"),)


class OfferResultFill(Base):
    """One side of an activated offer whose events in the window are kept summed per ledger
    member as they are applied (:class:`OfferResultTotal`, :mod:`matching.result_totals`):
    ``opens`` is the window's start, ``closes`` its last bound (the offer's end plus its
    attribution days; None while the offer has no end). An offer side without a row is
    filled from ``reward_events`` before its first results read."""

    __tablename__ = "offer_result_fills"

    offer_id: Mapped[UUID] = mapped_column(
        ForeignKey("offers.id", ondelete="CASCADE"), primary_key=True
    )
    partner_id: Mapped[UUID] = mapped_column(primary_key=True)
    opens: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True))
    closes: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), nullable=True)
    filled_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), default=utc_now)

    __table_args__ = (Index("ix_offer_result_fills_partner", "partner_id"),)


class OfferResultTotal(Base):
    """A ledger member's earn and redeem events at one side of an offer with ``occurred_at``
    in the offer's window ``[opens, closes)``: how many, their points and their amounts. Kept
    in the transaction that applies the events; the results read maps members to people at
    read time (records change), so erasure and reconciliation need nothing here."""

    __tablename__ = "offer_result_totals"

    offer_id: Mapped[UUID] = mapped_column(primary_key=True)
    partner_id: Mapped[UUID] = mapped_column(primary_key=True)
    member_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    events: Mapped[int] = mapped_column(BigInteger)
    points: Mapped[int] = mapped_column(BigInteger)
    amount_minor: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (
        ForeignKeyConstraint(
            ["offer_id", "partner_id"],
            ["offer_result_fills.offer_id", "offer_result_fills.partner_id"],
            ondelete="CASCADE",
        ),
    )


class OfferAudienceChange(Base):
    """A person who left an active offer's audience, for that member to pull out of its
    campaign (``GET /v1/offers/{id}/audience/changes``). No reason is given: it could tell
    one member about the other member's customer."""

    __tablename__ = "offer_audience_changes"

    seq: Mapped[int] = mapped_column(big_pk(), primary_key=True, autoincrement=True)
    offer_id: Mapped[UUID] = mapped_column(ForeignKey("offers.id", ondelete="CASCADE"))
    partner_id: Mapped[UUID] = mapped_column()
    customer_ref: Mapped[str] = mapped_column(String(200))
    change: Mapped[str] = mapped_column(String(20), default="removed")
    at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), default=utc_now)

    __table_args__ = (Index("ix_offer_audience_changes_reader", "offer_id", "partner_id", "seq"),)
