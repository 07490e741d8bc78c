"""Offer results: measured lift per side, treated against control (DESIGN.md "Offer
measurement"), for both members and admins.

A read is decided like an overlap question (:mod:`matching.overlap`), in one short
transaction holding the partnership's row lock:

1. the offer is reconciled (the arms only shrink) and its window fixed: from
   ``max(activated_at, starts_at)`` to ``ends_at`` (or now) plus ``attribution_days``;
2. if the same question (breakdown, window) was answered at the same data versions (both
   members' identifier versions and the newest event of either), the stored released answer
   is served again and spends nothing;
3. otherwise the TRUE figures come from the database (:mod:`matching.measurement`), the
   budget is checked (one read costs the partnership's ``epsilon``), the answer is compared
   with earlier answers of the same question (differencing: a change of 1 to
   ``min_audience - 1`` people in any count is refused), released by
   :mod:`matching.result_rules` and recorded: the true counts with the epsilon spent (the
   partnership's one budget) and the released answer (to serve again).

Every read, refusal or not, is an audit entry concerning both members. Aggregates only: no
list of responders, no per-person flag ever leaves this module.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import msgspec
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from hub.core.audit import Actor, append
from hub.core.db import writing
from hub.core.errors import Conflict, HubError, InvalidInput
from matching import lift, result_totals, rules
from matching.loader import ArrayCache
from matching.measurement import CONTROL, TREATED, Figures, Window, arm_figures, arm_total
from matching.models import Offer, OfferResultAnswer, OverlapQuery
from matching.offer_arms import reconcile_offer
from matching.offers import offer_for
from matching.overlap import (
    Dimension,
    PrivacyRefusal,
    budget_refusal,
    check_attribute,
    lock_partnerships,
    parse_breakdown,
)
from matching.result_rules import (
    ArmRelease,
    Release,
    ResultsNoise,
    release_arm,
    release_segments,
    with_lift,
)
from matching.schemas import ArmOut, LiftOut, OfferResultsOut, SegmentResultOut, SideResultOut
from partners.identifiers.models import IdentifierState
from partners.partnerships.models import ACTIVE, ENDED, Partnership
from partners.rewards.models import RewardEvent

PURPOSE = "offer_results"  # the overlap_queries rows of results reads (budget, differencing)


class OfferResultsService:
    def __init__(
        self,
        session_maker: async_sessionmaker[AsyncSession],
        arrays: ArrayCache,
        points_cap: int,
        amount_cap: int,
        history: int,
        *,
        noise: rules.NoiseMechanism | None = None,
        reference: bool = False,
    ) -> None:
        self.session_maker = session_maker
        self.arrays = arrays
        self.points_cap = points_cap
        self.amount_cap = amount_cap
        self.history = history
        # OpenDP's discrete Laplace; tests put a seeded stub here (OpenDP cannot be seeded).
        self.noise: rules.NoiseMechanism = noise or rules.default_noise()
        # True: the figures from the window's raw events (the reference the running totals
        # must equal; tests and bench/offer_results.py compare the two).
        self.reference = reference

    async def read(
        self, offer_id: UUID, caller: UUID | None, by: str | None, actor: Actor
    ) -> OfferResultsOut:
        async with self.session_maker() as session:
            offer, partnership = await offer_for(session, offer_id, caller)
        params = {"by": by or ""}
        try:
            dimension = await self._question(offer, partnership, caller, by)
        except HubError as refused:
            await self._audit_refusal(actor, offer, partnership, refused, params)
            raise
        await reconcile_offer(self.session_maker, self.arrays, offer.id, partnership)
        now = datetime.now(UTC)
        await result_totals.ensure_filled(self.session_maker, offer.id, now)
        window = window_of(offer, now)
        question = _question_key(offer, dimension, window)
        refusal: HubError | None = None
        with writing():
            async with self.session_maker() as session, session.begin():
                await lock_partnerships(session, [partnership.id])
                offer, partnership = await offer_for(session, offer_id, caller)
                versions = await _versions(session, partnership)
                stored = await session.scalar(
                    select(OfferResultAnswer.released)
                    .where(
                        OfferResultAnswer.offer_id == offer.id,
                        OfferResultAnswer.question == question,
                        OfferResultAnswer.versions == versions,
                    )
                    .order_by(OfferResultAnswer.id.desc())
                    .limit(1)
                )
                if stored is not None:
                    out = msgspec.convert(stored, OfferResultsOut)
                    out.epsilon_spent = 0.0
                    await append(session, _read_event(actor, offer, partnership, 0.0, True, params))
                    return out
                try:
                    out = await self._answer(
                        session, offer, partnership, caller, dimension, window, question, now
                    )
                except HubError as refused:
                    refusal = refused
                    await append(
                        session, _refused_event(actor, offer, partnership, refused, params)
                    )
                else:
                    session.add(
                        OfferResultAnswer(
                            offer_id=offer.id,
                            question=question,
                            versions=versions,
                            released=msgspec.to_builtins(out),
                            answered_at=now,
                        )
                    )
                    await append(
                        session,
                        _read_event(actor, offer, partnership, out.epsilon_spent, False, params),
                    )
        if refusal is not None:
            raise refusal
        return out

    async def _question(
        self, offer: Offer, partnership: Partnership, caller: UUID | None, by: str | None
    ) -> Dimension | None:
        if offer.activated_at is None:
            raise Conflict(
                f"Offer {offer.id} was never activated: it has no arms to measure.",
                fix="Read results once the other member has approved the offer.",
            )
        if partnership.status != ACTIVE:
            then = (
                "an ended partnership is not resumed"
                if partnership.status == ENDED
                else "read the results again once it is active"
            )
            raise Conflict(
                f"Partnership {partnership.id} is {partnership.status}: the results of its "
                "offers are not served while it is not active.",
                fix=f"Ask the coalition admin about the partnership; {then}.",
            )
        dimensions = parse_breakdown(by, partnership, caller)
        if not dimensions:
            return None
        dimension = dimensions[0]
        if len(dimensions) > 1 or (caller is not None and dimension.member != caller):
            raise InvalidInput(
                "Results break down by one attribute of the caller's own customers only.",
                errors=[{"index": 0, "field": "by", "reason": "self.<attribute> only"}],
                fix="Use by=self.<attribute> (an admin: by=<member id>.<attribute>).",
            )
        check_attribute(await self.arrays.get(dimension.member), dimension)
        return dimension

    async def _answer(
        self,
        session: AsyncSession,
        offer: Offer,
        partnership: Partnership,
        caller: UUID | None,
        dimension: Dimension | None,
        window: Window,
        question: str,
        now: datetime,
    ) -> OfferResultsOut:
        epsilon = partnership.epsilon
        if epsilon is not None and (spent := await budget_refusal(session, partnership, epsilon)):
            raise spent
        members = [m.partner_id for m in partnership.members]
        figures: dict[UUID, Figures] = {}
        for side in members:
            attribute = dimension.attribute if dimension and dimension.member == side else None
            figures[side] = await arm_figures(
                session,
                offer.id,
                side,
                window,
                self.points_cap,
                self.amount_cap,
                attribute,
                closes=result_totals.bounds(offer)[1],
                reference=self.reference,
            )
        counts = _true_counts(figures, dimension)
        if refusal := await _differencing(session, partnership, question, counts, self.history):
            raise refusal
        noise = ResultsNoise(
            epsilon, self.noise, self.points_cap, self.amount_cap, segments=dimension is not None
        )
        minimum = partnership.min_audience
        sides = await asyncio.to_thread(_release_sides, figures, dimension, caller, minimum, noise)
        session.add(
            OverlapQuery(
                partnership_id=partnership.id,
                partner_id=caller,
                purpose=PURPOSE,
                breakdown=question,
                epsilon=epsilon or 0.0,
                total=counts.pop(("total",)),
                cells=[[*key, count] for key, count in sorted(counts.items(), key=repr)],
            )
        )
        return OfferResultsOut(
            offer_id=offer.id,
            window_start=window.start,
            window_end=window.end,
            holdout=offer.holdout,
            min_audience=minimum,
            noise=epsilon is not None,
            epsilon_spent=epsilon or 0.0,
            method=lift.METHOD,
            sides=sides,
            answered_at=now,
        )

    async def _audit_refusal(
        self,
        actor: Actor,
        offer: Offer,
        partnership: Partnership,
        refusal: HubError,
        params: dict[str, Any],
    ) -> None:
        with writing():
            async with self.session_maker() as session, session.begin():
                await append(session, _refused_event(actor, offer, partnership, refusal, params))


def window_of(offer: Offer, now: datetime) -> Window:
    """``[max(activated_at, starts_at), (ends_at or now) + attribution_days)``, never past
    now (activity not yet sent cannot count)."""
    start, closes = result_totals.bounds(offer)
    return Window(start, now if closes is None else min(closes, now))


def _question_key(offer: Offer, dimension: Dimension | None, window: Window) -> str:
    """(breakdown, window) in member terms: the same question whoever asks. The window's end
    is the offer's configured end ("open" while it has none), not the moment of the read."""
    end = offer.ends_at.isoformat() if offer.ends_at else "open"
    by = dimension.canonical() if dimension else ""
    return f"{offer.id}|{by}|{window.start.isoformat()}|{end}+{offer.attribution_days}d"


