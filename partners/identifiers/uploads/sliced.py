"""Applying a staged upload in slices: the processor's apply, step by step.

The steps (see ``uploads.generation``): settle what an earlier attempt left, open the next
generation, write the staged rows slice by slice (``apply.SliceApplier``), retire what a
``replace`` removes, build the matching arrays of the new generation (published with the flip
when nothing moved the partner's counter meanwhile), flip, tidy, finish. Each step is one short
write transaction (:meth:`SlicedApply._step`); on SQLite a pause follows it so that waiting
writers get the lock. Every step checks the claim (``attempts``): a process that lost its lease
stops at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import os
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any, Protocol, TypeVar
from uuid import UUID

import structlog
from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker

from hub.core import audit
from hub.core.audit import Actor
from hub.core.db import SQLITE_WRITER_GAP_SECONDS, reading, writing
from partners.identifiers.crypto import IdentifierCrypto
from partners.identifiers.records import STATE
from partners.identifiers.uploads import generation
from partners.identifiers.uploads.apply import (
    SQLITE_APPLY_CACHE,
    SQLITE_DEFAULT_CACHE,
    ApplyResult,
    SliceApplier,
    apply_settings,
    erased_notice,
)
from partners.identifiers.uploads.models import APPLYING, COMPLETED, REPLACE, TIDYING
from partners.identifiers.uploads.staging import UPLOADS, LeaseLost, StageReport, stage_key

# SQLite: the apply holds the write lock in steps for at most this long (added up) before
# it pauses for SQLITE_WRITER_GAP_SECONDS, so that a waiting writer gets the lock.
SQLITE_HOLD_SECONDS = 0.4
# Uploads of at least this many rows refresh the table's planner statistics.
ANALYZE_AFTER_ROWS = 50_000
# The most people changed between the arrays' build and the flip that the flip reads again
# to patch the arrays with (in its transaction, which holds the partner's writers); beyond,
# the arrays are built again after the flip.
MAX_FOLLOWED_PEOPLE = 10_000
log = structlog.get_logger("hub.uploads")
T = TypeVar("T")
# The connection an apply in progress (one per lane: a task of its own) runs its steps on.
_CONNECTION: contextvars.ContextVar[AsyncConnection | None] = contextvars.ContextVar(
    "apply_connection", default=None
)


class ArraysAhead(Protocol):
    """A partner's arrays built before an upload's flip for the version it will make
    (``matching.loader.ArraysAhead``)."""

    @property
    def version(self) -> int: ...
    @property
    def key_version(self) -> int: ...
    def announce(self, version: int) -> None: ...
    def withdraw(self, version: int) -> None: ...
    async def keep_announced(self, version: int) -> None: ...
    async def follow(
        self, session: AsyncSession, version: int, people: Iterable[str]
    ) -> ArraysAhead: ...
    def publish(self) -> bool: ...
    def discard(self) -> None: ...


class BuildsAhead(Protocol):
    """What builds them (``matching.loader.ArrayCache``)."""

    async def build_ahead(self, partner_id: UUID, generation: int) -> ArraysAhead: ...

    async def prepare(self, partner_id: UUID, *, patient: bool = True) -> object:
        """Build and save the partner's arrays at its current version, unless they exist."""


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
    # Its flip committed before its process stopped: only the tidying is left.
    tidying: bool = False


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


def apply_pause_for_tests(after: str = "SLICE") -> float:
    """TEST ONLY: seconds the apply waits between two slices, its pending generation partly
    written and invisible (``HUB_UPLOADS_TEST_APPLY_PAUSE_SECONDS``), or after its flip, before
    it tidies (``HUB_UPLOADS_TEST_FLIP_PAUSE_SECONDS``): lets a test write to the partner, or
    stop a hub, in either phase."""
    variable = "APPLY" if after == "SLICE" else after
    return float(os.environ.get(f"HUB_UPLOADS_TEST_{variable}_PAUSE_SECONDS", "0"))


def _wait_for_gate(gate: str, stopping: threading.Event) -> None:
    """TEST ONLY: wait until the file ``gate`` is gone (or the process stops)."""
    while os.path.exists(gate) and not stopping.wait(0.05):
        pass


