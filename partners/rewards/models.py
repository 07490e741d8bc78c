"""Coalition rewards: members, events, the double-entry ledger, lots, the feed, settlements.

* A **member** is one identifier (an email or phone digest) as the coalition knows it: its
  match key (HMAC under a keyring version, like identifier records) and its digest only
  encrypted (to re-key it after a match-key rotation). Erasure replaces the match key with a
  random tombstone and drops the digest: the postings stay, nothing links them to a person.
* Every **event** (earn, redeem, adjust) is a ledger transaction: its **postings** sum to zero.
  Accounts are named by kind and owner: ``issued``/``redeemed``/``expired`` per partner,
  ``coalition`` per member, ``local`` per member and partner.
* Each credit to a wallet is a **lot** (issuer, wallet, points left, who funds it); redeems,
  negative adjustments and expiry consume lots oldest first and record each **use**, so every
  redeemed point knows the brand that issued it (settlement).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import (
    BigInteger,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from hub.core.db import Base, JsonType
from partners.identifiers.models import big_pk, utc_now

EARN, REDEEM, ADJUST, EXPIRE = "earn", "redeem", "adjust", "expire"
FORFEIT = "forfeit"  # a brand's erasure: what was left of its local lots of the member
WITHDRAWN = "withdrawn"  # a feed item telling a reader to stop using what it received
COALITION, LOCAL = "coalition", "local"
ISSUED, REDEEMED, EXPIRED, FORFEITED = "issued", "redeemed", "expired", "forfeited"


class RewardMember(Base):
    __tablename__ = "reward_members"

    id: Mapped[int] = mapped_column(big_pk(), primary_key=True, autoincrement=True)
    id_type: Mapped[int] = mapped_column(SmallInteger)
    match_key: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    key_version: Mapped[int] = mapped_column(SmallInteger)
    digest_enc: Mapped[bytes | None] = mapped_column(LargeBinary(64), nullable=True)
    data_version: Mapped[int | None] = mapped_column(SmallInteger, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), default=utc_now)
    tombstoned_at: Mapped[datetime | None] = mapped_column(
        DateTimeUTC(timezone=True), nullable=True
    )


class RewardEvent(Base):
    """One partner event as applied: a ledger transaction, replayable by ``event_id``."""

    __tablename__ = "reward_events"

    id: Mapped[int] = mapped_column(big_pk(), primary_key=True, autoincrement=True)
    partner_id: Mapped[UUID] = mapped_column(ForeignKey("partners.id"))
    event_id: Mapped[str] = mapped_column(String(200))
    body_sha256: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(10))
    points: Mapped[int] = mapped_column(BigInteger)
    member_id: Mapped[int] = mapped_column(ForeignKey("reward_members.id"))
    occurred_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True))
    offer_id: Mapped[UUID | None] = mapped_column(nullable=True)
    # The purchase value behind an earn or redeem (currency minor units): offer measurement
    # aggregates only, never a ledger amount.
    amount_minor: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    result: Mapped[dict[str, Any]] = mapped_column(JsonType)
    created_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), default=utc_now)

    __table_args__ = (
        UniqueConstraint("partner_id", "event_id"),
        Index("ix_reward_events_partner_occurred", "partner_id", "occurred_at"),
    )


class RewardLot(Base):
    __tablename__ = "reward_lots"

    id: Mapped[int] = mapped_column(big_pk(), primary_key=True, autoincrement=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("reward_members.id"))
    wallet: Mapped[str] = mapped_column(String(10))  # coalition | local
    issuer_id: Mapped[UUID] = mapped_column(ForeignKey("partners.id"))
    event_ref: Mapped[int] = mapped_column(ForeignKey("reward_events.id"))
    earned_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True))
    points: Mapped[int] = mapped_column(BigInteger)
    remaining: Mapped[int] = mapped_column(BigInteger)
    # Who pays for these points when they are redeemed: {partner id: share}, shares summing to
    # the points (an offer's funding split), or None: the issuer alone.
    funding: Mapped[dict[str, int] | None] = mapped_column(JsonType, nullable=True)

    __table_args__ = (Index("ix_reward_lots_spendable", "member_id", "wallet", "earned_at"),)


class RewardLotUse(Base):
    """Points taken from a lot by a redeem, a negative adjustment or expiry."""

    __tablename__ = "reward_lot_uses"

    id: Mapped[int] = mapped_column(big_pk(), primary_key=True, autoincrement=True)
    lot_id: Mapped[int] = mapped_column(ForeignKey("reward_lots.id"))
    kind: Mapped[str] = mapped_column(String(10))  # redeem | adjust | expire | forfeit
    event_ref: Mapped[int | None] = mapped_column(ForeignKey("reward_events.id"), nullable=True)
    partner_id: Mapped[UUID | None] = mapped_column(nullable=True)  # where redeemed/adjusted
    points: Mapped[int] = mapped_column(BigInteger)
    at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True))

    __table_args__ = (Index("ix_reward_lot_uses_kind_at", "kind", "at"),)


class RewardPosting(Base):
    """One leg of a ledger transaction; the legs of every transaction sum to zero."""

    __tablename__ = "reward_postings"

    id: Mapped[int] = mapped_column(big_pk(), primary_key=True, autoincrement=True)
    txn: Mapped[str] = mapped_column(String(40))  # "event:<id>" or "expiry:<lot id>"
    # issued | redeemed | expired | forfeited | coalition | local
    account: Mapped[str] = mapped_column(String(10))
    partner_id: Mapped[UUID | None] = mapped_column(nullable=True)
    member_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    lot_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    amount: Mapped[int] = mapped_column(BigInteger)
    at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), default=utc_now)

    __table_args__ = (Index("ix_reward_postings_txn", "txn"),)


class RewardFeedItem(Base):
    """Activity shared with a partner, naming the member by that partner's own customer_ref.

    A ``withdrawn`` item has no event: it tells the reader to stop using what it received of
    that member from ``source_partner_id`` (consent withdrawn or the member erased there).
    """

    __tablename__ = "reward_feed"

    seq: Mapped[int] = mapped_column(big_pk(), primary_key=True, autoincrement=True)
    partner_id: Mapped[UUID] = mapped_column()  # the reader
    event_ref: Mapped[int | None] = mapped_column(ForeignKey("reward_events.id"), nullable=True)
    customer_ref: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(10))
    points: Mapped[int] = mapped_column(BigInteger)
    occurred_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True))
    source_partner_id: Mapped[UUID] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), default=utc_now)

    __table_args__ = (
        UniqueConstraint("partner_id", "event_ref"),
        Index("ix_reward_feed_reader", "partner_id", "seq"),
    )


class RewardSettlement(Base):
    """A closed settlement statement: immutable once written."""

    __tablename__ = "reward_settlements"

    id: Mapped[int] = mapped_column(big_pk(), primary_key=True, autoincrement=True)
    period_start: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), unique=True)
    period_end: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True))
    currency: Mapped[str] = mapped_column(String(3))
    point_value_minor: Mapped[int] = mapped_column(Integer)
    # [{"from": partner id, "to": partner id, "points": n, "amount_minor": n}], net per pair
    lines: Mapped[list[dict[str, Any]]] = mapped_column(JsonType)
    closed_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), default=utc_now)


class RewardDisclosure(Base):
    """Who received what: a member's activity at ``source_id`` reached ``reader_id``'s feed,
    where it was named ``reader_ref``. Kept while the member is known, so a withdrawal or an
    erasure at the source reaches every reader (a ``withdrawn`` feed item), once per
    disclosure: ``withdrawn_at`` is set then, and cleared when activity flows again."""

    __tablename__ = "reward_disclosures"

    reader_id: Mapped[UUID] = mapped_column(primary_key=True)
    source_id: Mapped[UUID] = mapped_column(primary_key=True)
    member_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    reader_ref: Mapped[str] = mapped_column(String(200))
    source_ref: Mapped[str] = mapped_column(String(200))
    disclosed_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), default=utc_now)
    withdrawn_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), nullable=True)

    __table_args__ = (Index("ix_reward_disclosures_source", "source_id", "source_ref"),)


class RewardFeedReader(Base):
    """How far a reader has read its feed (the cursor it last presented): ``withdrawn``
    items are kept past the feed's retention until the reader has passed them."""

    __tablename__ = "reward_feed_readers"

    partner_id: Mapped[UUID] = mapped_column(primary_key=True)
    read_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), default=utc_now)
