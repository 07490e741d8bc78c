"""``retention_purge``: delete what has outlived its retention, one table at a time.

Other domains add their tables to :data:`RETENTION_PURGES` (feeds, webhook deliveries...):
a name for the run's counts and a function that deletes in the caller's transaction and
returns how many rows it deleted. Each purge commits on its own, so one failing leaves the
others done. The audit log is never purged here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.core.db import rowcount, writing
from hub.jobs.context import JobContext
from hub.jobs.models import JobRun, JobRunRequest
from hub.settings import Settings
from partners.rewards.jobs import purge_feed, purge_unheld_members
from partners.webhooks.service import purge_deliveries

Purge = Callable[[AsyncSession, Settings], Awaitable[int]]


def _cutoff(settings: Settings) -> datetime:
    return datetime.now(UTC) - timedelta(days=settings.jobs.runs_retention_days)


async def purge_job_runs(session: AsyncSession, settings: Settings) -> int:
    """Runs older than ``jobs.runs_retention_days`` -- except each job's newest run, which
    holds the cursor the next run starts from."""
    newest = select(func.max(JobRun.id)).group_by(JobRun.name)
    result = await session.execute(
        delete(JobRun).where(JobRun.started_at < _cutoff(settings), JobRun.id.not_in(newest))
    )
    return rowcount(result)


async def purge_run_requests(session: AsyncSession, settings: Settings) -> int:
    """Run requests a worker picked up, older than ``jobs.runs_retention_days``."""
    result = await session.execute(
        delete(JobRunRequest).where(
            JobRunRequest.picked_at.is_not(None), JobRunRequest.requested_at < _cutoff(settings)
        )
    )
    return rowcount(result)


RETENTION_PURGES: dict[str, Purge] = {
    "job_runs": purge_job_runs,
    "job_run_requests": purge_run_requests,
    "webhook_deliveries": purge_deliveries,
    "reward_feed": purge_feed,
    "reward_members_tombstoned": purge_unheld_members,
}


async def retention_purge(ctx: JobContext) -> dict[str, int]:
    counts: dict[str, int] = {}
    for name, purge in RETENTION_PURGES.items():
        with writing():
            async with ctx.session_maker() as session:
                counts[name] = await purge(session, ctx.settings)
                await ctx.checkpoint({}, counts, session=session)
    return counts
