"""Cursors over ids that a sequence hands out, safe against transactions that commit late.

A job that reads "the rows after id N" and then moves its cursor past the highest id it saw
skips, for good, a row whose id was drawn earlier by a transaction that commits later (the
soak of issue 19 lost 2 of 27 event requests from the feeds this way, on PostgreSQL). So every
transaction that inserts such rows first takes a shared advisory lock of the stream
(:func:`inserting`), and the reader asks for its horizon (:func:`committed_horizon`): under the
exclusive lock, which it gets only when no inserter of the stream is in flight, every id drawn
so far belongs to a finished transaction, so the highest id it sees then is a horizon below
which nothing can appear any more. It reads up to there only.

The exclusive lock is held for one statement: new inserters wait at most for the ones already
in flight (the longest of them). SQLite needs none of it: its writers are serialised, and the
jobs read inside a write transaction, so no insert is ever in flight while they read.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, func, select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

# The streams' advisory lock keys (any constant unique in the database).
REWARD_EVENTS = 0x48554201  # reward_events.id
CONSENT_EVENTS = 0x48554202  # consent_events.seq


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
) -> int | None:
    """The highest id of ``column`` below which every id is committed or abandoned; ``None``
    for no bound (SQLite). With ``wait_ms``, a stream whose inserters hold the lock longer
    (a bulk upload's apply) gives ``-1``: read nothing of it this time, rather than keep its
    inserters queued behind this wait."""
    async with session_maker() as session:
        if not _postgres(session):
            return None
        try:
            if wait_ms is not None:
                await session.execute(text(f"SET LOCAL lock_timeout = '{int(wait_ms)}ms'"))
            await session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": stream})
            return int(await session.scalar(select(func.coalesce(func.max(column), 0))) or 0)
        except OperationalError:  # lock_timeout: LockNotAvailable
            return -1
        finally:
            await session.rollback()  # releases the lock; nothing was written