class SlicedApply:
    """The apply of one process's uploads (one per lane at a time)."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        dialect: str,
        crypto: IdentifierCrypto,
        slice_rows: int,
        stopping: threading.Event,
        arrays: BuildsAhead | None = None,
        first_load_connections: int = 1,
    ) -> None:
        self.sessions = sessions
        # A first load's slices are written on this many connections at once (PostgreSQL;
        # SQLite has one writer at a time).
        self.first_load_connections = (
            max(first_load_connections, 1) if dialect == "postgresql" else 1
        )
        self.arrays = arrays
        # Seconds spent building arrays ahead of each upload's flip (its "applied" log line).
        self.arrays_seconds: dict[UUID, float] = {}
        self.dialect = dialect
        self.crypto = crypto
        self.slice_rows = max(slice_rows, 1)
        self._stopping = stopping
        # Driver connections of the steps in progress, interrupted on shutdown.
        self._applying: set[Any] = set()
        # The longest write transaction so far (seconds), and the longest of each kind of
        # step: what a benchmark reports.
        self.longest_step = 0.0
        self.step_seconds: dict[str, float] = {}
        # Seconds of each kind of step added up (what ``bench.upload_phases`` reports).
        self.step_totals: dict[str, float] = {}
        # SQLite: seconds of write steps since the last pause (see _step).
        self._held = 0.0
        # TEST ONLY: awaited between two slices, and between two slices of the tidying (a
        # test writes meanwhile).
        self.between_slices: Callable[[], Awaitable[None]] | None = None
        self.between_tidy_slices: Callable[[], Awaitable[None]] | None = None

    def interrupt(self) -> None:
        """On shutdown: end the statements of the steps in progress (they roll back)."""
        for connection in list(self._applying):
            interrupt_statement(connection)

    async def run(
        self,
        claim: Claim,
        report: StageReport,
        before_finish: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        """Apply the staged upload: slices, removal (``replace``), flip, tidying, done."""
        async with self._connection():
            await self._run(claim, report, before_finish)

    async def _run(
        self,
        claim: Claim,
        report: StageReport,
        before_finish: Callable[[], Awaitable[object]] | None,
    ) -> None:
        await self._enter_phase(claim, APPLYING)
        partner_id = claim.partner_id
        current = await self._settle(claim)

        async def open_generation(session: AsyncSession) -> int:
            return await generation.open_generation(session, partner_id, current)

        pending = await self._step(claim, open_generation)
        if self.dialect == "postgresql":
            await self._analyze("identifier_staging")  # freshly copied: give the planner sizes

        # Checked once the pending generation is open: from then on no other writer adds a
        # record (they are refused until the flip), so a partner without records stays so.
        async def holds_records(session: AsyncSession) -> bool:
            return await generation.holds_records(session, partner_id)

        first_load = not await self._step(claim, holds_records, write=False)
        applier = partial(
            SliceApplier,
            stage_key=stage_key(claim.upload_id, claim.attempt),
            partner_id=partner_id,
            current=current,
            pending=pending,
            match_version=report.match_version,
            sent_at=claim.sent_at,
            with_previous_keys=report.with_previous_keys,
            first_load=first_load,
        )
        connections = self.first_load_connections if first_load else 1
        result = await self._write_slices(claim, applier, connections)
        if claim.mode == REPLACE:
            removed, notice = await self._remove(claim, applier)
            result.removed = removed
            result.notice = " ".join(filter(None, [notice, result.notice]))
        if result.skipped:
            result.notice = " ".join(filter(None, [result.notice, erased_notice(result.skipped)]))
        if self.arrays is not None:
            # What came since the upload was sent, applied before the arrays are built from
            # the new rows: at the flip only what comes during the build changes them.
            async def reconcile(session: AsyncSession) -> int:
                return await generation.reconcile(session, partner_id, pending, claim.sent_at)

            await self._step(claim, reconcile)
        if self.dialect == "postgresql" and report.accepted >= ANALYZE_AFTER_ROWS:
            # The tidying reads the pending changes (a first load: its records) in person
            # order: with the table's size unknown (never analysed, or analysed when the
            # partner held nothing), PostgreSQL sorted all of it again for every slice of the
            # tidying (350 s for a 10M first load, 60 % of its apply).
            await self._analyze("identifier_records" if first_load else "identifier_pending_events")
        ahead = await self._build_ahead(claim, pending)
        # TEST ONLY: while the file HUB_UPLOADS_TEST_FLIP_GATE names exists, wait (the arrays
        # built ahead, the flip not made).
        gate = os.environ.get("HUB_UPLOADS_TEST_FLIP_GATE")
        if gate:
            await asyncio.to_thread(_wait_for_gate, gate, self._stopping)
        announced: list[int] = []
        try:

            async def flip(session: AsyncSession) -> ArraysAhead | None:
                return await self._flip(
                    session, claim, report, pending, result, ahead, announced, first_load
                )

            publishing = await self._step(claim, flip)
        except BaseException:
            if ahead is not None:
                await asyncio.to_thread(ahead.discard)
                for version in announced:
                    await asyncio.to_thread(ahead.withdraw, version)
            raise
        if ahead is not None:
            published = publishing is not None and await self._publish(claim, publishing)
            if not published:
                await asyncio.to_thread(ahead.discard)
                await self._build_after_flip(claim, ahead, announced[-1])
        pause = apply_pause_for_tests(after="FLIP")
        if pause:
            await asyncio.sleep(pause)
        await self._tidy(claim, pending)
        if before_finish is not None:
            await before_finish()
        await self._finish(claim)
        if not first_load and report.accepted >= ANALYZE_AFTER_ROWS:  # a first load's was
            await self._analyze("identifier_records")  # analysed before its tidying

    async def _settle(self, claim: Claim) -> int:
        """The partner's current generation, after tidying what an earlier apply left (its
        tidying interrupted) and discarding what an attempt that never flipped wrote."""
        partner_id = claim.partner_id

        async def settle(session: AsyncSession) -> tuple[int, int]:
            current, pending = await generation.lock_state(session, partner_id)
            done = await generation.tidy_slice(session, partner_id, current)
            if pending is not None:  # an attempt that never flipped: undo what it wrote
                done += await generation.discard_slice(session, partner_id, current)
            if not done and pending is not None:
                await session.execute(
                    update(STATE).where(STATE.c.partner_id == partner_id).values(pending=None)
                )
            return current, done

        while True:
            current, done = await self._step(claim, settle)
            if not done:
                return current

    async def _write_slices(
        self, claim: Claim, applier: Callable[[AsyncSession], SliceApplier], connections: int = 1
    ) -> ApplyResult:
        """Every slice of the upload, in id order; with ``connections`` > 1, that many slices
        at a time, each on a connection of its own (a first load on PostgreSQL: its slices
        touch no row another slice does, and one backend writing them used one core of the
        machine's two)."""
        result = ApplyResult(created=0, updated=0, removed=0, notice=None)
        match_version = self.crypto.keys.match_version

        async def ids(session: AsyncSession) -> tuple[int, int] | None:
            return await applier(session).id_range()

        found = await self._step(claim, ids)
        if found is None:
            return result
        low, high = found
        step = self.slice_rows
        bounds = iter([(after, min(after + step, high)) for after in range(low - 1, high, step)])

        async def write_slices() -> None:
            for after, upto in bounds:  # shared by the connections: each slice is taken once

                async def write(
                    session: AsyncSession, after: int = after, upto: int = upto
                ) -> None:
                    if self.crypto.keys.match_version != match_version:
                        # A match key was added meanwhile: this generation (invisible) is
                        # discarded and the upload staged again under the new version.
                        raise LeaseLost(str(claim.upload_id))
                    accepted, matched, skipped = await applier(session).upsert_slice(after, upto)
                    result.created += accepted - matched
                    result.updated += matched
                    result.skipped += skipped
                    await self._progress(session, claim, accepted + skipped)

                await self._step(claim, write)
                await self._between_slices()

        async def on(connection: AsyncConnection | None) -> None:
            _CONNECTION.set(connection)  # this task's own context: the others keep theirs
            await write_slices()

        if connections <= 1:
            await write_slices()
            return result
        # The other connections are open before any slice is taken, so that every one of
        # them writes from the first slices on. One failing (a lost lease, a shutdown)
        # cancels the others; what they wrote is the pending generation's, discarded by the
        # next attempt as after a crash. The caller sees that failure itself (a LeaseLost
        # stays one), not a group of them.
        engine = self.sessions.kw["bind"]
        async with contextlib.AsyncExitStack() as opened:
            others = [
                await opened.enter_async_context(engine.connect()) for _ in range(connections - 1)
            ]
            try:
                async with asyncio.TaskGroup() as lanes:
                    for connection in [_CONNECTION.get(), *others]:
                        lanes.create_task(on(connection))
            except BaseExceptionGroup as failed:
                errors: list[BaseException] = list(failed.exceptions)
                lost = [e for e in errors if isinstance(e, LeaseLost)]
                raise (lost or errors)[0] from None
        return result

    async def _remove(
        self, claim: Claim, applier: Callable[[AsyncSession], SliceApplier]
    ) -> tuple[int, str | None]:
        """``replace``: retire the current records the upload no longer holds. PostgreSQL in
        one statement (its other writers do not wait for it), SQLite by slices of records."""
        removed = 0
        if self.dialect == "postgresql":

            async def remove_all(session: AsyncSession) -> tuple[int, str | None]:
                async with apply_settings(session):
                    step = applier(session)
                    removal, notice = await step.removal()
                    if removal is None:
                        return 0, notice
                    return await step.remove(removal, at_once=True), notice

            return await self._step(claim, remove_all)
        after: tuple[int, bytes] | None = None
        # Half a slice of records: a removal slice costs about twice an upsert slice (the
        # anti-join against every staged row), and each is one hold of SQLite's lock.
        rows = max(self.slice_rows // 2, 1)

        async def prepare(session: AsyncSession) -> Any:
            step = applier(session)
            removal, notice = await step.removal(sliced=True)
            return removal, notice, step.kept_people

        # What to remove is read once, without the write lock: it reads every staged row of
        # the upload (three passes over 1M rows held the lock 1.8 s in the first slice).
        removal, notice, kept = await self._step(claim, prepare, write=False)
        if removal is None:
            return 0, notice
        while True:

            async def remove(session: AsyncSession, after: Any = after) -> Any:
                step = applier(session)
                upto = await step.next_record_bound(after, rows)
                return upto, await step.remove(removal, after, upto, kept=kept)

            upto, count = await self._step(claim, remove)
            removed += count
            if upto is None:
                return removed, notice
            after = upto
            await self._between_slices()

    async def _build_ahead(self, claim: Claim, pending: int) -> ArraysAhead | None:
        """The partner's arrays as the flip will leave its records, built before it (see
        ``matching.loader.ArraysAhead``). A failed build fails nothing: the apply builds
        them after the flip instead."""
        if self.arrays is None:
            return None
        if self._stopping.is_set():
            raise LeaseLost(str(claim.upload_id))
        started = time.perf_counter()
        try:
            ahead = await self.arrays.build_ahead(claim.partner_id, pending)
        except Exception:
            log.warning(
                "could not build the partner's arrays ahead of the flip; built after it",
                upload_id=str(claim.upload_id),
                exc_info=True,
            )
            return None
        self.arrays_seconds[claim.upload_id] = time.perf_counter() - started
        return ahead

    async def _publish(self, claim: Claim, ahead: ArraysAhead) -> bool:
        """Publish the arrays built ahead as the flip's version (patched, when changes came
        since their build), announced meanwhile. False when they cannot be (the patch
        declined, or failed: the flip has committed, and the apply builds the version
        instead of failing the upload)."""
        announcing = asyncio.create_task(ahead.keep_announced(ahead.version))
        try:
            published = await asyncio.to_thread(ahead.publish)
        except Exception:
            log.warning(
                "could not publish the arrays built ahead; built after the flip",
                upload_id=str(claim.upload_id),
                exc_info=True,
            )
            published = False
        finally:
            announcing.cancel()
        if published:
            await asyncio.to_thread(ahead.withdraw, ahead.version)
        return published

    async def _build_after_flip(self, claim: Claim, ahead: ArraysAhead, version: int) -> None:
        """The arrays built ahead were not the flip's version: it is built now, announced
        meanwhile (one build, here, rather than one by each process's next question, each
        change's patch given up for want of a base)."""
        assert self.arrays is not None
        announcing = asyncio.create_task(ahead.keep_announced(version))
        started = time.perf_counter()
        try:
            await self.arrays.prepare(claim.partner_id, patient=False)
        except Exception:
            log.warning(
                "could not build the partner's arrays after the flip; the first question will",
                upload_id=str(claim.upload_id),
                exc_info=True,
            )
        finally:
            announcing.cancel()
            await asyncio.to_thread(ahead.withdraw, version)
        seconds = time.perf_counter() - started
        self.arrays_seconds[claim.upload_id] = self.arrays_seconds.get(claim.upload_id, 0) + seconds

    async def _flip(
        self,
        session: AsyncSession,
        claim: Claim,
        report: StageReport,
        pending: int,
        result: ApplyResult,
        ahead: ArraysAhead | None = None,
        announced: list[int] | None = None,
        first_load: bool = False,
    ) -> ArraysAhead | None:
        """The one small transaction that makes the upload's generation current, with the
        upload's figures and its audit entry. Returns the arrays built ahead to publish as
        the version it makes once it commits: as built when nothing changed the records
        since their build; followed (:meth:`ArraysAhead.follow`: to be patched with the
        people of the changes committed since the build, and of the rows the flip itself
        changed) when something did; None when they cannot be, because a change since the
        build left no record of its people or a match key was added meanwhile. Either way the
        version it makes is announced here (added to ``announced``): its files are on their
        way, published or built right after the commit, and questions and patches wait for
        them."""
        await generation.lock_state(session, claim.partner_id)
        flipped: set[str] = set()
        await generation.flip(
            session,
            claim.partner_id,
            pending,
            claim.sent_at,
            publish_records=first_load,
            people=flipped,
        )
        publishing: ArraysAhead | None = None
        if ahead is not None:
            version = int(
                await session.scalar(
                    select(STATE.c.version).where(STATE.c.partner_id == claim.partner_id)
                )
                or 0
            )
            reason = None
            if self.crypto.keys.match_version != ahead.key_version:
                reason = "a match key was added since the build"
            else:
                changed = await generation.changed_since(
                    session, claim.partner_id, ahead.version, version
                )
                if changed is None:
                    reason = "a change since the build left no record of whom it touched"
                elif len(changed | flipped) > MAX_FOLLOWED_PEOPLE:
                    reason = "too many people changed since the build to read them in the flip"
                else:  # no one changed: the arrays as built, under the flip's version
                    publishing = await ahead.follow(session, version, changed | flipped)
            await asyncio.to_thread(ahead.announce, version)
            if announced is not None:
                announced.append(version)
            if reason is not None:  # built again after the flip: an operator sees why
                log.info(
                    "arrays built ahead dropped",
                    upload_id=str(claim.upload_id),
                    version=version,
                    reason=reason,
                )
        await generation.forget_changes(session, claim.partner_id)
        actor = Actor(name=f"client:{claim.client_id}", partner_id=str(claim.partner_id))
        figures: dict[str, Any] = {
            "rows_read": report.rows_read,
            "accepted": report.accepted,
            "refused": report.refused,
            "created": result.created,
            "updated": result.updated,
            "removed": result.removed,
            "skipped": result.skipped,
        }
        await audit.append(
            session,
            actor.event(
                "identifiers.upload_applied",
                "identifier_upload",
                str(claim.upload_id),
                mode=claim.mode,
                **figures,
            ),
        )
        await self._update_claimed(
            session, claim, phase=TIDYING, notice=result.notice or None, **figures
        )
        return publishing

    async def _tidy(self, claim: Claim, generation_now: int) -> None:
        """After the flip: retired rows deleted and consent changes published, by slices."""
        partner_id = claim.partner_id
        progress = generation.Tidying()

        async def tidy(session: AsyncSession) -> int:
            return await generation.tidy_slice(session, partner_id, generation_now, progress)

        done = 1
        while done:
            done = await self._step(claim, tidy)
            if done and self.between_tidy_slices is not None:
                await self.between_tidy_slices()

    async def _finish(self, claim: Claim) -> None:
        async def finish(session: AsyncSession) -> None:
            await self._update_claimed(
                session,
                claim,
                status=COMPLETED,
                phase=None,
                lease_until=None,
                finished_at=datetime.now(UTC),
            )

        await self._step(claim, finish)

    async def resume_tidying(
        self, claim: Claim, before_finish: Callable[[], Awaitable[object]] | None = None
    ) -> None:
        """An upload whose flip committed before its process stopped: only its tidying is
        left (its figures are stored), never a second apply."""
        async with self.sessions() as session:
            current = await session.scalar(
                select(STATE.c.generation).where(STATE.c.partner_id == claim.partner_id)
            )
        await self._tidy(claim, int(current or 0))
        if before_finish is not None:
            await before_finish()
        await self._finish(claim)

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[None]:
        """One connection for all the steps of an apply (each its own transaction on it). On
        SQLite it gets a page cache that holds the indexes being written (its default, 2 MB,
        made a slice into a 1M-record table take 2.5 s instead of a fraction of one); the
        cache is the connection's own, and put back before it returns to the pool."""
        engine = self.sessions.kw["bind"]
        async with engine.connect() as connection:
            if self.dialect == "sqlite":
                await connection.exec_driver_sql(f"PRAGMA cache_size = {SQLITE_APPLY_CACHE}")
                await connection.commit()
            token = _CONNECTION.set(connection)
            try:
                yield
            finally:
                _CONNECTION.reset(token)
                if self.dialect == "sqlite":
                    await connection.rollback()
                    await connection.exec_driver_sql(f"PRAGMA cache_size = {SQLITE_DEFAULT_CACHE}")
                    await connection.commit()

    def _session(self) -> AsyncSession:
        connection = _CONNECTION.get()
        if connection is None:  # outside run(): a pooled connection per step
            return self.sessions()
        return AsyncSession(bind=connection, expire_on_commit=False)

    async def _step(
        self, claim: Claim, work: Callable[[AsyncSession], Awaitable[T]], *, write: bool = True
    ) -> T:
        """One short write transaction of an apply (a read one with ``write=False``: on
        SQLite it does not take the write lock): ``work``, then commit. Stops (the upload
        resumes later) when the process is shutting down; interrupted on shutdown."""
        if self._stopping.is_set():
            raise LeaseLost(str(claim.upload_id))
        started = time.perf_counter()
        with writing() if write else reading():
            async with self._session() as session:
                raw = await (await session.connection()).get_raw_connection()
                self._applying.add(raw.driver_connection)
                try:
                    value = await work(session)
                    await session.commit()
                finally:
                    self._applying.discard(raw.driver_connection)
        took = time.perf_counter() - started
        name = getattr(work, "__name__", "step")
        self.step_seconds[name] = max(self.step_seconds.get(name, 0.0), took)
        self.step_totals[name] = self.step_totals.get(name, 0.0) + took
        if not write:
            return value
        self.longest_step = max(self.longest_step, took)
        if self.dialect == "sqlite":
            # Leave the write lock free a moment: a writer waiting on SQLite's busy handler
            # polls every 100 ms at most, and would never see it free between two steps.
            # Once per SQLITE_HOLD_SECONDS of steps, not after each: a waiting writer waits
            # about as long (at most that plus one step), and a 1M first load no longer
            # spends 22 of its 41 s in 180 pauses after steps of 20-200 ms.
            self._held += took
            if self._held >= SQLITE_HOLD_SECONDS:
                self._held = 0.0
                await asyncio.sleep(SQLITE_WRITER_GAP_SECONDS)
        return value

    async def _progress(self, session: AsyncSession, claim: Claim, rows: int) -> None:
        """Count a slice's rows on the upload (the status shows it), checking the claim."""
        await self._update_claimed(session, claim, applied=UPLOADS.c.applied + rows)

    async def _update_claimed(self, session: AsyncSession, claim: Claim, **values: Any) -> None:
        done = await session.execute(
            update(UPLOADS)
            .where(UPLOADS.c.id == claim.upload_id, UPLOADS.c.attempts == claim.attempt)
            .values(**values)
        )
        if getattr(done, "rowcount", 0) != 1:
            await session.rollback()
            raise LeaseLost(str(claim.upload_id))

    async def _between_slices(self) -> None:
        """Between two slices: other writers take SQLite's lock; tests may pause here."""
        pause = apply_pause_for_tests()
        if pause:
            await asyncio.sleep(pause)
        # TEST ONLY: while the file HUB_UPLOADS_TEST_APPLY_GATE names exists, wait.
        gate = os.environ.get("HUB_UPLOADS_TEST_APPLY_GATE")
        if gate:
            await asyncio.to_thread(_wait_for_gate, gate, self._stopping)
        if self.between_slices is not None:
            await self.between_slices()
        await asyncio.sleep(0)

    async def _enter_phase(self, claim: Claim, phase: str) -> None:
        with writing():
            async with self.sessions() as session:
                await self._update_claimed(session, claim, phase=phase, applied=0)
                await session.commit()

    async def _analyze(self, table: str) -> None:
        """Fresh planner statistics on PostgreSQL: without them it takes a freshly loaded
        table for a tiny one and filters key lookups (the rewards sync's, for one) instead of
        using the primary key (measured: 9 ms instead of 100 ms to 2 s)."""
        try:
            async with self.sessions() as session:
                if session.get_bind().dialect.name == "postgresql":
                    await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
                    await session.execute(text(f"ANALYZE {table}"))
        except Exception:  # the upload is applied either way; autovacuum analyzes later
            log.warning("could not refresh planner statistics", table=table, exc_info=True)
