"""Tables of bulk uploads: the upload itself, its per-row error report, and the staging rows.

Staging rows are transient: written in batches while an upload is processed (COPY on
PostgreSQL into an UNLOGGED table, executemany on SQLite) and deleted once it is applied. A
staging row holds what a record will hold -- the match key and the digest under AES-GCM, never
the digest in clear. A refused row is staged too (``refused`` set, with whatever of its
customer_ref and key could be read) so that ``replace`` keeps that person's records.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from hub.core.db import Base, JsonType
from partners.identifiers.models import big_pk, utc_now

PENDING, PROCESSING, COMPLETED, FAILED = "pending", "processing", "completed", "failed"
# Phases of an upload being processed (``phase`` is NULL before its claim and once finished).
STAGING, APPLYING, TIDYING = "staging", "applying", "tidying"
UPSERT, REPLACE = "upsert", "replace"
NDJSON, CSV = "ndjson", "csv"


class IdentifierUpload(Base):
    __tablename__ = "identifier_uploads"

    id: Mapped[UUID] = mapped_column(primary_key=True)
    partner_id: Mapped[UUID] = mapped_column(
        ForeignKey("partners.id", ondelete="CASCADE"), index=True
    )
    client_id: Mapped[str] = mapped_column(String(64))
    mode: Mapped[str] = mapped_column(String(10))
    format: Mapped[str] = mapped_column(String(10))
    gzip: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(12), default=PENDING)
    phase: Mapped[str | None] = mapped_column(String(12), nullable=True)
    bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    body_sha256: Mapped[str] = mapped_column(String(64))
    idempotency_key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    rows_read: Mapped[int] = mapped_column(BigInteger, default=0)
    # Staged rows written so far by the apply (slice by slice; none are visible before it ends).
    applied: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    accepted: Mapped[int] = mapped_column(BigInteger, default=0)
    refused: Mapped[int] = mapped_column(BigInteger, default=0)
    created: Mapped[int] = mapped_column(BigInteger, default=0)
    updated: Mapped[int] = mapped_column(BigInteger, default=0)
    removed: Mapped[int] = mapped_column(BigInteger, default=0)
    # Accepted rows left out because their person or identifier was erased after sent_at.
    skipped: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # Lines that hold no record (blank), counted while the body arrived; not rows.
    blank_lines: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    notice: Mapped[str | None] = mapped_column(Text, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_until: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), default=utc_now)
    # When the hub began to receive the body: erasures from then on win over this upload.
    sent_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), nullable=True)

    __table_args__ = (
        UniqueConstraint("client_id", "idempotency_key", name="uq_identifier_uploads_idem"),
        Index("ix_identifier_uploads_status", "status", "created_at"),
    )


class UploadError(Base):
    """One refused row of an upload: its number, the field and the reason (never the value)."""

    __tablename__ = "identifier_upload_errors"

    id: Mapped[int] = mapped_column(big_pk(), primary_key=True, autoincrement=True)
    upload_id: Mapped[UUID] = mapped_column(ForeignKey("identifier_uploads.id", ondelete="CASCADE"))
    row: Mapped[int] = mapped_column(BigInteger)
    field: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(Text)

    __table_args__ = (Index("ix_identifier_upload_errors_upload", "upload_id", "id"),)


class StagedRecord(Base):
    __tablename__ = "identifier_staging"

    id: Mapped[int] = mapped_column(big_pk(), primary_key=True, autoincrement=True)
    # "<upload id>.<attempt>": rows of an interrupted attempt never mix with the next one's.
    stage_key: Mapped[str] = mapped_column(String(48))
    row: Mapped[int] = mapped_column(BigInteger)
    refused: Mapped[bool] = mapped_column(Boolean, default=False)
    id_type: Mapped[int | None] = mapped_column(SmallInteger, nullable=True)
    match_key: Mapped[bytes | None] = mapped_column(LargeBinary(32), nullable=True)
    # The key under the previous live match-key version, while a rotation is unfinished.
    prev_key: Mapped[bytes | None] = mapped_column(LargeBinary(32), nullable=True)
    digest_enc: Mapped[bytes | None] = mapped_column(LargeBinary(64), nullable=True)
    data_version: Mapped[int | None] = mapped_column(SmallInteger, nullable=True)
    customer_ref: Mapped[str | None] = mapped_column(String(200), nullable=True)
    consents: Mapped[int] = mapped_column(SmallInteger, default=0)
    attributes: Mapped[dict[str, str] | None] = mapped_column(JsonType, nullable=True)

    # On PostgreSQL the migration makes this table UNLOGGED (no WAL for transient rows) and
    # gives it no index (hash joins). SQLite joins by nested loops: each upload's rows get
    # indexes of their own once staged (staging.index_staged), and none while staged.
