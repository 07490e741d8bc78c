"""Overlap questions: who may ask what, computing the true answer, and the privacy rules.

A question is (partnership, purpose, breakdown). Its true answer comes from the engine on both
members' current arrays; what is shown comes from :mod:`matching.rules` (threshold,
complementary suppression, optional noise). Before anything is shown, in one short transaction
that holds the partnership's row lock (so two concurrent questions cannot both spend the last of
a budget): the budget of the period is checked, the answer is compared with every earlier answer
of the same question (differencing), and the answer is recorded. Refusals and answers alike go
to the audit log with the question's parameters, never with counts.

:func:`answer_question` is that decision, for any asker: the admin's matrix
(:mod:`matching.matrix`) answers a partnership's pair through it too, so a partnership has one
budget and one differencing history whoever asks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol
from uuid import UUID

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from hub.core.audit import Actor, AuditEvent, append
from hub.core.db import writing
from hub.core.errors import Conflict, HubError, InvalidInput, TooManyRequests
from matching import engine, rules
from matching.loader import ArrayCache, Loaded
from matching.models import OverlapQuery
from partners.identifiers.models import CONSENT_BITS
from partners.partnerships.models import ACTIVE, Partnership
from partners.partnerships.service import PartnershipService, budget_of

Which = Literal["a", "b"]


class PrivacyRefusal(HubError):
    """A question the privacy rules do not answer (its parameters are fine)."""

    status, slug, title = 422, "privacy-refusal", "Refused by a privacy rule"
    fix = (
        "Ask a broader question (no breakdown, or a coarser attribute), or wait until the "
        "data has changed by at least the partnership's min_audience people."
    )


class MatchingSettingsLike(Protocol):
    dask_scheduler: str
    partition_bits: int
    max_breakdown_answers: int


@dataclass(frozen=True, slots=True)
class Dimension:
    member: UUID  # whose attribute
    attribute: str

    def canonical(self) -> str:
        return f"{self.member}.{self.attribute}"


@dataclass(frozen=True, slots=True)
class Cell:
    values: dict[str, str | None]
    count: int | None
    suppressed: bool


@dataclass(frozen=True, slots=True)
class OverlapAnswer:
    purpose: str
    count: int | None
    suppressed: bool
    min_audience: int
    noise: bool
    breakdown: list[Cell] | None


def parse_breakdown(
    by: str | None, partnership: Partnership, caller: UUID | None
) -> list[Dimension]:
    """``self.tier``, ``partner.city`` (members), or ``<member id>.<attribute>`` (anyone)."""
    if not by:
        return []
    members = [m.partner_id for m in partnership.members]
    dims: list[Dimension] = []
    for part in by.split(","):
        side, dot, attribute = part.strip().partition(".")
        if not dot or not attribute:
            raise InvalidInput(
                f"by={part!r} is not of the form <side>.<attribute>.",
                fix="Use self.<attribute>, partner.<attribute>, or one of each, comma separated.",
            )
        if side in ("self", "partner"):
            if caller is None:
                raise InvalidInput(
                    "self and partner are relative to a member; an admin names the member.",
                    fix="Use <member partner id>.<attribute>.",
                )
            other = next(m for m in members if m != caller)
            member = caller if side == "self" else other
        else:
            try:
                member = UUID(side)
            except ValueError:
                member = UUID(int=0)
            if member not in members:
                raise InvalidInput(
                    f"{side!r} is neither self, partner nor a member of this partnership.",
                    fix="Use self.<attribute>, partner.<attribute> or <member id>.<attribute>.",
                )
        dims.append(Dimension(member, attribute))
    if len(dims) > 2 or (len(dims) == 2 and dims[0].member == dims[1].member):
        raise InvalidInput(
            "A breakdown has one attribute, or two: one of each member.",
            fix="Use by=self.<attribute>, by=partner.<attribute>, or one of each.",
        )
    return dims


def _which(partnership: Partnership, member: UUID) -> Which:
    return "a" if partnership.members[0].partner_id == member else "b"


def check_attribute(loaded: Loaded, dimension: Dimension) -> None:
    if dimension.attribute in loaded.over_quota:
        raise InvalidInput(
            f"Attribute {dimension.attribute!r} has more than 100 distinct values, which the "
            "coalition does not allow in breakdowns.",
            fix="Upload a coarser attribute (at most 100 values) and break down by that.",
        )
    if dimension.attribute not in loaded.side.attributes:
        raise InvalidInput(
            f"No record of partner {dimension.member} has the attribute {dimension.attribute!r}.",
            fix="Break down by an attribute the partner's records carry.",
        )


def _refused(
    actor: Actor, partnership: Partnership, refusal: HubError, params: dict[str, Any]
) -> AuditEvent:
    return actor.event(
        "overlap.refused",
        "partnership",
        str(partnership.id),
        concerns=(m.partner_id for m in partnership.members),
        reason=refusal.slug,
        **params,
    )


def _cells_json(cells: dict[tuple[str | None, ...], int]) -> list[Any]:
    return [[*key, count] for key, count in sorted(cells.items(), key=lambda kv: repr(kv[0]))]


def _cells_from_json(rows: list[Any]) -> dict[tuple[str | None, ...], int]:
    return {tuple(row[:-1]): int(row[-1]) for row in rows}


class OverlapService:
    def __init__(
        self,
        session_maker: async_sessionmaker[AsyncSession],
        arrays: ArrayCache,
        settings: MatchingSettingsLike,
        *,
        noise: rules.NoiseMechanism | None = None,
    ) -> None:
        self.session_maker = session_maker
        self.arrays = arrays
        self.settings = settings
        # OpenDP's discrete Laplace; tests put a stub here (OpenDP cannot be seeded).
        self.noise: rules.NoiseMechanism = noise or rules.default_noise()

    async def groups(self, a: Loaded, b: Loaded, mask: int) -> engine.Groups:
        """The engine's groups, on the Dask cluster when one is configured."""
        if self.settings.dask_scheduler:
            from matching.cluster import match_on_cluster

            return await match_on_cluster(
                self.settings.dask_scheduler, a.side, b.side, mask, self.settings.partition_bits
            )
        # Off the event loop: the kernels release the GIL, other requests go on meanwhile.
        return await asyncio.to_thread(engine.match, a.side, b.side, mask)

    async def ask(
        self,
        session: AsyncSession,
        partnership_id: UUID,
        caller: UUID | None,
        purpose: str,
        by: str | None,
        actor: Actor,
    ) -> OverlapAnswer:
        partnership = await PartnershipService(session).get_for(partnership_id, caller)
        params = {"purpose": purpose, "by": by or ""}
        try:
            dims = self._question(partnership, caller, purpose, by)
        except HubError as refusal:
            await self._audit_refusal(partnership, refusal, actor, params)
            raise
        a_id, b_id = (m.partner_id for m in partnership.members)
        # The request's session was only needed to find the partnership: ended here (nothing
        # was written; the sessions keep what they loaded), its connection goes back to the
        # pool while the arrays load or wait for a patch and the engine runs, rather than sit
        # idle for the whole question (the soak's day N ran out of pooled connections).
        await session.commit()
        a, b = await asyncio.gather(self.arrays.get(a_id), self.arrays.get(b_id))
        try:
            for dim in dims:
                check_attribute(a if dim.member == a_id else b, dim)
        except HubError as refusal:
            await self._audit_refusal(partnership, refusal, actor, params)
            raise
        groups = await self.groups(a, b, CONSENT_BITS[purpose])
        total = groups.count
        cells: dict[tuple[str | None, ...], int] | None = None
        if dims:
            spec = [(_which(partnership, d.member), d.attribute) for d in dims]
            cells = await asyncio.to_thread(engine.breakdown, groups, a.side, b.side, spec)
        canonical = ",".join(d.canonical() for d in dims)
        return await self._decide(
            partnership, caller, purpose, canonical, total, cells, dims, actor, params
        )

    @staticmethod
    def _question(
        partnership: Partnership, caller: UUID | None, purpose: str, by: str | None
    ) -> list[Dimension]:
        """The breakdown asked for, once the partnership may answer the purpose at all."""
        if partnership.status != ACTIVE:
            raise Conflict(
                f"Partnership {partnership.id} is {partnership.status}; overlaps are answered "
                "for active partnerships only.",
                fix="Ask once both members have accepted and the partnership is active.",
            )
        if purpose not in CONSENT_BITS or purpose not in partnership.purposes:
            raise InvalidInput(
                f"The partnership does not allow the purpose {purpose!r}.",
                errors=[{"index": 0, "field": "purpose", "reason": "not allowed"}],
                fix=f"Use one of its purposes: {', '.join(partnership.purposes)}.",
            )
        return parse_breakdown(by, partnership, caller)

    async def _audit_refusal(
        self, partnership: Partnership, refusal: HubError, actor: Actor, params: dict[str, Any]
    ) -> None:
        with writing():
            async with self.session_maker() as session, session.begin():
                await append(session, _refused(actor, partnership, refusal, params))

    async def _decide(
        self,
        partnership: Partnership,
        caller: UUID | None,
        purpose: str,
        canonical: str,
        total: int,
        cells: dict[tuple[str | None, ...], int] | None,
        dims: Sequence[Dimension],
        actor: Actor,
        params: dict[str, Any],
    ) -> OverlapAnswer:
        epsilon = partnership.epsilon
        refusal: HubError | None = None
        with writing():
            async with self.session_maker() as session, session.begin():
                await lock_partnerships(session, [partnership.id])
                try:
                    shown = await answer_question(
                        session,
                        partnership,
                        Question(caller, purpose, canonical, total, cells),
                        self.noise,
                        self.settings.max_breakdown_answers,
                    )
                except HubError as refused:
                    refusal = refused
                    await append(session, _refused(actor, partnership, refusal, params))
                else:
                    await append(
                        session,
                        actor.event(
                            "overlap.answered",
                            "partnership",
                            str(partnership.id),
                            concerns=(m.partner_id for m in partnership.members),
                            suppressed=shown.total.suppressed,
                            epsilon=epsilon,
                            **params,
                        ),
                    )
        if refusal is not None:
            raise refusal
        names = [
            ("self" if d.member == caller else "partner") if caller else str(d.member) for d in dims
        ]
        names = [f"{n}.{d.attribute}" for n, d in zip(names, dims, strict=True)]
        return OverlapAnswer(
            purpose=purpose,
            count=shown.total.count,
            suppressed=shown.total.suppressed,
            min_audience=partnership.min_audience,
            noise=epsilon is not None,
            breakdown=None
            if cells is None
            else [
                Cell(dict(zip(names, key, strict=True)), s.count, s.suppressed)
                for key, s in shown.cells
            ],
        )


