"""The upload processor: claims waiting uploads, stages them, applies them whole.

A claim is a lease on the upload's row (``attempts`` raised, ``lease_until`` set) renewed
while the work goes on. A process killed anywhere leaves the previous records intact: staging
happens outside the records, and the apply is one transaction. Once the lease runs out, any
processor resumes the upload from its spooled body (staging starts again from scratch);
after ``max_attempts`` claims the upload fails with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol
from uuid import UUID

import structlog
from sqlalchemy import Engine, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from hub.core import audit
from hub.core.audit import Actor
from hub.core.db import writing
from partners.identifiers.crypto import IdentifierCrypto
from partners.identifiers.service import IdentifierService
from partners.identifiers.uploads.apply import UploadApplier, apply_settings
from partners.identifiers.uploads.erasures import forget_erasures
from partners.identifiers.uploads.models import COMPLETED, FAILED, PENDING, PROCESSING
from partners.identifiers.uploads.rows import UnreadableBody
from partners.identifiers.uploads.spool import spool_path, sweep
from partners.identifiers.uploads.staging import (
    UPLOADS,
    LeaseLost,
    StageReport,
    StagingJob,
    clear_staging_in_batches,
    refuse_duplicates,
    stage,
    stage_key,
    watch_parent,
)

# Uploads of at least this many rows refresh the table's planner statistics.
ANALYZE_AFTER_ROWS = 50_000
log = structlog.get_logger("hub.uploads")
SWEEP_EVERY_SECONDS = 300


class UploadSettings(Protocol):
    """What the processor reads of the hub's ``[uploads]`` settings."""

    @property
    def batch_rows(self) -> int: ...
    @property
    def max_error_rows(self) -> int: ...
    @property
    def refused_limit(self) -> float: ...
    @property
    def poll_seconds(self) -> float: ...
    @property
    def lease_seconds(self) -> float: ...
    @property
    def max_attempts(self) -> int: ...
    @property
    def parse_processes(self) -> int: ...
    @property
    def erasure_hold_minutes(self) -> float: ...


@dataclass(frozen=True)
class Claim:
    upload_id: UUID
    partner_id: UUID
    client_id: str
    mode: str
    fmt: str
    compressed: bool
    attempt: int
    sent_at: datetime


class UploadFailed(Exception):
    """The upload cannot be applied; the message is its ``error`` for the partner."""


