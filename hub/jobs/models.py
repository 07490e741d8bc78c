"""Tables of the scheduler: one row per run, one lease per job, and admins' run requests.

A run keeps its ``cursor`` (where the job got to) and ``counts`` as the job checkpoints them,
so the next run of the job resumes where a crashed one stopped. The lease row says which run
may work on a job until ``expires_at``; a worker that dies stops renewing it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import BigInteger, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from hub.core.db import Base, JsonType
from partners.identifiers.models import big_pk, utc_now

RUNNING, SUCCEEDED, FAILED, ABANDONED = "running", "succeeded", "failed", "abandoned"
# The job could not do its work here, for a reason that is no failure of the run (its
# ``error`` says why): e.g. the keyring is read-only for signing_key_rotation.
SKIPPED = "skipped"
SCHEDULE, REQUEST = "schedule", "request"


class JobRun(Base):
    __tablename__ = "job_runs"

    id: Mapped[int] = mapped_column(big_pk(), primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(12), default=RUNNING)
    trigger: Mapped[str] = mapped_column(String(12))
    started_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), default=utc_now)
    finished_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), nullable=True)
    heartbeat_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), default=utc_now)
    worker: Mapped[str] = mapped_column(String(200))
    counts: Mapped[dict[str, int]] = mapped_column(JsonType, default=dict)
    cursor: Mapped[dict[str, Any]] = mapped_column(JsonType, default=dict)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)

    __table_args__ = (Index("ix_job_runs_name", "name", "id"),)


class JobLease(Base):
    __tablename__ = "job_leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(200))
    run_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    expires_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True))


class JobRunRequest(Base):
    """``POST /v1/jobs/{name}/run``: waiting until a worker picks it (``picked_at``)."""

    __tablename__ = "job_run_requests"

    id: Mapped[int] = mapped_column(big_pk(), primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64))
    requested_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), default=utc_now)
    requested_by: Mapped[str] = mapped_column(String(200))
    picked_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), nullable=True)
    run_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)

    __table_args__ = (Index("ix_job_run_requests_waiting", "picked_at", "id"),)