@dataclass(frozen=True, slots=True)
class Question:
    """A question with its TRUE answer: who asks (None: an admin), the purpose, the breakdown
    in member terms ("" for none), the total and the breakdown's cells."""

    caller: UUID | None
    purpose: str
    breakdown: str
    total: int
    cells: dict[tuple[str | None, ...], int] | None = None


async def lock_partnerships(session: AsyncSession, ids: Sequence[UUID]) -> None:
    """Lock the partnerships' rows, in id order (two answers never wait on each other in a
    circle), so two concurrent answers cannot both spend the last of a budget."""
    if ids:
        await session.execute(
            select(Partnership.id)
            .where(Partnership.id.in_(ids))
            .order_by(Partnership.id)
            .with_for_update()
        )


async def answer_question(
    session: AsyncSession,
    partnership: Partnership,
    question: Question,
    noise: rules.NoiseMechanism,
    history: int,
) -> rules.Answer:
    """Answer ``question`` as ``partnership``'s rules say, or raise the refusal.

    Runs in the caller's transaction, which holds the partnership's row lock
    (:func:`lock_partnerships`): the budget of the period is checked, the answer is compared
    with the last ``history`` answers of the same question (differencing), then it is
    published (threshold, suppression, noise) and recorded with the epsilon it spent. Every
    answer that noises, whoever asks it, draws on this one budget.
    """
    epsilon = partnership.epsilon
    if epsilon is not None and (spent := await budget_refusal(session, partnership, epsilon)):
        raise spent
    if refusal := await differencing_refusal(session, partnership, question, history):
        raise refusal
    shown = rules.answer(
        question.total, question.cells, partnership.min_audience, epsilon=epsilon, noise=noise
    )
    session.add(
        OverlapQuery(
            partnership_id=partnership.id,
            partner_id=question.caller,
            purpose=question.purpose,
            breakdown=question.breakdown,
            epsilon=epsilon or 0.0,
            total=question.total,
            cells=_cells_json(question.cells or {}),
        )
    )
    return shown


