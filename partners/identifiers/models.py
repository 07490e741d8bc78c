"""Identifier records, consent events and the per-partner change counter.

A record never holds a digest in clear: ``match_key`` is HMAC-SHA256 under a match-key version
of the keyring, ``digest_enc`` is the digest under AES-GCM with a data-key version (the
partner and id type are its associated data, so a ciphertext cannot be moved between rows).
"""

from __future__ import annotations

from datetime import UTC, datetime
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
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from hub.core.db import Base, JsonType

EMAIL, PHONE = "email", "phone"
ID_TYPE_CODES = {EMAIL: 1, PHONE: 2}
ID_TYPE_NAMES = {code: name for name, code in ID_TYPE_CODES.items()}
CONSENT_BITS = {"analytics": 1, "joint_offers": 2, "rewards_sharing": 4}
MAX_ATTRIBUTES = 20


def consent_mask(consents: list[str] | tuple[str, ...] | set[str]) -> int:
    mask = 0
    for purpose in consents:
        mask |= CONSENT_BITS[purpose]
    return mask


def consent_names(mask: int) -> list[str]:
    return [name for name, bit in CONSENT_BITS.items() if mask & bit]


def utc_now() -> datetime:
    return datetime.now(UTC)


def big_pk() -> Any:
    """A 64-bit autoincrement key (SQLite's INTEGER PRIMARY KEY is its rowid)."""
    return BigInteger().with_variant(Integer, "sqlite")


# identifier_records and consent_events name their partner without a foreign key: they are
# the hub's largest tables, a bulk upload writes a million rows of each, and the per-row
# check cost ~2.6 s per million rows and table on PostgreSQL (measured, bench/README.md).
# partner_id only ever comes from an authenticated partner's token, and partners are never
# deleted (they are suspended; offboarding erases their records explicitly).


class IdentifierRecord(Base):
    """One identifier of a person, in a generation of the partner's records.

    A record counts (is *current*) when ``generation`` is at most the partner's current
    generation and it is not ``retired`` by then (``partners.identifiers.records.current``
    says so in SQL; every reader goes through it). A bulk upload writes its new and changed
    records under the next generation and retires the ones they replace or remove; one small
    transaction then makes that generation current. Outside an apply a key has one row.
    """

    __tablename__ = "identifier_records"

    # The identity of a record is its key: (partner, id type, match key) and its generation.
    # No surrogate id: one index fewer to write for every record of a bulk upload.
    partner_id: Mapped[UUID] = mapped_column(primary_key=True)
    id_type: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    match_key: Mapped[bytes] = mapped_column(LargeBinary(32), primary_key=True)
    generation: Mapped[int] = mapped_column(
        BigInteger, primary_key=True, default=0, server_default="0"
    )
    retired: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    key_version: Mapped[int] = mapped_column(SmallInteger)
    digest_enc: Mapped[bytes] = mapped_column(LargeBinary(64))
    data_version: Mapped[int] = mapped_column(SmallInteger)
    customer_ref: Mapped[str] = mapped_column(String(200))
    consents: Mapped[int] = mapped_column(SmallInteger, default=0)
    attributes: Mapped[dict[str, str] | None] = mapped_column(JsonType, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), default=utc_now)

    __table_args__ = (
        Index("ix_identifier_records_person", "partner_id", "customer_ref"),
        Index(
            "ix_identifier_records_retired",
            "partner_id",
            "retired",
            postgresql_where=text("retired IS NOT NULL"),
            sqlite_where=text("retired IS NOT NULL"),
        ),
    )


class ConsentEvent(Base):
    """A change of what a person consented to, for the consumers of consent (audiences, feeds).

    ``withdrawn`` and ``granted`` are bit masks over CONSENT_BITS. Causes: ``upload`` (a record
    created or updated), ``moved`` (a record moved to another customer_ref), ``update`` (POST
    /v1/identifiers/consents), ``erasure``.
    """

    __tablename__ = "consent_events"

    seq: Mapped[int] = mapped_column(big_pk(), primary_key=True, autoincrement=True)
    partner_id: Mapped[UUID] = mapped_column()
    customer_ref: Mapped[str] = mapped_column(String(200))
    granted: Mapped[int] = mapped_column(SmallInteger, default=0)
    withdrawn: Mapped[int] = mapped_column(SmallInteger, default=0)
    cause: Mapped[str] = mapped_column(String(20))
    at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), default=utc_now)

    __table_args__ = (Index("ix_consent_events_partner_seq", "partner_id", "seq"),)