async def _versions(session: AsyncSession, partnership: Partnership) -> str:
    members = sorted(m.partner_id for m in partnership.members)
    states = dict(
        (
            await session.execute(
                select(IdentifierState.partner_id, IdentifierState.version).where(
                    IdentifierState.partner_id.in_(members)
                )
            )
        ).all()
    )
    newest = await session.scalar(
        select(func.max(RewardEvent.id)).where(RewardEvent.partner_id.in_(members))
    )
    return ":".join([*(str(states.get(m, 0)) for m in members), str(newest or 0)])


CountKey = tuple[str | None, ...]


def _true_counts(figures: dict[UUID, Figures], dimension: Dimension | None) -> dict[CountKey, int]:
    """Every released count's TRUE value, keyed for differencing; ("total",) is all people."""
    counts: dict[CountKey, int] = {}
    total = 0
    for side, arms in figures.items():
        for arm, by_segment in arms.items():
            whole = arm_total(by_segment)
            total += whole.people
            counts[(str(side), arm, "people")] = whole.people
            counts[(str(side), arm, "responders")] = whole.responders
            if dimension is not None and dimension.member == side:
                for segment, truth in by_segment.items():
                    counts[(str(side), arm, segment, "people")] = truth.people
                    counts[(str(side), arm, segment, "responders")] = truth.responders
    counts[("total",)] = total
    return counts