async def budget_refusal(
    session: AsyncSession, partnership: Partnership, epsilon: float
) -> TooManyRequests | None:
    """A 429 with the renewal time when ``epsilon`` does not fit in what is left."""
    budget = await budget_status(session, partnership)
    if budget is None or budget.budget.can_spend(epsilon):
        return None
    seconds = int((budget.renews_at - datetime.now(UTC)).total_seconds()) + 1
    return TooManyRequests(
        f"The partnership's privacy budget for this {partnership.budget_period} is spent "
        f"({budget.budget.spent:g} of {budget.budget.total:g}); it renews at "
        f"{budget.renews_at.isoformat()}.",
        retry_after=seconds,
        renews_at=budget.renews_at.isoformat(),
        fix="Wait until the budget renews (Retry-After), or ask the coalition admin for a "
        "larger epsilon_budget.",
    )


async def differencing_refusal(
    session: AsyncSession, partnership: Partnership, question: Question, history: int
) -> PrivacyRefusal | None:
    """A refusal when the answer differs from an earlier answer of the same question (the
    same partnership, purpose and breakdown, whoever asked) by fewer than min_audience."""
    earlier = await session.execute(
        select(OverlapQuery.total, OverlapQuery.cells)
        .where(
            OverlapQuery.partnership_id == partnership.id,
            OverlapQuery.purpose == question.purpose,
            OverlapQuery.breakdown == question.breakdown,
        )
        .order_by(OverlapQuery.id.desc())
        .limit(history)
    )
    minimum = partnership.min_audience
    for previous_total, previous_cells in earlier:
        if question.total < minimum and previous_total < minimum:
            continue  # both wholly suppressed: neither answer shows a number
        reason = rules.differencing_violation(
            _cells_from_json(previous_cells),
            int(previous_total),
            question.cells or {},
            question.total,
            minimum,
        )
        if reason is not None:
            return PrivacyRefusal(
                f"Refused: {reason}. Answering would let the difference between two "
                "answers single out a few people.",
            )
    return None


@dataclass(frozen=True, slots=True)
class BudgetStatus:
    budget: rules.Budget
    period: str
    period_start: datetime
    renews_at: datetime
    queries: int


async def budget_status(session: AsyncSession, partnership: Partnership) -> BudgetStatus | None:
    """What the partnership's questions have spent in the current period (None: no noise)."""
    total = budget_of(partnership)
    if total is None:
        return None
    start, end = rules.period_bounds(datetime.now(UTC), partnership.budget_period)  # type: ignore[arg-type]
    row = (
        await session.execute(
            select(func.coalesce(func.sum(OverlapQuery.epsilon), 0.0), func.count()).where(
                OverlapQuery.partnership_id == partnership.id,
                OverlapQuery.answered_at >= start,
                OverlapQuery.answered_at < end,
                OverlapQuery.epsilon > 0,
            )
        )
    ).one()
    return BudgetStatus(
        budget=rules.Budget(total=total, spent=float(row[0])),
        period=partnership.budget_period,
        period_start=start,
        renews_at=end,
        queries=int(row[1]),
    )
