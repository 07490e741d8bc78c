"""The database lease that lets one run at a time work on a job, across every process.

A lease row per job names its holder (``host:pid``), the run and an expiry. Taking it is one
statement -- insert, or take over a row whose lease expired -- so exactly one contender wins:
PostgreSQL serialises the contenders on the row's lock and re-checks the expiry against the
winner's row; SQLite runs each writer under ``BEGIN IMMEDIATE``. The holder renews the lease
while it works, and every write of a run is guarded by (holder, run id), so a process that lost
its lease (it stalled past the expiry and another took over) can never write a checkpoint.

This is a lease row rather than an advisory lock: a session-level advisory lock would survive
in a pooled connection, and a transaction-level one cannot span a run of many transactions.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from hub.core.db import dialect_insert, rowcount
from hub.jobs.models import ABANDONED, RUNNING, JobLease, JobRun

ABANDONED_REASON = (
    "The worker running this job stopped before finishing (it was killed, or shut down); the "
    "next run resumed from this run's cursor."
)


class LeaseLost(Exception):
    """Another run holds this job's lease now: stop without writing anything more."""


@dataclass(frozen=True)
class Lease:
    """The right of one run (``run_id``) of job ``name`` to work, held by ``holder``."""

    name: str
    holder: str
    run_id: int
    cursor: dict[str, Any]


def _now() -> datetime:
    return datetime.now(UTC)


async def _take_lease(session: AsyncSession, name: str, holder: str, seconds: float) -> bool:
    now = _now()
    stmt = dialect_insert(session, JobLease).values(
        name=name, holder=holder, run_id=None, expires_at=now + timedelta(seconds=seconds)
    )
    take = stmt.on_conflict_do_update(
        index_elements=[JobLease.name],
        set_={
            "holder": stmt.excluded.holder,
            "run_id": None,
            "expires_at": stmt.excluded.expires_at,
        },
        where=JobLease.expires_at < now,
    ).returning(JobLease.name)
    return (await session.execute(take)).first() is not None


async def start_run(
    session: AsyncSession, name: str, holder: str, trigger: str, seconds: float
) -> Lease | None:
    """Take job ``name``'s lease and open a run, in the caller's transaction (the caller
    commits). None when another run holds the lease.

    A run still marked running holds no lease any more (we just took it): its worker died or
    stalled. It is marked abandoned, and the new run starts from the newest run's cursor.
    """
    if not await _take_lease(session, name, holder, seconds):
        return None
    # Taken after the lease: a run starts after the previous holder's release committed.
    now = _now()
    await session.execute(
        update(JobRun)
        .where(JobRun.name == name, JobRun.status == RUNNING)
        .values(status=ABANDONED, finished_at=now, error=ABANDONED_REASON)
    )
    previous = await session.scalar(
        select(JobRun.cursor).where(JobRun.name == name).order_by(JobRun.id.desc()).limit(1)
    )
    cursor = dict(previous or {})
    run = JobRun(
        name=name,
        status=RUNNING,
        trigger=trigger,
        started_at=now,
        heartbeat_at=now,
        worker=holder,
        counts={},
        cursor=cursor,
    )
    session.add(run)
    await session.flush()
    await session.execute(update(JobLease).where(JobLease.name == name).values(run_id=run.id))
    return Lease(name=name, holder=holder, run_id=run.id, cursor=cursor)


def _held(lease: Lease) -> Any:
    return (
        (JobLease.name == lease.name)
        & (JobLease.holder == lease.holder)
        & (JobLease.run_id == lease.run_id)
    )


async def renew(
    session: AsyncSession,
    lease: Lease,
    seconds: float,
    *,
    cursor: dict[str, Any] | None = None,
    counts: dict[str, int] | None = None,
) -> None:
    """Extend the lease and note the run's heartbeat (and its checkpoint, when given) in the
    caller's transaction. Raises :class:`LeaseLost` when the lease is no longer this run's."""
    now = _now()
    renewed = await session.execute(
        update(JobLease).where(_held(lease)).values(expires_at=now + timedelta(seconds=seconds))
    )
    if getattr(renewed, "rowcount", 0) != 1:
        raise LeaseLost(lease.name)
    values: dict[str, Any] = {"heartbeat_at": now}
    if cursor is not None:
        values["cursor"] = cursor
    if counts is not None:
        values["counts"] = counts
    noted = await session.execute(
        update(JobRun).where(JobRun.id == lease.run_id, JobRun.status == RUNNING).values(**values)
    )
    if getattr(noted, "rowcount", 0) != 1:
        raise LeaseLost(lease.name)


async def finish_run(
    session: AsyncSession,
    lease: Lease,
    status: str,
    *,
    counts: dict[str, int] | None = None,
    error: str | None = None,
) -> bool:
    """Record the run's outcome and release the lease, in the caller's transaction. False when
    the run had already been declared abandoned by another worker (its outcome is not ours to
    write any more)."""
    values: dict[str, Any] = {"status": status, "finished_at": _now(), "error": error}
    if counts is not None:
        values["counts"] = counts
    done = await session.execute(
        update(JobRun).where(JobRun.id == lease.run_id, JobRun.status == RUNNING).values(**values)
    )
    await session.execute(delete(JobLease).where(_held(lease)))
    return getattr(done, "rowcount", 0) == 1


async def abandon_held(session: AsyncSession, holder: str) -> int:
    """On shutdown: every run this worker still holds is abandoned and its lease released, so
    the next worker resumes it at once (a run whose start raced the shutdown included)."""
    held = list(await session.scalars(select(JobLease.run_id).where(JobLease.holder == holder)))
    done = await session.execute(
        update(JobRun)
        .where(JobRun.worker == holder, JobRun.status == RUNNING)
        .values(status=ABANDONED, finished_at=_now(), error=ABANDONED_REASON)
    )
    await session.execute(delete(JobLease).where(JobLease.holder == holder))
    return max(len(held), rowcount(done))
