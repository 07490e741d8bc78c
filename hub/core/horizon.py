"""Cursors over ids that a sequence hands out, safe against transactions that commit late.

A job that reads "the rows after id N" and then moves its cursor past the highest id it saw
skips, for good, a row whose id was drawn earlier by a transaction that commits later (the
soak of issue 19 lost 2 of 27 event requests from the feeds this way, on PostgreSQL). So every
transaction that inserts such rows first takes a shared advisory lock of the stream
(:func:`inserting`), and the reader asks for its horizon (:func:`committed_horizon`): under the
exclusive lock, which it gets only when no inserter of the stream is in flight, every id drawn
so far belongs to a finished transaction, so the highest id it sees then is a horizon below
which nothing can appear any more. It reads up to there only.

The reader first only *tries* the exclusive lock, again and again for a while
(``pg_try_advisory_xact_lock``): a try that fails leaves nothing queued. A waiting exclusive
request would make every new inserter queue behind it until the ones in flight finished (the
soak's 1,000-event requests and a bulk upload's apply, which holds the consent stream for
minutes, made such convoys). Only when the stream was never free during that patience does it
queue for the lock (the event stream: the feeds must move on) or give up for this run (with
``wait_ms``). The exclusive lock is held for one statement. SQLite needs none of it: its
writers are serialised, and the jobs read inside a write transaction, so no insert is ever in
flight while they read.
"""

from __future__ import annotations

import asyncio
import time

from sqlalchemy import ColumnElement, func, select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

# The streams' advisory lock keys (any constant unique in the database).
REWARD_EVENTS = 0x48554201  # reward_events.id
CONSENT_EVENTS = 0x48554202  # consent_events.seq
# How long the reader keeps trying the lock without queueing, and how often.
PATIENCE_SECONDS = 2.0
TRY_EVERY_SECONDS = 0.02


def _postgres(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name == "postgresql"


async def inserting(session: AsyncSession, stream: int) -> None:
    """Call in the inserting transaction before its first id of ``stream`` is drawn."""
    if _postgres(session):
        await session.execute(text("SELECT pg_advisory_xact_lock_shared(:k)"), {"k": stream})


async def committed_horizon(
    session_maker: async_sessionmaker[AsyncSession],
    stream: int,
    column: ColumnElement[int],
    *,
    wait_ms: int | None = None,
    patience_seconds: float = PATIENCE_SECONDS,
) -> int | None:
    """The highest id of ``column`` below which every id is committed or abandoned; ``None``
    for no bound (SQLite). Tries the stream's lock for ``patience_seconds`` without queueing;
    then queues for it, or with ``wait_ms`` queues that long at most (0: not at all) and gives
    ``-1`` when the stream's inserters hold it longer (a bulk upload's apply): read nothing of
    it this time, rather than keep its inserters queued behind this wait."""
    async with session_maker() as session:
        if not _postgres(session):
            return None
        try:
            if not await _try_lock(session, stream, patience_seconds):
                if wait_ms == 0:
                    return -1
                if wait_ms is not None:
                    await session.execute(text(f"SET LOCAL lock_timeout = '{int(wait_ms)}ms'"))
                await session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": stream})
            return int(await session.scalar(select(func.coalesce(func.max(column), 0))) or 0)
        except OperationalError:  # lock_timeout: LockNotAvailable
            return -1
        finally:
            await session.rollback()  # releases the lock; nothing was written


async def _try_lock(session: AsyncSession, stream: int, patience_seconds: float) -> bool:
    """The stream's exclusive lock if it is free at some try within the patience."""
    deadline = time.monotonic() + patience_seconds
    while True:
        got = await session.scalar(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": stream})
        if got:
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(TRY_EVERY_SECONDS)
