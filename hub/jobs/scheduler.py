"""The scheduler: APScheduler fires each job on its schedule, a poller picks up run requests.

APScheduler only decides *when* this process tries a job (``coalesce`` and ``max_instances=1``
within the process, a generous misfire grace after a pause); the database lease decides
*whether* it runs, across every process (see ``hub.jobs.lease``). ``hub worker`` runs this
until SIGTERM or SIGINT; ``hub serve`` runs it in-process unless told otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from datetime import UTC
from typing import Any

import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from hub import wiring
from hub.core.db import create_hub_async_engine
from hub.core.keyring import Keyring
from hub.core.stalls import watching
from hub.jobs.models import SCHEDULE
from hub.jobs.registry import JobSpec, job_specs
from hub.jobs.runner import JobRunner
from hub.settings import Settings
from partners.identifiers.crypto import IdentifierCrypto

log = structlog.get_logger("hub.jobs")
# On shutdown a run in progress gets this long to finish before it is abandoned (and resumed
# from its cursor by the next worker); below the usual 10 s before a supervisor's SIGKILL.
SHUTDOWN_GRACE_SECONDS = 5.0


def trigger_of(spec: JobSpec) -> Any:
    if spec.interval_seconds is not None:
        return IntervalTrigger(seconds=spec.interval_seconds, timezone=UTC)
    assert spec.cron is not None
    return CronTrigger.from_crontab(spec.cron, timezone=UTC)


class JobScheduler:
    def __init__(self, runner: JobRunner) -> None:
        self.runner = runner
        jobs = runner.settings.jobs
        self.poll_seconds = jobs.poll_seconds
        self._scheduler = AsyncIOScheduler(
            timezone=UTC,
            job_defaults={
                "coalesce": True,
                "max_instances": 1,
                "misfire_grace_time": jobs.misfire_grace_seconds,
            },
        )
        self._poller: asyncio.Task[None] | None = None

    @classmethod
    def create(
        cls,
        sessions: async_sessionmaker[AsyncSession],
        settings: Settings,
        keyring: Keyring,
        crypto: IdentifierCrypto,
    ) -> JobScheduler:
        return cls(JobRunner(sessions, settings, keyring, crypto, job_specs(settings)))

    def start(self) -> None:
        """Start firing jobs (call from a running event loop)."""
        for spec in self.runner.specs.values():
            self._scheduler.add_job(
                self.runner.run, trigger_of(spec), args=[spec.name, SCHEDULE], id=spec.name
            )
        self._scheduler.start()
        self._poller = asyncio.create_task(self._poll_forever())
        log.info("scheduler started", jobs=sorted(self.runner.specs), worker=self.runner.worker)

    async def stop(self, grace_seconds: float = SHUTDOWN_GRACE_SECONDS) -> None:
        """Fire nothing more; let runs in progress finish within the grace, abandon the rest."""
        self._scheduler.shutdown(wait=False)
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        await self.runner.stop(grace_seconds)

    async def _poll_forever(self) -> None:
        while True:
            try:
                # Keys added by the CLI in another process reach this one's jobs.
                self.runner.keyring.reload_if_changed()
                await self.runner.run_requested()
            except Exception:
                log.warning("picking up job run requests failed", exc_info=True)
            await asyncio.sleep(self.poll_seconds)


async def run_worker(settings: Settings, keyring: Keyring) -> None:
    """``hub worker``: run the scheduler, and process bulk uploads unless configured not to,
    until SIGTERM or SIGINT."""
    engine = create_hub_async_engine(
        settings.database_url,
        pool_size=settings.database.pool_size,
        max_overflow=settings.database.max_overflow,
        busy_timeout_ms=settings.database.sqlite_busy_timeout_ms,
    )
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    crypto = IdentifierCrypto(keyring)
    scheduler = JobScheduler.create(sessions, settings, keyring, crypto)
    uploads = None
    if settings.uploads.process_in_worker:
        uploads = WorkerUploads(settings, sessions, crypto)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    scheduler.start()
    processing = asyncio.create_task(uploads.run()) if uploads else None
    try:
        async with watching(settings.logging.stall_seconds):
            await stopping.wait()
        log.info("scheduler stopping")
    finally:
        if uploads is not None and processing is not None:
            await uploads.stop(processing)
        await scheduler.stop()
        # Connections closing in the background (SQLAlchemy closes one whose operation was
        # cancelled in a task of its own) finish before the engine goes.
        others = asyncio.all_tasks() - {asyncio.current_task()}
        if others:
            await asyncio.wait(others, timeout=SHUTDOWN_GRACE_SECONDS)
        await engine.dispose()


class WorkerUploads:
    """Bulk uploads processed by ``hub worker``, as ``hub serve`` processes them: the same
    processor on engines of its own, saving arrays where every process opens them."""

    def __init__(
        self,
        settings: Settings,
        sessions: async_sessionmaker[AsyncSession],
        crypto: IdentifierCrypto,
    ) -> None:
        self.sync_engine = wiring.sync_engine(settings)
        arrays = wiring.array_cache(settings, crypto)
        self.read_engine = arrays.engine
        self.processor = wiring.upload_processor(
            settings, sessions, self.sync_engine, crypto, arrays
        )

    async def run(self) -> None:
        log.info("upload processing started")
        await self.processor.run_forever()

    async def stop(self, task: asyncio.Task[None]) -> None:
        """An apply in progress stops in its slice; the upload resumes once its lease runs
        out, here or in another process."""
        self.processor.stop()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        self.sync_engine.dispose()
        self.read_engine.dispose()
