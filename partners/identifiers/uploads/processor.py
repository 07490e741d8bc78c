"""The upload processor: claims waiting uploads, stages them, applies them whole.

Uploads are processed in lanes, at most ``uploads.lanes`` at once, one partner per lane: a
partner's uploads run one after another in the order they were sent, and a partner with a
huge upload in progress never holds back another partner's, whose upload gets a lane of its
own (its claim passes over partners with an upload in progress in any process). Staging is
done in short transactions of ``uploads.batch_rows`` rows, so two lanes interleave.

A claim is a lease on the upload's row (``attempts`` raised, ``lease_until`` set) renewed
while the work goes on. A process killed anywhere leaves the previous records intact: staging
happens outside the records, and the apply is one transaction. Once the lease runs out, any
processor resumes the upload from its spooled body (staging starts again from scratch);
after ``max_attempts`` claims the upload fails with the reason. On shutdown (SIGTERM) the
lanes are cancelled and a statement in progress is interrupted: the apply rolls back and the
upload resumes from its body on restart. ``phase`` (``staging``, ``applying``) tells a caller
where its upload is.
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
from typing import Any, Protocol
from uuid import UUID

import structlog
from sqlalchemy import Engine, and_, exists, or_, select, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from hub.core import audit
from hub.core.audit import Actor
from hub.core.db import writing
from partners.identifiers.crypto import IdentifierCrypto
from partners.identifiers.service import IdentifierService
from partners.identifiers.uploads.apply import UploadApplier, apply_settings
from partners.identifiers.uploads.erasures import forget_erasures
from partners.identifiers.uploads.models import (
    APPLYING,
    COMPLETED,
    FAILED,
    PENDING,
    PROCESSING,
    STAGING,
)
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
    @property
    def lanes(self) -> int: ...


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


def interrupt_statement(connection: Any) -> None:
    """End the statement running on an asyncio driver connection: SQLite's interrupt (safe
    from any thread) or PostgreSQL's cancel request. The statement fails, its transaction
    rolls back."""
    sqlite = getattr(connection, "_connection", None)  # aiosqlite wraps a sqlite3 connection
    try:
        if sqlite is not None:
            sqlite.interrupt()
        else:
            connection.cancel()
    except Exception:  # already closed or finished: nothing left to stop
        log.debug("could not interrupt an apply", exc_info=True)


def apply_pause_for_tests() -> float:
    """TEST ONLY: seconds the apply waits, its writes done and not committed, before it
    commits (``HUB_UPLOADS_TEST_APPLY_PAUSE_SECONDS``): lets a test stop a hub mid-apply."""
    return float(os.environ.get("HUB_UPLOADS_TEST_APPLY_PAUSE_SECONDS", "0"))


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
        # Driver connections of the applies in progress, interrupted on shutdown.
        self._applying: set[Any] = set()
        self._lanes: dict[UUID, asyncio.Task[None]] = {}
        self._sqlite_applies = asyncio.Lock()

    def stop(self) -> None:
        """On shutdown: a staging thread stops at its next batch, an apply in progress is
        interrupted (its transaction rolls back, the records stay as they were) and the
        upload resumes from its spooled body once its lease runs out (as after a crash)."""
        self._stopping.set()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        for connection in list(self._applying):
            interrupt_statement(connection)
        # Lanes first: an apply's open transaction would keep the claim loop waiting on
        # SQLite's write lock (for the whole busy timeout) before it could see its own end.
        for task in self._lanes.values():
            task.cancel()

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
        """Process uploads until cancelled: one lane per partner, at most ``lanes`` at once.

        A partner's uploads run one after another (in the order they were sent), and a lane
        only ever holds one partner's upload, so a partner's huge (or hostile) upload never
        holds back another partner's: the small one gets a lane of its own at once, and the
        two interleave their short staging transactions."""
        lanes = self._lanes
        next_sweep = 0.0
        try:
            while True:
                try:
                    if time.monotonic() >= next_sweep:
                        await asyncio.to_thread(self.sweep)
                        next_sweep = time.monotonic() + SWEEP_EVERY_SECONDS
                    self._reap(lanes)
                    while len(lanes) < max(self.settings.lanes, 1):
                        claim = await self.claim(busy=frozenset(lanes))
                        if claim is None:
                            break
                        lanes[claim.partner_id] = asyncio.create_task(self._run(claim))
                except Exception:
                    log.exception("upload processing failed")
                await self._idle(lanes)
        finally:
            for task in lanes.values():
                task.cancel()
            for task in lanes.values():
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    @staticmethod
    def _reap(lanes: dict[UUID, asyncio.Task[None]]) -> None:
        for partner_id, task in list(lanes.items()):
            if task.done():
                del lanes[partner_id]
                if not task.cancelled() and task.exception() is not None:
                    log.error("upload processing failed", exc_info=task.exception())

    async def _idle(self, lanes: dict[UUID, asyncio.Task[None]]) -> None:
        """Until an upload arrives, a lane frees up, or the poll interval passes."""
        woken = asyncio.create_task(self.wake.wait())
        try:
            await asyncio.wait(
                [woken, *lanes.values()],
                timeout=self.settings.poll_seconds,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            woken.cancel()
        self.wake.clear()

    async def process_next(self) -> bool:
        """Claim and process one upload; False when none is waiting."""
        claim = await self.claim()
        if claim is None:
            return False
        await self._run(claim)
        return True

    async def _run(self, claim: Claim) -> None:
        heartbeat = asyncio.create_task(self._heartbeat(claim))
        try:
            await self._process(claim)
        except LeaseLost:
            log.warning("upload taken over by another process", upload_id=str(claim.upload_id))
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat

    async def claim(self, busy: frozenset[UUID] = frozenset()) -> Claim | None:
        """The oldest waiting upload of a partner that has none in progress (here: ``busy``,
        or in any process: a live lease), leased to this process."""
        now = datetime.now(UTC)
        waiting = or_(
            UPLOADS.c.status == PENDING,
            (UPLOADS.c.status == PROCESSING) & (UPLOADS.c.lease_until < now),
        )
        other = UPLOADS.alias("other")
        in_progress = exists().where(
            other.c.partner_id == UPLOADS.c.partner_id,
            other.c.status == PROCESSING,
            other.c.lease_until >= now,
            other.c.id != UPLOADS.c.id,
        )
        eligible = and_(waiting, ~in_progress)
        if busy:
            eligible = and_(eligible, UPLOADS.c.partner_id.not_in(sorted(busy)))
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
                        .where(eligible)
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
                    return await self.claim(busy)
                await session.execute(
                    update(UPLOADS)
                    .where(UPLOADS.c.id == row.id)
                    .values(
                        status=PROCESSING,
                        phase=STAGING,
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
            try:
                with writing():
                    async with self.sessions() as session:
                        await session.execute(
                            update(UPLOADS)
                            .where(
                                UPLOADS.c.id == claim.upload_id,
                                UPLOADS.c.attempts == claim.attempt,
                            )
                            .values(lease_until=until)
                        )
                        await session.commit()
            except DBAPIError:  # SQLite busy past its timeout (a long apply): beat again later
                log.warning("could not renew an upload's lease", upload_id=str(claim.upload_id))

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
        async with self._apply_turn():
            await self._enter_phase(claim, APPLYING)
            actor = Actor(name=f"client:{claim.client_id}", partner_id=str(claim.partner_id))
            with writing():
                async with self.sessions() as session, apply_settings(session):
                    raw = await (await session.connection()).get_raw_connection()
                    self._applying.add(raw.driver_connection)
                    try:
                        await self._apply_in(session, claim, report, actor)
                    finally:
                        self._applying.discard(raw.driver_connection)
        if report.accepted >= ANALYZE_AFTER_ROWS:
            await self._refresh_statistics()

    def _apply_turn(self) -> contextlib.AbstractAsyncContextManager[Any]:
        """On SQLite, one apply at a time in this process: an apply holds the write lock, and
        a second one queued on it would give up after the busy timeout (and spend one of its
        upload's attempts); queued here, it waits as long as it takes."""
        if self.sync_engine.dialect.name == "sqlite":
            return self._sqlite_applies
        return contextlib.nullcontext()

    async def _enter_phase(self, claim: Claim, phase: str) -> None:
        with writing():
            async with self.sessions() as session:
                entered = await session.execute(
                    update(UPLOADS)
                    .where(UPLOADS.c.id == claim.upload_id, UPLOADS.c.attempts == claim.attempt)
                    .values(phase=phase)
                )
                if getattr(entered, "rowcount", 0) != 1:
                    raise LeaseLost(str(claim.upload_id))
                await session.commit()

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
        pause = apply_pause_for_tests()
        if pause:
            await asyncio.sleep(pause)
        done = await session.execute(
            update(UPLOADS)
            .where(UPLOADS.c.id == claim.upload_id, UPLOADS.c.attempts == claim.attempt)
            .values(
                status=COMPLETED,
                phase=None,
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
            .values(
                status=FAILED,
                phase=None,
                error=reason,
                lease_until=None,
                finished_at=datetime.now(UTC),
            )
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
