"""The upload processor: claims waiting uploads, stages them, applies them in slices.

Uploads are processed in lanes, at most ``uploads.lanes`` at once, one partner per lane: a
partner's uploads run one after another in the order they were sent, and a partner with a
huge upload in progress never holds back another partner's, whose upload gets a lane of its
own (its claim passes over partners with an upload in progress in any process). Staging is
done in short transactions of ``uploads.batch_rows`` rows, and the apply in short
transactions of ``uploads.apply_slice_rows`` staged rows, so lanes interleave and no
transaction holds SQLite's write lock for long.

The apply writes a new generation of the partner's records that no reader sees until one
small transaction (the flip) makes it current; then the replaced rows are deleted and the
upload's consent events published, by slices (``phase``: ``staging``, ``applying``,
``tidying``; ``applied`` counts the rows written). See ``uploads.generation``.

A claim is a lease on the upload's row (``attempts`` raised, ``lease_until`` set) renewed
while the work goes on. A process killed anywhere leaves the current records intact: before
the flip, the next attempt discards the unfinished generation and applies the upload again
from its spooled body (staging starts again from scratch); after it, only the tidying is
left and the next claim does just that. After ``max_attempts`` claims the upload fails with
the reason. On shutdown (SIGTERM) the lanes stop at their next slice, a statement in progress
is interrupted, and the upload resumes on restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Protocol
from uuid import UUID

import structlog
from sqlalchemy import Engine, and_, exists, or_, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from hub.core import audit
from hub.core.audit import Actor
from hub.core.db import unavailable_reason, writing
from hub.core.memory import release_free_memory
from partners.identifiers.crypto import IdentifierCrypto
from partners.identifiers.uploads.erasures import forget_apply_changes, forget_erasures
from partners.identifiers.uploads.models import (
    FAILED,
    PENDING,
    PROCESSING,
    STAGING,
    TIDYING,
)
from partners.identifiers.uploads.rows import UnreadableBody
from partners.identifiers.uploads.sliced import (
    BuildsAhead,
    Claim,
    SlicedApply,
)
from partners.identifiers.uploads.spool import spool_path, sweep
from partners.identifiers.uploads.staging import (
    UPLOADS,
    LeaseLost,
    StageReport,
    StagingJob,
    clear_staging_in_batches,
    index_staged,
    refuse_duplicates,
    stage,
    start_parser,
)

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
    def parse_nice(self) -> int: ...
    @property
    def erasure_hold_minutes(self) -> float: ...
    @property
    def lanes(self) -> int: ...
    @property
    def apply_slice_rows(self) -> int: ...
    @property
    def first_load_connections(self) -> int: ...


class PartnerArrays(BuildsAhead, Protocol):
    """The matching engine's arrays of a partner (``matching.loader.ArrayCache``)."""


# A database busy past its wait or unreachable is a warning: the claim is tried again at the
# next poll, and a lane's upload resumes once its lease runs out. Anything else is a bug,
# logged with its traceback.
WAITS_FOR_DATABASE = "upload processing waits for the database"


