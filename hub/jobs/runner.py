"""Running one job once: take its lease, open a run, work with a heartbeat, record the outcome.

Scheduled runs and admins' run requests both come through :class:`JobRunner`. A job whose
lease another run holds is not run (a request waits until that run ends). On shutdown a run
gets a grace period to finish, then is cancelled and recorded ``abandoned`` with its cursor,
and its lease released, so the next worker resumes it at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Coroutine
from datetime import UTC, datetime
from typing import Any

import structlog
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from hub.core import audit
from hub.core.db import writing
from hub.core.keyring import Keyring
from hub.jobs.context import JobContext, JobFailed, JobSkipped
from hub.jobs.lease import (
    ABANDONED_REASON,
    Lease,
    LeaseLost,
    abandon_held,
    finish_run,
    renew,
    start_run,
)
from hub.jobs.models import (
    ABANDONED,
    FAILED,
    REQUEST,
    SCHEDULE,
    SKIPPED,
    SUCCEEDED,
    JobRunRequest,
)
from hub.jobs.registry import JobSpec
from hub.settings import Settings
from partners.identifiers.crypto import IdentifierCrypto

log = structlog.get_logger("hub.jobs")


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class JobRunner:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        settings: Settings,
        keyring: Keyring,
        crypto: IdentifierCrypto,
        specs: dict[str, JobSpec],
    ) -> None:
        self.sessions = sessions
        self.settings = settings
        self.keyring = keyring
        self.crypto = crypto
        self.specs = specs
        self.worker = worker_name()
        # Runs of this process by job (a request does not try a job running here), and every
        # task doing a job's work, from taking the lease on (waited for on shutdown).
        self._running: dict[str, asyncio.Task[object]] = {}
        self._tasks: set[asyncio.Task[object]] = set()
        self._stopping = False  # set by stop(): runs fired afterwards start nothing

    @property
    def lease_seconds(self) -> float:
        return self.settings.jobs.lease_seconds

    async def run(self, name: str, trigger: str = SCHEDULE) -> int | None:
        """Run job ``name`` once, unless another run holds its lease. Returns the run's id."""
        current = asyncio.current_task()
        if current is not None:
            self._tasks.add(current)
        try:
            return await self._run(name, trigger)
        except asyncio.CancelledError:
            if not self._stopping:
                raise
            # Shutdown ended the run past its grace: it is recorded abandoned and the next
            # run resumes from its cursor. Not an error (APScheduler would log it as one).
            log.info("job run interrupted by shutdown", job=name)
            return None
        finally:
            self._tasks.discard(current)

    async def _run(self, name: str, trigger: str) -> int | None:
        if self._stopping:
            return None  # fired just as the scheduler stopped: start nothing new
        with writing():
            async with self.sessions() as session:
                lease = await start_run(session, name, self.worker, trigger, self.lease_seconds)
                await session.commit()
        if lease is None:
            return None
        await self._execute(self.specs[name], lease)
        return lease.run_id

    async def run_requested(self) -> list[int]:
        """Start a run for every job with waiting run requests (not already running here);
        the runs go on in the background. Returns the ids of the runs started."""
        async with self.sessions() as session:
            names = (
                await session.scalars(
                    select(JobRunRequest.name).where(JobRunRequest.picked_at.is_(None)).distinct()
                )
            ).all()
        started = []
        for name in names:
            if self._stopping:
                break
            if name not in self.specs or name in self._running:
                continue
            lease = await self._claim_requests(name)
            if lease is not None:
                self._background(self._execute(self.specs[name], lease), name)
                started.append(lease.run_id)
        return started

    async def _claim_requests(self, name: str) -> Lease | None:
        with writing():
            async with self.sessions() as session:
                waiting = (
                    await session.scalars(
                        select(JobRunRequest.id)
                        .where(JobRunRequest.name == name, JobRunRequest.picked_at.is_(None))
                        .with_for_update(skip_locked=True)
                    )
                ).all()
                if not waiting:
                    return None  # another worker picked them
                lease = await start_run(session, name, self.worker, REQUEST, self.lease_seconds)
                if lease is None:
                    await session.rollback()  # the job is running: the requests wait for it
                    return None
                await session.execute(
                    update(JobRunRequest)
                    .where(JobRunRequest.id.in_(waiting))
                    .values(picked_at=datetime.now(UTC), run_id=lease.run_id)
                )
                await session.commit()
        return lease

    def _background(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task: asyncio.Task[object] = asyncio.create_task(coro)
        self._running[name] = task
        self._tasks.add(task)

        def forget(done: asyncio.Task[object]) -> None:
            self._tasks.discard(done)
            if self._running.get(name) is done:
                del self._running[name]

        task.add_done_callback(forget)

    async def _execute(self, spec: JobSpec, lease: Lease) -> None:
        ctx = JobContext(
            name=spec.name,
            run_id=lease.run_id,
            settings=self.settings,
            session_maker=self.sessions,
            keyring=self.keyring,
            identifier_crypto=self.crypto,
            cursor=dict(lease.cursor),
            lease=lease,
        )
        current = asyncio.current_task()
        if current is not None:
            self._running.setdefault(spec.name, current)
        log.info("job run started", job=spec.name, run_id=lease.run_id)
        job = asyncio.ensure_future(spec.func(ctx))
        lost, done = asyncio.Event(), asyncio.Event()
        heartbeat = asyncio.create_task(self._heartbeat(lease, job, lost, done))
        try:
            try:
                counts = await job
            finally:
                done.set()  # no renewal after this point: the outcome releases the lease
                await asyncio.shield(heartbeat)
        except asyncio.CancelledError:
            if not lost.is_set() or (current is not None and current.cancelling()):
                job.cancel()
                await self._finish(lease, ABANDONED, ctx.counts, ABANDONED_REASON)
                raise
            log.warning("job lease lost: another worker took it over", job=spec.name)
        except LeaseLost:
            log.warning("job lease lost: another worker took it over", job=spec.name)
        except JobSkipped as exc:
            log.warning("job run skipped", job=spec.name, run_id=lease.run_id, reason=str(exc))
            await self._finish(lease, SKIPPED, ctx.counts, str(exc))
        except Exception as exc:
            log.error("job run failed", job=spec.name, run_id=lease.run_id, exc_info=exc)
            await self._finish(lease, FAILED, ctx.counts, _error_text(exc, lease.run_id))
        else:
            await self._finish(lease, SUCCEEDED, {str(k): int(v) for k, v in counts.items()})
            log.info("job run succeeded", job=spec.name, run_id=lease.run_id, counts=counts)
        finally:
            if self._running.get(spec.name) is current:
                self._running.pop(spec.name, None)

    async def _heartbeat(
        self,
        lease: Lease,
        job: asyncio.Future[dict[str, int]],
        lost: asyncio.Event,
        done: asyncio.Event,
    ) -> None:
        """Renew the lease until ``done``; cancel the job if the lease was taken over. (It is
        stopped by ``done``, never cancelled: a renewal cancelled mid-statement would leave
        its connection to be closed behind our back.)"""
        every = max(self.lease_seconds / 3, 0.05)
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), every)
            if done.is_set():
                return
            try:
                with writing():
                    async with self.sessions() as session:
                        await renew(session, lease, self.lease_seconds)
                        await session.commit()
            except LeaseLost:
                lost.set()
                job.cancel()
                return
            except Exception:
                log.warning("job heartbeat failed", job=lease.name, exc_info=True)

    async def _finish(
        self, lease: Lease, status: str, counts: dict[str, int] | None, error: str | None = None
    ) -> None:
        # A run that changed or disclosed data, or failed, is an audit entry too, written
        # with its outcome (no entry for the many runs that found nothing to do).
        event = audit.job_run_event(
            lease.name, lease.run_id, status, counts, failed=status == FAILED, error=error
        )
        with writing():
            async with self.sessions() as session:
                recorded = await finish_run(session, lease, status, counts=counts, error=error)
                if event is not None:
                    await audit.append(session, event)
                await session.commit()
        if not recorded:
            log.warning("job run was taken over before it finished", job=lease.name)

    async def stop(self, grace_seconds: float) -> None:
        """Let running jobs finish within ``grace_seconds``, then abandon them."""
        self._stopping = True
        tasks = list(self._tasks)
        pending: set[asyncio.Task[object]] = set()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace_seconds)
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        # A run whose start committed while it was being cancelled has no one to finish it.
        with writing():
            async with self.sessions() as session:
                await abandon_held(session, self.worker)
                await session.commit()


def _error_text(exc: Exception, run_id: int) -> str:
    if isinstance(exc, JobFailed):
        return str(exc)
    # An exception's text may quote data (a row, a payload): only its type is recorded.
    return f"{type(exc).__name__}: the job failed; see the worker's log for run {run_id}."
