"""Offer results' running totals: per (offer, side, ledger member), the earn and redeem events
with ``occurred_at`` in the offer's window, counted and summed as the events are applied
(DESIGN.md "Offer measurement"; bench/README.md "Benchmark: offer results").

A results read then sums about one row per responding member instead of every event of the
window (5M events are ~300k rows). What it gives is exactly what the full aggregate over
``reward_events`` gives (:func:`matching.measurement.arm_figures_query` with
``source=EVENTS_SOURCE``, kept as the reference and compared in the tests):

* an offer side is **filled** (:func:`fill`): its window's events summed from
  ``reward_events`` at activation (a few events dated ahead at most), or before the first
  results read of an offer activated before the totals existed, or whose fill no longer
  matches its window;
* each batch of applied events is **added** in its own transaction (:func:`add_applied`): one
  INSERT … SELECT … ON CONFLICT DO UPDATE joining the batch with the partner's filled offer
  sides whose window ``[opens, closes)`` holds ``occurred_at`` -- late events with an old
  ``occurred_at`` too, as long as it is in the window, and the attribution days' tail;
* ending an offer **closes** its window earlier (:func:`close`): the events already counted
  from the new bound on are taken out again, set-based;
* the read subtracts the events dated from now on (the window ends now while the offer runs;
  events may be dated up to a day ahead): :func:`matching.measurement.arm_figures`.

Members are mapped to people at read time (records change), so erasure (records deleted,
members tombstoned) and reconciliation (arms shrink) need nothing here; events are never
deleted or changed.

Serialising fills and closes with concurrent inserters on PostgreSQL: every inserter of
reward events holds the stream's shared advisory lock for its transaction
(:func:`hub.core.horizon.inserting`); a fill or a close takes it exclusively, so it waits for
the inserters in flight (their events are committed when its statements read) and the next
ones wait for its commit (they then see its fill row and bounds). SQLite serialises writers.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from sqlalchemy import Table, and_, delete, func, literal, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from hub.core import horizon
from hub.core.db import dialect_insert, writing
from matching.models import Offer, OfferResultFill, OfferResultTotal
from partners.partnerships.models import PartnershipMember
from partners.rewards.models import EARN, REDEEM, RewardEvent

FILLS: Table = OfferResultFill.__table__  # type: ignore[assignment]
TOTALS: Table = OfferResultTotal.__table__  # type: ignore[assignment]
EVENTS: Table = RewardEvent.__table__  # type: ignore[assignment]
MEMBERS: Table = PartnershipMember.__table__  # type: ignore[assignment]
ANALYZE_AFTER = 10_000  # a fill of this many member rows refreshes the planner's statistics


def bounds(offer: Offer) -> tuple[datetime, datetime | None]:
    """The offer's window for measurement: ``[max(activated_at, starts_at), ends_at +
    attribution_days)``, no upper bound while it has no end (the read stops it at now)."""
    assert offer.activated_at is not None
    opens = max(offer.activated_at, offer.starts_at) if offer.starts_at else offer.activated_at
    closes = offer.ends_at + timedelta(days=offer.attribution_days) if offer.ends_at else None
    return opens, closes


async def lock_inserters(session: AsyncSession) -> None:
    """Wait for the reward events' inserters in flight, and hold the next ones back until this
    transaction ends (PostgreSQL; SQLite's writers are serialised already)."""
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(
            text("SELECT pg_advisory_xact_lock(:k)"), {"k": horizon.REWARD_EVENTS}
        )


def _counted(*where: Any) -> Any:
    return and_(EVENTS.c.kind.in_((EARN, REDEEM)), *where)


async def _upsert(session: AsyncSession, rows: Any) -> None:
    """Add ``rows`` (offer_id, partner_id, member_id, events, points, amount_minor; one row
    per key) to the totals."""
    columns = ["offer_id", "partner_id", "member_id", "events", "points", "amount_minor"]
    statement = dialect_insert(session, TOTALS).from_select(columns, rows)
    excluded = statement.excluded
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=["offer_id", "partner_id", "member_id"],
            set_={
                "events": TOTALS.c.events + excluded.events,
                "points": TOTALS.c.points + excluded.points,
                "amount_minor": TOTALS.c.amount_minor + excluded.amount_minor,
            },
        )
    )


def _sums(offer_id: Any, sign: int, *where: Any) -> Any:
    return (
        select(
            offer_id,
            EVENTS.c.partner_id,
            EVENTS.c.member_id,
            func.count() * sign,
            func.sum(EVENTS.c.points) * sign,
            func.sum(func.coalesce(EVENTS.c.amount_minor, 0)) * sign,
        )
        .where(_counted(*where))
        .group_by(EVENTS.c.partner_id, EVENTS.c.member_id)
    )