def _log_failure(exc: BaseException) -> None:
    reason = unavailable_reason(exc)
    if reason is not None:
        log.warning(WAITS_FOR_DATABASE, error=reason)
    else:
        log.error("upload processing failed", exc_info=exc)


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
        arrays: PartnerArrays | None = None,
    ) -> None:
        self.sessions = sessions
        self.sync_engine = sync_engine
        self.crypto = crypto
        self.settings = settings
        self.spool_dir = spool_dir
        # Built by the apply before an upload is reported completed (None: by the first
        # question instead; benchmarks and tools that only write records).
        self.arrays = arrays
        spool_dir.mkdir(parents=True, exist_ok=True)
        self.wake = asyncio.Event()
        self._stopping = threading.Event()
        self._pool: ProcessPoolExecutor | None = None
        self._lanes: dict[UUID, asyncio.Task[None]] = {}
        self.arrays_seconds: dict[UUID, float] = {}  # per upload, for its "applied" log line
        self.applier = SlicedApply(
            sessions,
            sync_engine.dialect.name,
            crypto,
            settings.apply_slice_rows,
            self._stopping,
            arrays=arrays,
            first_load_connections=settings.first_load_connections,
        )

    def stop(self) -> None:
        """On shutdown: a staging thread stops at its next batch, an apply in progress stops
        in its slice (the slice's transaction rolls back; the current records are untouched
        before the flip) and the upload resumes once its lease runs out (as after a crash)."""
        self._stopping.set()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        self.applier.interrupt()
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
                initializer=start_parser,
                initargs=(os.getpid(), self.settings.parse_nice),
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
                except Exception as exc:
                    if (reason := unavailable_reason(exc)) is not None:
                        log.warning(WAITS_FOR_DATABASE, error=reason)
                    else:
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
                if not task.cancelled() and (failure := task.exception()) is not None:
                    _log_failure(failure)

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
            if self._stopping.is_set():
                log.info("upload interrupted by shutdown", upload_id=str(claim.upload_id))
            else:
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
                            UPLOADS.c.phase,
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
                        phase=TIDYING if row.phase == TIDYING else STAGING,
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
            tidying=row.phase == TIDYING,
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
        # An upload's staging rows and spooled body go before it is marked finished: a caller
        # that sees it completed (or failed) sees nothing of it left behind.
        clean_up = partial(asyncio.to_thread, self._clean_up, claim.upload_id, path)
        # ... and the partner's arrays are built: the first question after it opens files.
        before_finish = partial(self._finish_apply, claim, clean_up)
        if claim.tidying:
            await self.applier.resume_tidying(claim, before_finish=before_finish)
            self.arrays_seconds.pop(claim.upload_id, None)
            return
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
            await self._apply(claim, report, before_finish=before_finish)
            release_free_memory()  # the slices' rows: glibc would keep them in its arenas
            log.info(
                "upload applied",
                upload_id=str(claim.upload_id),
                rows=report.rows_read,
                refused=report.refused,
                stage_seconds=round(staged - started, 3),
                apply_seconds=round(time.perf_counter() - staged, 3),
                arrays_seconds=self.arrays_seconds.pop(claim.upload_id, None),
            )
        except (UnreadableBody, UploadFailed) as exc:
            reason = str(exc)
            if isinstance(exc, UnreadableBody):
                reason = f"The body cannot be read: {reason}. Nothing was applied."
            await clean_up()
            with writing():
                async with self.sessions() as session:
                    await self._finish_failed(
                        session, claim.upload_id, claim.partner_id, claim.attempt, reason
                    )
                    await session.commit()

    async def _finish_apply(self, claim: Claim, clean_up: Callable[[], Awaitable[object]]) -> None:
        """After the flip and the tidying, before the upload is marked completed: its staging
        rows and body go, and the partner's arrays at the current version are opened (built
        ahead of the flip and published with it) or, when a change moved the counter since,
        built and saved where every hub process opens them. A failed build fails nothing:
        the first question builds them instead."""
        # The apply's own seconds on the arrays (built before or right after the flip).
        ahead = self.applier.arrays_seconds.pop(claim.upload_id, 0.0)
        await clean_up()
        if self.arrays is None:
            return
        started = time.perf_counter()
        try:
            await self.arrays.prepare(claim.partner_id)
        except Exception:
            log.warning(
                "could not build the partner's arrays; the first question will",
                upload_id=str(claim.upload_id),
                exc_info=True,
            )
            return
        self.arrays_seconds[claim.upload_id] = round(ahead + time.perf_counter() - started, 3)

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
        index_staged(self.sync_engine, job.stage_key)
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

    async def _apply(
        self,
        claim: Claim,
        report: StageReport,
        before_finish: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        if self.crypto.keys.match_version != report.match_version:
            # A match key was added while this upload was staged: stage it again under the
            # new version (the next claim does), rather than apply keys of the old one.
            raise LeaseLost(str(claim.upload_id))
        await self.applier.run(claim, report, before_finish=before_finish)

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
        forget_apply_changes(self.sync_engine)

    def _clean_up(self, upload_id: UUID, path: Path) -> None:
        """Staging rows and the spooled body of a finished upload (completed or failed)."""
        clear_staging_in_batches(self.sync_engine, upload_id)
        path.unlink(missing_ok=True)