class IdentifierState(Base):
    """Per partner: a counter raised by every change to its records (uploads, consent,
    erasure, re-keying). Derived arrays built at a version are stale once it moves."""

    __tablename__ = "identifier_state"

    partner_id: Mapped[UUID] = mapped_column(
        ForeignKey("partners.id", ondelete="CASCADE"), primary_key=True
    )
    version: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), default=utc_now)
    # The current generation of the partner's records, and the one a bulk upload is writing.
    generation: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    pending: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # A first load's consents are published from its records after its flip (it writes no
    # pending changes): the generation they are still being published for, and the last
    # person published so far (in customer_ref order), moved in each publishing transaction.
    publishing: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    published_after: Mapped[str | None] = mapped_column(String(200), nullable=True)


class PendingConsentEvent(Base):
    """A consent change of a bulk upload being applied, per slice: after the flip they are
    folded per person into ``consent_events`` (a withdrawal or erasure meanwhile takes its
    grants back first). ``generation`` is the upload's: a later one belongs to an attempt
    that never flipped and is discarded."""

    __tablename__ = "identifier_pending_events"

    id: Mapped[int] = mapped_column(big_pk(), primary_key=True, autoincrement=True)
    partner_id: Mapped[UUID] = mapped_column()
    generation: Mapped[int] = mapped_column(BigInteger)
    customer_ref: Mapped[str] = mapped_column(String(200))
    granted: Mapped[int] = mapped_column(SmallInteger)
    withdrawn: Mapped[int] = mapped_column(SmallInteger)

    __table_args__ = (Index("ix_identifier_pending_events_person", "partner_id", "customer_ref"),)


class IdentifierErasure(Base):
    """An erasure, remembered for the bulk uploads sent before it and applied after it.

    Such an upload is an older statement than the erasure: the people and identifiers it
    names that were erased meanwhile are left out when it is applied (and counted as
    ``skipped``). An entry lives until no upload of the partner sent before it is still
    waiting, and at least ``uploads.erasure_hold_minutes``, the longest a body may take to
    arrive (it has no upload row until then); then the maintenance of uploads deletes it.
    It holds the customer_ref or the match keys (every live version) erased, never a digest.
    """

    __tablename__ = "identifier_erasures"

    id: Mapped[int] = mapped_column(big_pk(), primary_key=True, autoincrement=True)
    partner_id: Mapped[UUID] = mapped_column(ForeignKey("partners.id", ondelete="CASCADE"))
    customer_ref: Mapped[str | None] = mapped_column(String(200), nullable=True)
    match_key: Mapped[bytes | None] = mapped_column(LargeBinary(32), nullable=True)
    erased_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), default=utc_now)

    __table_args__ = (Index("ix_identifier_erasures_partner_at", "partner_id", "erased_at"),)


class IdentifierApplyChange(Base):
    """Whom a change committed while a bulk upload was being applied touched: one row per raise
    of the partner's counter (``version``), with the ``customer_ref`` of everyone whose records
    it changed, in every generation.

    The arrays an upload's apply builds ahead of its flip are those of the counter when the
    build read the records; at the flip the people of every change since are read again and
    the arrays patched with them (``matching.loader.ArraysAhead``), instead of read whole a
    second time. Written only while the partner has a pending generation, and deleted by the
    flip (or by the next attempt, after an attempt that never flipped): it lives for one apply
    (an erased person's ``customer_ref`` is here no longer than in the arrays built ahead)."""

    __tablename__ = "identifier_apply_changes"

    partner_id: Mapped[UUID] = mapped_column(primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    people: Mapped[list[str]] = mapped_column(JsonType)
