"""The TRUE figures of an offer's arms at one side: the one query that reads the offer's arms,
the side's reward events and its identifier records together (DESIGN.md "Offer measurement").

A person's events at side S are the earn and redeem events S sent with ``occurred_at`` in
``[start, end)`` whose identifier (the ledger member's id type and match key) is, at read time,
a record of S with that person's ``customer_ref``; ``adjust`` does not count. Per person the
events are summed, each sum clamped at its cap, and then added up per arm (and segment). The
whole pipeline runs in the database as SQL aggregates: the rows never leave it, only one
line per arm (per segment) does. Measured against numpy/pandas on the fetched rows in
bench/offer_results.py: fetching 5M event rows alone takes longer than the aggregate.

This is the only place the results read identifier records (keep it that way: the records'
"current records" reader can replace the join here alone).

The events' per-member sums come from the offer side's running totals
(:mod:`matching.result_totals`, kept as events are applied: ~1 row per responding member);
the same sums straight from ``reward_events`` stay here as the reference the totals must
equal (``reference=True``; the tests compare the two).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import (
    CompoundSelect,
    Select,
    Table,
    and_,
    case,
    func,
    literal,
    select,
    text,
    union_all,
)
from sqlalchemy.ext.asyncio import AsyncSession

from matching.models import OfferAudience, OfferControl, OfferResultTotal
from matching.result_rules import ArmTruth
from partners.identifiers.models import IdentifierRecord
from partners.identifiers.records import current
from partners.rewards.models import EARN, REDEEM, RewardEvent, RewardMember

AUDIENCE: Table = OfferAudience.__table__  # type: ignore[assignment]
CONTROLS: Table = OfferControl.__table__  # type: ignore[assignment]
EVENTS: Table = RewardEvent.__table__  # type: ignore[assignment]
MEMBERS: Table = RewardMember.__table__  # type: ignore[assignment]
RECORDS: Table = IdentifierRecord.__table__  # type: ignore[assignment]
TOTALS: Table = OfferResultTotal.__table__  # type: ignore[assignment]
TREATED, CONTROL = "treated", "control"


@dataclass(frozen=True, slots=True)
class Window:
    """The events that count: ``occurred_at`` in ``[start, end)``."""

    start: datetime
    end: datetime


@dataclass(frozen=True, slots=True)
class Tail:
    """Events counted in the running totals but not in this read's window: those dated from
    the window's end (now) up to the offer's bound ``closes`` (None: no bound)."""

    closes: datetime | None


EVENTS_SOURCE, TOTALS_SOURCE = "events", "totals"
Source = str | Tail


def _clamped(column: Any, cap: int) -> Any:
    value = func.coalesce(column, 0)
    return case((value > cap, cap), else_=value)


def arm_figures_query(
    offer_id: UUID,
    side: UUID,
    window: Window,
    points_cap: int,
    amount_cap: int,
    segment_attribute: str | None = None,
    source: Source = TOTALS_SOURCE,
) -> Select[Any] | CompoundSelect[Any]:
    """(arm, segment, people, responders, points, amount_minor) per arm (and segment), from
    the running totals (``source``: :data:`TOTALS_SOURCE`, or a :class:`Tail` to take out of
    them) or, as the reference they must equal, from the window's raw events
    (:data:`EVENTS_SOURCE`)."""
    arms = union_all(
        select(AUDIENCE.c.customer_ref.label("ref"), literal(TREATED).label("arm")).where(
            AUDIENCE.c.offer_id == offer_id, AUDIENCE.c.partner_id == side
        ),
        select(CONTROLS.c.customer_ref.label("ref"), literal(CONTROL).label("arm")).where(
            CONTROLS.c.offer_id == offer_id, CONTROLS.c.partner_id == side
        ),
    ).subquery("arms")
    per_member = (
        _member_sums(side, window)
        if source == EVENTS_SOURCE
        else _member_totals(offer_id, side, window, source)
    ).subquery("per_member")
    per_person: Any = (
        select(
            RECORDS.c.customer_ref.label("ref"),
            func.sum(per_member.c.points).label("points"),
            func.sum(per_member.c.amount).label("amount"),
        )
        .select_from(
            per_member.join(MEMBERS, MEMBERS.c.id == per_member.c.member_id).join(
                RECORDS,
                and_(
                    current(RECORDS, side),
                    RECORDS.c.id_type == MEMBERS.c.id_type,
                    RECORDS.c.match_key == MEMBERS.c.match_key,
                ),
            )
        )
        .group_by(RECORDS.c.customer_ref)
    )
    if segment_attribute is None and source != EVENTS_SOURCE:
        return _by_arm(offer_id, side, per_person, points_cap, amount_cap)
    per_person = per_person.subquery("per_person")
    joined: Any = arms.outerjoin(per_person, per_person.c.ref == arms.c.ref)
    segment: Any = literal(None)
    if segment_attribute is not None:
        # A person's value: the largest of their records' values (records of one person
        # normally agree; the choice is fixed so that the same data gives the same cells).
        values = (
            select(
                RECORDS.c.customer_ref.label("ref"),
                func.max(RECORDS.c.attributes[segment_attribute].as_string()).label("value"),
            )
            .where(current(RECORDS, side))
            .group_by(RECORDS.c.customer_ref)
            .subquery("values")
        )
        joined = joined.outerjoin(values, values.c.ref == arms.c.ref)
        segment = values.c.value
    segment = segment.label("segment")
    return (
        select(
            arms.c.arm,
            segment,
            func.count().label("people"),
            func.count(per_person.c.ref).label("responders"),
            func.coalesce(func.sum(_clamped(per_person.c.points, points_cap)), 0),
            func.coalesce(func.sum(_clamped(per_person.c.amount, amount_cap)), 0),
        )
        .select_from(joined)
        .group_by(arms.c.arm, segment)
    )


def _by_arm(
    offer_id: UUID, side: UUID, per_person: Select[Any], points_cap: int, amount_cap: int
) -> CompoundSelect[Any]:
    """Without a breakdown: each arm's people counted on its own (an index range), and only
    the people with events (a few hundred thousand, not the arms' million) joined to their
    arm (one key lookup each), instead of the arms outer-joined to them."""
    responding = per_person.cte("per_person").prefix_with("MATERIALIZED")
    parts = []
    for table, arm in ((AUDIENCE, TREATED), (CONTROLS, CONTROL)):
        mine = and_(table.c.offer_id == offer_id, table.c.partner_id == side)
        people = select(func.count()).select_from(table).where(mine).scalar_subquery()
        parts.append(
            select(
                literal(arm).label("arm"),
                literal(None).label("segment"),
                people.label("people"),
                func.count().label("responders"),
                func.coalesce(func.sum(_clamped(responding.c.points, points_cap)), 0),
                func.coalesce(func.sum(_clamped(responding.c.amount, amount_cap)), 0),
            ).select_from(
                responding.join(table, and_(mine, table.c.customer_ref == responding.c.ref))
            )
        )
    return union_all(*parts)


Figures = dict[str, dict[str | None, ArmTruth]]  # arm -> segment -> figures


def _member_sums(side: UUID, window: Window) -> Select[Any]:
    """The reference: the window's events summed per ledger member (an index range scan of
    the window, no join per event)."""
    return (
        select(
            EVENTS.c.member_id.label("member_id"),
            func.sum(EVENTS.c.points).label("points"),
            func.sum(func.coalesce(EVENTS.c.amount_minor, 0)).label("amount"),
        )
        .where(
            EVENTS.c.partner_id == side,
            EVENTS.c.kind.in_((EARN, REDEEM)),
            EVENTS.c.occurred_at >= window.start,
            EVENTS.c.occurred_at < window.end,
        )
        .group_by(EVENTS.c.member_id)
    )


def _member_totals(offer_id: UUID, side: UUID, window: Window, source: Source) -> Select[Any]:
    """The same sums from the running totals (:mod:`matching.result_totals`), less a tail."""
    kept = select(
        TOTALS.c.member_id.label("member_id"),
        TOTALS.c.events.label("events"),
        TOTALS.c.points.label("points"),
        TOTALS.c.amount_minor.label("amount"),
    ).where(TOTALS.c.offer_id == offer_id, TOTALS.c.partner_id == side)
    if not isinstance(source, Tail):
        return kept.with_only_columns(
            kept.selected_columns.member_id,
            kept.selected_columns.points,
            kept.selected_columns.amount,
        ).where(TOTALS.c.events > 0)
    after = [
        EVENTS.c.partner_id == side,
        EVENTS.c.kind.in_((EARN, REDEEM)),
        EVENTS.c.occurred_at >= window.end,
        EVENTS.c.occurred_at >= window.start,
    ]
    if source.closes is not None:
        after.append(EVENTS.c.occurred_at < source.closes)
    tail = select(
        EVENTS.c.member_id,
        literal(-1),
        -EVENTS.c.points,
        -func.coalesce(EVENTS.c.amount_minor, 0),
    ).where(*after)
    both = union_all(kept, tail).subquery("both")
    return (
        select(
            both.c.member_id.label("member_id"),
            func.sum(both.c.points).label("points"),
            func.sum(both.c.amount).label("amount"),
        )
        .group_by(both.c.member_id)
        .having(func.sum(both.c.events) > 0)
    )


async def arm_figures(
    session: AsyncSession,
    offer_id: UUID,
    side: UUID,
    window: Window,
    points_cap: int,
    amount_cap: int,
    segment_attribute: str | None = None,
    *,
    closes: datetime | None,
    reference: bool = False,
) -> Figures:
    """Per arm (``treated``, ``control``) and segment (None without a breakdown), the TRUE
    figures; both arms are always present (empty arms as zeros). Runs in the caller's
    transaction. From the offer side's running totals, filled
    (:func:`matching.result_totals.ensure_filled`) for the window ``[window.start, closes)``
    (``closes``: the offer's bound, None for none); with ``reference``, from the window's
    raw events instead (what the totals must equal)."""
    if session.get_bind().dialect.name == "postgresql":
        # PostgreSQL's row estimates for these grouped joins are far too high, so its JIT
        # compiles the plan for seconds while running it takes a fraction of that
        # (bench/offer_results.py measures both): no JIT for this transaction.
        await session.execute(text("SET LOCAL jit = off"))
    source: Source = (
        EVENTS_SOURCE if reference else await totals_source(session, side, window, closes)
    )
    rows = await session.execute(
        arm_figures_query(offer_id, side, window, points_cap, amount_cap, segment_attribute, source)
    )
    out: Figures = {TREATED: {}, CONTROL: {}}
    for arm, segment, people, responders, points, amount in rows:
        out[str(arm)][segment] = ArmTruth(int(people), int(responders), int(points), int(amount))
    return out


async def totals_source(
    session: AsyncSession, side: UUID, window: Window, closes: datetime | None
) -> Source:
    """The totals alone, or less the events dated from the window's end (now, while the
    offer's bound is later) when there are any: an index range scan of a day at most."""
    if closes is not None and window.end >= closes:
        return TOTALS_SOURCE
    after = [
        EVENTS.c.partner_id == side,
        EVENTS.c.occurred_at >= window.end,
        EVENTS.c.occurred_at >= window.start,
        EVENTS.c.kind.in_((EARN, REDEEM)),
    ]
    if closes is not None:
        after.append(EVENTS.c.occurred_at < closes)
    dated_ahead = await session.scalar(select(EVENTS.c.id).where(*after).limit(1))
    return TOTALS_SOURCE if dated_ahead is None else Tail(closes)


def arm_total(by_segment: dict[str | None, ArmTruth]) -> ArmTruth:
    """The arm's figures over all its segments."""
    return ArmTruth(
        sum(t.people for t in by_segment.values()),
        sum(t.responders for t in by_segment.values()),
        sum(t.points for t in by_segment.values()),
        sum(t.amount_minor for t in by_segment.values()),
    )