async def _differencing(
    session: AsyncSession,
    partnership: Partnership,
    question: str,
    counts: dict[CountKey, int],
    history: int,
) -> PrivacyRefusal | None:
    earlier = await session.execute(
        select(OverlapQuery.total, OverlapQuery.cells)
        .where(
            OverlapQuery.partnership_id == partnership.id,
            OverlapQuery.purpose == PURPOSE,
            OverlapQuery.breakdown == question,
        )
        .order_by(OverlapQuery.id.desc())
        .limit(history)
    )
    current = {k: v for k, v in counts.items() if k != ("total",)}
    for previous_total, previous_cells in earlier:
        previous = {tuple(row[:-1]): int(row[-1]) for row in previous_cells}
        reason = rules.differencing_violation(
            previous, int(previous_total), current, counts[("total",)], partnership.min_audience
        )
        if reason is not None:
            return PrivacyRefusal(
                f"Refused: {reason}. Answering would let the difference between two "
                "results reads single out a few people.",
                fix="Read the results again once at least min_audience more people have "
                "responded (or the arms changed by as many); the last answer stays valid.",
            )
    return None


def _arm_out(arm: ArmRelease) -> ArmOut:
    return ArmOut(
        people=arm.people,
        responders=arm.responders,
        points=arm.points,
        amount_minor=arm.amount_minor,
        response_rate=arm.response_rate,
        suppressed=arm.suppressed,
    )


def _lift_out(release: Release) -> LiftOut:
    measured = release.lift
    if measured is None:
        return LiftOut(None, None, None, None, None, True)
    return LiftOut(
        absolute=measured.absolute,
        absolute_ci=list(measured.absolute_ci),
        relative=measured.relative,
        relative_ci=list(measured.relative_ci) if measured.relative_ci else None,
        p_value=measured.p_value,
        suppressed=False,
    )


def _release_sides(
    figures: dict[UUID, Figures],
    dimension: Dimension | None,
    caller: UUID | None,
    minimum: int,
    noise: ResultsNoise,
) -> list[SideResultOut]:
    sides = []
    for side, arms in figures.items():
        treated = release_arm(arm_total(arms[TREATED]), minimum, noise)
        control = release_arm(arm_total(arms[CONTROL]), minimum, noise)
        release = with_lift(treated, control, noise)
        out = SideResultOut(
            partner_id=side,
            treated=_arm_out(treated),
            control=_arm_out(control),
            lift=_lift_out(release),
        )
        if dimension is not None and dimension.member == side:
            out.segments = _segments(arms, dimension, caller, minimum, noise)
        sides.append(out)
    return sides


def _segments(
    arms: Figures,
    dimension: Dimension,
    caller: UUID | None,
    minimum: int,
    noise: ResultsNoise,
) -> list[SegmentResultOut]:
    keys: Sequence[str | None] = sorted(
        {*arms[TREATED], *arms[CONTROL]}, key=lambda v: (v is None, v or "")
    )
    treated = release_segments(arms[TREATED], minimum, noise)
    control = release_segments(arms[CONTROL], minimum, noise)
    name = f"{'self' if caller else dimension.member}.{dimension.attribute}"
    hidden = ArmRelease(None, None, None, None)
    out = []
    for key in keys:
        release = with_lift(treated.get(key, hidden), control.get(key, hidden), noise)
        out.append(
            SegmentResultOut(
                values={name: key},
                treated=_arm_out(release.treated),
                control=_arm_out(release.control),
                lift=_lift_out(release),
            )
        )
    return out


def _read_event(
    actor: Actor,
    offer: Offer,
    partnership: Partnership,
    epsilon: float,
    served_again: bool,
    params: dict[str, Any],
) -> Any:
    return actor.event(
        "offer.results_read",
        "offer",
        str(offer.id),
        concerns=[m.partner_id for m in partnership.members],
        epsilon=epsilon,
        served_again=served_again,
        **params,
    )


def _refused_event(
    actor: Actor,
    offer: Offer,
    partnership: Partnership,
    refusal: HubError,
    params: dict[str, Any],
) -> Any:
    return actor.event(
        "offer.results_refused",
        "offer",
        str(offer.id),
        concerns=[m.partner_id for m in partnership.members],
        reason=refusal.slug,
        **params,
    )