async def add_applied(
    session: AsyncSession, partner_id: UUID, refs: Sequence[int], earliest: datetime
) -> None:
    """In the transaction that inserted the events ``refs`` of ``partner_id`` (after its
    :func:`hub.core.horizon.inserting`): add them to every filled offer side of the partner
    whose window holds their ``occurred_at`` (``earliest``: the batch's earliest)."""
    if not refs:
        return
    open_sides = await session.scalar(
        select(func.count())
        .select_from(FILLS)
        .where(
            FILLS.c.partner_id == partner_id,
            or_(FILLS.c.closes.is_(None), FILLS.c.closes > earliest),
        )
    )
    if not open_sides:
        return
    for start in range(0, len(refs), 1000):
        batch = list(refs[start : start + 1000])
        # The batch's own rows first (by primary key, nothing else to choose from), then
        # the fills: planned the other way (SQLite without statistics does), every window
        # would be range-scanned for each request.
        applied = (
            select(
                EVENTS.c.partner_id,
                EVENTS.c.member_id,
                EVENTS.c.kind,
                EVENTS.c.occurred_at,
                EVENTS.c.points,
                EVENTS.c.amount_minor,
            )
            .where(EVENTS.c.id.in_(batch))
            .cte("applied")
            .prefix_with("MATERIALIZED")
        )
        rows = (
            select(
                FILLS.c.offer_id,
                applied.c.partner_id,
                applied.c.member_id,
                func.count(),
                func.sum(applied.c.points),
                func.sum(func.coalesce(applied.c.amount_minor, 0)),
            )
            .select_from(
                applied.join(
                    FILLS,
                    and_(
                        FILLS.c.partner_id == applied.c.partner_id,
                        applied.c.occurred_at >= FILLS.c.opens,
                        or_(FILLS.c.closes.is_(None), applied.c.occurred_at < FILLS.c.closes),
                    ),
                )
            )
            .where(applied.c.partner_id == partner_id, applied.c.kind.in_((EARN, REDEEM)))
            .group_by(FILLS.c.offer_id, applied.c.partner_id, applied.c.member_id)
        )
        await _upsert(session, rows)


async def fill(session: AsyncSession, offer: Offer, sides: Sequence[UUID], now: datetime) -> None:
    """(Re)fill these sides of the offer from ``reward_events``, in the caller's transaction
    (which holds the inserters back from here to its commit)."""
    await lock_inserters(session)
    opens, closes = bounds(offer)
    for side in sides:
        await session.execute(
            delete(TOTALS).where(TOTALS.c.offer_id == offer.id, TOTALS.c.partner_id == side)
        )
        await session.execute(
            delete(FILLS).where(FILLS.c.offer_id == offer.id, FILLS.c.partner_id == side)
        )
        await session.execute(
            FILLS.insert().values(
                offer_id=offer.id, partner_id=side, opens=opens, closes=closes, filled_at=now
            )
        )
        window = [EVENTS.c.partner_id == side, EVENTS.c.occurred_at >= opens]
        if closes is not None:
            window.append(EVENTS.c.occurred_at < closes)
        rows = _sums(literal(offer.id, FILLS.c.offer_id.type), 1, *window)
        await _upsert(session, rows)
    filled = await session.scalar(
        select(func.count()).select_from(TOTALS).where(TOTALS.c.offer_id == offer.id)
    )
    if (filled or 0) >= ANALYZE_AFTER:
        # Rows written at once, before the planner's statistics know of them: with none, it
        # takes a large fill for a couple of rows and joins it row by row (PostgreSQL: 14.5 s
        # instead of 4.9 s at 300k members, bench/README.md). Ingest's small additions are
        # left to autovacuum's analyze.
        await session.execute(text(f"ANALYZE {TOTALS.name}"))


async def close(session: AsyncSession, offer: Offer) -> None:
    """The offer's window now closes earlier (it was ended): take the events counted from the
    new bound on out of its filled sides, in the caller's transaction."""
    filled = (
        await session.execute(
            select(FILLS.c.partner_id, FILLS.c.closes).where(FILLS.c.offer_id == offer.id)
        )
    ).all()
    if not filled:
        return
    await lock_inserters(session)
    _, closes = bounds(offer)
    assert closes is not None
    for side, before in filled:
        if before is not None and before <= closes:
            continue
        window = [EVENTS.c.partner_id == side, EVENTS.c.occurred_at >= closes]
        if before is not None:
            window.append(EVENTS.c.occurred_at < before)
        await _upsert(session, _sums(literal(offer.id, FILLS.c.offer_id.type), -1, *window))
        await session.execute(
            delete(TOTALS).where(
                TOTALS.c.offer_id == offer.id, TOTALS.c.partner_id == side, TOTALS.c.events <= 0
            )
        )
        await session.execute(
            update(FILLS)
            .where(FILLS.c.offer_id == offer.id, FILLS.c.partner_id == side)
            .values(closes=closes)
        )


async def ensure_filled(
    session_maker: async_sessionmaker[AsyncSession], offer_id: UUID, now: datetime
) -> None:
    """Before a results read: fill the offer's sides that have no fill matching the offer's
    window (offers activated before the totals existed), in a transaction of its own."""

    async def missing(session: AsyncSession) -> tuple[Offer | None, list[UUID]]:
        offer = await session.scalar(
            select(Offer).where(Offer.id == offer_id).execution_options(populate_existing=True)
        )
        if offer is None or offer.activated_at is None:
            return None, []
        sides = list(
            (
                await session.scalars(
                    select(MEMBERS.c.partner_id).where(
                        MEMBERS.c.partnership_id == offer.partnership_id
                    )
                )
            ).all()
        )
        filled = {
            row.partner_id: (row.opens, row.closes)
            for row in await session.execute(
                select(FILLS.c.partner_id, FILLS.c.opens, FILLS.c.closes).where(
                    FILLS.c.offer_id == offer_id
                )
            )
        }
        return offer, [side for side in sides if filled.get(side) != bounds(offer)]

    async with session_maker() as session:
        _, sides = await missing(session)
    if not sides:
        return
    with writing():
        async with session_maker() as session, session.begin():
            await lock_inserters(session)
            offer, sides = await missing(session)
            if offer is not None and sides:
                await fill(session, offer, sides, now)