class UploadProcessor:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        sync_engine: Engine,
        crypto: IdentifierCrypto,
        settings: UploadSettings,
        spool_dir: Path,
    ) -> None:
        self.sessions = sessions
        self.sync_engine = sync_engine
        self.crypto = crypto
        self.settings = settings
        self.spool_dir = spool_dir
        spool_dir.mkdir(parents=True, exist_ok=True)
        self.wake = asyncio.Event()
        self._stopping = threading.Event()
        self._pool: ProcessPoolExecutor | None = None

    def stop(self) -> None:
        """Ask a staging thread in progress to stop at its next batch (on shutdown)."""
        self._stopping.set()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def _parsing_pool(self) -> ProcessPoolExecutor | None:
        """Processes that check and seal NDJSON rows in parallel (spawned, not forked: this
        process runs threads). None when configured to parse in the processing thread."""
        if self.settings.parse_processes < 1:
            return None
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=self.settings.parse_processes,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=watch_parent,
                initargs=(os.getpid(),),
            )
        return self._pool

    async def run_forever(self) -> None:
        next_sweep = 0.0
        while True:
            try:
                if time.monotonic() >= next_sweep:
                    await asyncio.to_thread(self.sweep)
                    next_sweep = time.monotonic() + SWEEP_EVERY_SECONDS
                while await self.process_next():
                    pass
            except Exception:
                log.exception("upload processing failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), self.settings.poll_seconds)
            self.wake.clear()

    async def process_next(self) -> bool:
        """Claim and process one upload; False when none is waiting."""
        claim = await self.claim()
        if claim is None:
            return False
        heartbeat = asyncio.create_task(self._heartbeat(claim))
        try:
            await self._process(claim)
        except LeaseLost:
            log.warning("upload taken over by another process", upload_id=str(claim.upload_id))
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
        return True

    async def claim(self) -> Claim | None:
        now = datetime.now(UTC)
        waiting = or_(
            UPLOADS.c.status == PENDING,
            (UPLOADS.c.status == PROCESSING) & (UPLOADS.c.lease_until < now),
        )
        with writing():
            async with self.sessions() as session:
                row = (
                    await session.execute(
                        select(
                            UPLOADS.c.id,
                            UPLOADS.c.partner_id,
                            UPLOADS.c.client_id,
                            UPLOADS.c.mode,
                            UPLOADS.c.format,
                            UPLOADS.c.gzip,
                            UPLOADS.c.attempts,
                            UPLOADS.c.sent_at,
                            UPLOADS.c.created_at,
                        )
                        .where(waiting)
                        .order_by(UPLOADS.c.created_at)
                        .limit(1)
                        .with_for_update(skip_locked=True)
                    )
                ).first()
                if row is None:
                    return None
                attempt = row.attempts + 1
                if attempt > self.settings.max_attempts:
                    await self._finish_failed(
                        session,
                        row.id,
                        row.partner_id,
                        row.attempts,
                        f"Processing was interrupted {row.attempts} times; nothing was applied. "
                        "Upload the file again; if this repeats, split it into smaller files.",
                    )
                    await session.commit()
                    return await self.claim()
                await session.execute(
                    update(UPLOADS)
                    .where(UPLOADS.c.id == row.id)
                    .values(
                        status=PROCESSING,
                        attempts=attempt,
                        lease_until=now + timedelta(seconds=self.settings.lease_seconds),
                        started_at=now,
                    )
                )
                await session.commit()
        return Claim(
            row.id,
            row.partner_id,
            row.client_id,
            row.mode,
            row.format,
            row.gzip,
            attempt,
            row.sent_at or row.created_at,
        )

    async def _heartbeat(self, claim: Claim) -> None:
        every = max(self.settings.lease_seconds / 3, 0.1)
        while True:
            await asyncio.sleep(every)
            until = datetime.now(UTC) + timedelta(seconds=self.settings.lease_seconds)
            with writing():
                async with self.sessions() as session:
                    await session.execute(
                        update(UPLOADS)
                        .where(UPLOADS.c.id == claim.upload_id, UPLOADS.c.attempts == claim.attempt)
                        .values(lease_until=until)
                    )
                    await session.commit()

    async def _process(self, claim: Claim) -> None:
        path = spool_path(self.spool_dir, claim.upload_id)
        job = StagingJob(
            upload_id=claim.upload_id,
            partner_id=claim.partner_id,
            fmt=claim.fmt,
            compressed=claim.compressed,
            attempt=claim.attempt,
            batch_rows=self.settings.batch_rows,
            max_error_rows=self.settings.max_error_rows,
        )
        try:
            started = time.perf_counter()
            report = await asyncio.to_thread(self._stage, job, path)
            staged = time.perf_counter()
            self._check_refused_share(report)
            await self._apply(claim, report)
            log.info(
                "upload applied",
                upload_id=str(claim.upload_id),
                rows=report.rows_read,
                refused=report.refused,
                stage_seconds=round(staged - started, 3),
                apply_seconds=round(time.perf_counter() - staged, 3),
            )
        except (UnreadableBody, UploadFailed) as exc:
            reason = str(exc)
            if isinstance(exc, UnreadableBody):
                reason = f"The body cannot be read: {reason}. Nothing was applied."
            with writing():
                async with self.sessions() as session:
                    await self._finish_failed(
                        session, claim.upload_id, claim.partner_id, claim.attempt, reason
                    )
                    await session.commit()
        await asyncio.to_thread(self._clean_up, claim.upload_id, path)

    def _stage(self, job: StagingJob, path: Path) -> StageReport:
        try:
            body = path.open("rb")
        except FileNotFoundError as exc:
            raise UploadFailed(
                "The uploaded body is no longer on the hub (its spool file is gone); "
                "nothing was applied. Upload the file again."
            ) from exc
        try:
            with body:
                report = stage(
                    self.sync_engine,
                    self.crypto,
                    job,
                    body,
                    cancelled=self._stopping.is_set,
                    pool=self._parsing_pool(),
                )
        except BrokenProcessPool:
            self._pool = None  # a parsing process died (killed, out of memory): start anew
            raise
        refuse_duplicates(self.sync_engine, job, report)
        return report

    def _check_refused_share(self, report: StageReport) -> None:
        if report.rows_read == 0:
            raise UploadFailed("The upload holds no rows; nothing was applied.")
        share = report.refused / report.rows_read
        if share > self.settings.refused_limit:
            raise UploadFailed(
                f"{report.refused:,} of {report.rows_read:,} rows were refused ({share:.2%}), "
                f"more than the limit of {self.settings.refused_limit:.2%}; nothing was "
                "applied. The error report lists each refused row: fix them and upload the "
                "file again."
            )

    async def _apply(self, claim: Claim, report: StageReport) -> None:
        if self.crypto.keys.match_version != report.match_version:
            # A match key was added while this upload was staged: stage it again under the
            # new version (the next claim does), rather than apply keys of the old one.
            raise LeaseLost(str(claim.upload_id))
        actor = Actor(name=f"client:{claim.client_id}", partner_id=str(claim.partner_id))
        with writing():
            async with self.sessions() as session, apply_settings(session):
                await self._apply_in(session, claim, report, actor)
        if report.accepted >= ANALYZE_AFTER_ROWS:
            await self._refresh_statistics()

    async def _refresh_statistics(self) -> None:
        """After a large upload, fresh planner statistics: without them PostgreSQL takes a
        freshly loaded table for a tiny one and filters key lookups (the rewards sync's, for
        one) instead of using the primary key (measured: 9 ms instead of 100 ms to 2 s)."""
        try:
            async with self.sessions() as session:
                if session.get_bind().dialect.name == "postgresql":
                    await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
                    await session.execute(text("ANALYZE identifier_records"))
        except Exception:  # the upload is applied either way; autovacuum analyzes later
            log.warning("could not refresh planner statistics after an upload", exc_info=True)

    async def _apply_in(
        self, session: AsyncSession, claim: Claim, report: StageReport, actor: Actor
    ) -> None:
        service = IdentifierService(session, self.crypto)
        result = await UploadApplier(session, service).apply(
            stage_key(claim.upload_id, claim.attempt),
            claim.partner_id,
            claim.mode,
            report.match_version,
            accepted_rows=report.accepted,
            sent_at=claim.sent_at,
            with_previous_keys=report.with_previous_keys,
        )
        await audit.append(
            session,
            actor.event(
                "identifiers.upload_applied",
                "identifier_upload",
                str(claim.upload_id),
                mode=claim.mode,
                rows_read=report.rows_read,
                accepted=report.accepted,
                refused=report.refused,
                created=result.created,
                updated=result.updated,
                removed=result.removed,
                skipped=result.skipped,
            ),
        )
        done = await session.execute(
            update(UPLOADS)
            .where(UPLOADS.c.id == claim.upload_id, UPLOADS.c.attempts == claim.attempt)
            .values(
                status=COMPLETED,
                rows_read=report.rows_read,
                accepted=report.accepted,
                refused=report.refused,
                created=result.created,
                updated=result.updated,
                removed=result.removed,
                skipped=result.skipped,
                notice=result.notice,
                lease_until=None,
                finished_at=datetime.now(UTC),
            )
        )
        if getattr(done, "rowcount", 0) != 1:
            await session.rollback()
            raise LeaseLost(str(claim.upload_id))
        await session.commit()

    async def _finish_failed(
        self, session: AsyncSession, upload_id: UUID, partner_id: UUID, attempt: int, reason: str
    ) -> None:
        """Mark the upload failed with ``reason`` (it names no value) and audit it."""
        done = await session.execute(
            update(UPLOADS)
            .where(UPLOADS.c.id == upload_id, UPLOADS.c.attempts == attempt)
            .values(status=FAILED, error=reason, lease_until=None, finished_at=datetime.now(UTC))
        )
        if getattr(done, "rowcount", 0) == 1:
            actor = Actor(name="system", partner_id=str(partner_id))
            await audit.append(
                session,
                actor.event(
                    "identifiers.upload_failed", "identifier_upload", str(upload_id), reason=reason
                ),
            )

    def sweep(self) -> None:
        sweep(self.sync_engine, self.spool_dir)
        forget_erasures(self.sync_engine, timedelta(minutes=self.settings.erasure_hold_minutes))

    def _clean_up(self, upload_id: UUID, path: Path) -> None:
        """Staging rows and the spooled body of a finished upload (completed or failed)."""
        clear_staging_in_batches(self.sync_engine, upload_id)
        path.unlink(missing_ok=True)
