"""What a partnership's page shows beyond its terms: its overlap and its offers.

The overlap shown is the matrix's stored answer for the pair, per purpose, never a new one: a
page view spends no epsilon (DESIGN.md "Matching semantics"). An answer decided on older data
is marked stale and refreshed from the matrix, where a refresh says that it spends. The log
of answered questions is listed without its counts: ``overlap_queries.total`` is the true
count (kept for differencing), which a noisy partnership never discloses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from matching.matrix import data_versions
from matching.matrix_answers import PairAnswer, Terms, decided_on, pair_of, recalled
from matching.models import MatrixAnswer, Offer, OverlapQuery
from matching.offers import status_of
from partners.partnerships.models import Partnership

RECENT_QUESTIONS = 10


@dataclass(frozen=True, slots=True)
class PurposeOverlap:
    """The stored answer for one purpose (``answer`` None: the matrix never answered it)."""

    purpose: str
    answer: PairAnswer | None


@dataclass(frozen=True, slots=True)
class Question:
    """An answered overlap question, without its counts."""

    answered_at: datetime
    asked_by: UUID | None  # None: an admin (the matrix)
    purpose: str
    breakdown: list[tuple[UUID | None, str]]  # (member, attribute) per dimension
    epsilon: float


@dataclass(frozen=True, slots=True)
class OfferLine:
    offer: Offer
    status: str
    audience: dict[UUID, int]


async def stored_overlap(
    session: AsyncSession, partnership: Partnership, default_min_audience: int
) -> list[PurposeOverlap]:
    """The matrix's stored answer under this partnership's rules, per purpose it allows."""
    members = [m.partner_id for m in partnership.members]
    if len(members) != 2:
        return []
    low, high = pair_of(members[0], members[1])
    kept = {
        row.purpose: row
        for row in await session.scalars(
            select(MatrixAnswer).where(
                MatrixAnswer.partner_low == low,
                MatrixAnswer.partner_high == high,
                MatrixAnswer.partnership_id == partnership.id,
            )
        )
    }
    versions = await data_versions(session, [low, high])
    now = (versions[low], versions[high])
    terms = Terms.of(partnership, default_min_audience)
    return [
        PurposeOverlap(
            purpose,
            None
            if purpose not in kept
            else recalled(kept[purpose], stale=not decided_on(kept[purpose], terms, now)),
        )
        for purpose in partnership.purposes
    ]


async def recent_questions(session: AsyncSession, partnership_id: UUID) -> list[Question]:
    rows = await session.scalars(
        select(OverlapQuery)
        .where(OverlapQuery.partnership_id == partnership_id)
        .order_by(OverlapQuery.answered_at.desc(), OverlapQuery.id.desc())
        .limit(RECENT_QUESTIONS)
    )
    return [
        Question(q.answered_at, q.partner_id, q.purpose, _dimensions(q.breakdown), q.epsilon)
        for q in rows
    ]


async def offer_lines(session: AsyncSession, partnership_id: UUID) -> list[OfferLine]:
    offers: Sequence[Offer] = (
        await session.scalars(
            select(Offer)
            .where(Offer.partnership_id == partnership_id)
            .order_by(Offer.created_at.desc())
        )
    ).all()
    return [
        OfferLine(o, status_of(o), {UUID(k): v for k, v in o.audience_sizes.items()})
        for o in offers
    ]


def _dimensions(breakdown: str) -> list[tuple[UUID | None, str]]:
    """``"<member uuid>.<attribute>,…"`` as (member, attribute) pairs."""
    found: list[tuple[UUID | None, str]] = []
    for part in filter(None, breakdown.split(",")):
        member, _, attribute = part.partition(".")
        try:
            found.append((UUID(member), attribute))
        except ValueError:
            found.append((None, part))
    return found
