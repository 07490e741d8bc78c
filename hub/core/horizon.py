"""Cursors over ids that a sequence hands out, safe against transactions that commit late.

A job that reads "the rows after id N" and then moves its cursor past the highest id it saw
skips, for good, a row whose id was drawn earlier by a transaction that commits later (the
soak of issue 19 lost 2 of 27 event requests from the feeds this way, on PostgreSQL). So every
transaction that inserts such rows first takes a shared advisory lock of the stream
(:func:`inserting`), and the reader asks for its horizon (:func:`committed_horizon`), an id
below which nothing can appear any more.

The reader reads the highest committed id ``M``, then lists the transactions holding the
stream's lock (``pg_locks``). A transaction that drew an id below ``M`` and has not finished
drew it before ``M`` was drawn, so it held the lock then and still holds it: it is on the list.
A transaction that starts later draws ids above ``M`` (the sequences hand ids out in order,
one at a time). So once every listed transaction has ended, ``M`` is a horizon. The reader
only watches the list; it takes no lock. An earlier version queued for the stream's exclusive
lock, and every new inserter then queued behind it until the slowest one in flight finished
(the soak's top lock wait: 1,000-event requests held up by one slow request for seconds).

SQLite needs none of it: its writers are serialised, and the jobs read inside a write
transaction, so no insert is ever in flight while they read.
"""

from __future__ import annotations

import asyncio
import time

from sqlalchemy import ColumnElement, bindparam, func, select, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.types import Text

# The streams' advisory lock keys (any constant unique in the database, below 2**31).
REWARD_EVENTS = 0x48554201  # reward_events.id
CONSENT_EVENTS = 0x48554202  # consent_events.seq
# How long a reader that can give up waits for the inserters in flight, and how often it looks.
PATIENCE_SECONDS = 2.0
LOOK_EVERY_SECONDS = 0.02

# The transactions holding the stream's lock (a one-bigint key is classid 0, objid the key,
# objsubid 1), by their virtual transaction id, which a new transaction never reuses.
_HELD = (
    "FROM pg_locks WHERE locktype = 'advisory' AND granted "
    "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
    "AND classid = 0 AND objid = CAST(:k AS bigint)::oid AND objsubid = 1"
)
_HOLDERS = text(f"SELECT virtualtransaction {_HELD}")
_STILL_HOLDING = text(f"SELECT count(*) {_HELD} AND virtualtransaction = ANY(:listed)").bindparams(
    bindparam("listed", type_=ARRAY(Text))
)


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
    patience_seconds: float | None = None,
) -> int | None:
    """The highest id of ``column`` below which every id is committed or abandoned; ``None``
    for no bound (SQLite). Waits, without holding anyone up, for the inserters in flight when
    it read the highest id; with ``patience_seconds``, gives ``-1`` when they take longer (a
    bulk upload's apply holds the consent stream for minutes): read nothing of it this time."""
    async with session_maker() as session:
        if not _postgres(session):
            return None
        try:
            upto, listed = await _highest_and_holders(session, stream, column)
            if not listed:
                return upto
            deadline = None if patience_seconds is None else time.monotonic() + patience_seconds
            while await session.scalar(_STILL_HOLDING, {"k": stream, "listed": listed}):
                if deadline is not None and time.monotonic() >= deadline:
                    return -1
                await asyncio.sleep(LOOK_EVERY_SECONDS)
            # They have ended: a second look often finds the stream free, and a higher horizon.
            again, listed = await _highest_and_holders(session, stream, column)
            return upto if listed else again
        finally:
            await session.rollback()  # nothing was written


async def _highest_and_holders(
    session: AsyncSession, stream: int, column: ColumnElement[int]
) -> tuple[int, list[str]]:
    """The highest id committed, then (in this order) the transactions holding the stream."""
    upto = int(await session.scalar(select(func.coalesce(func.max(column), 0))) or 0)
    listed = list((await session.scalars(_HOLDERS, {"k": stream})).all())
    return upto, listed
