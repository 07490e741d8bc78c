"""The admin matrix's stored answers: one per pair of partners and purpose, with the data
versions of both sides and the terms it was decided under (:mod:`matching.matrix` decides;
this module keeps and recalls).

An answer decided on the pair's current data versions under the same terms is served again as
it is, spending nothing. A refusal is kept too, so that a view that does not spend can say why
the last answer was refused, but it is never served as an answer.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from sqlalchemy import Select, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from hub.core.db import dialect_insert
from matching.models import MatrixAnswer
from partners.partnerships.models import Partnership

Pair = tuple[UUID, UUID]  # smaller partner id first
Versions = tuple[int, int]  # identifier_state.version of the pair's two sides, in pair order
ANSWERS = MatrixAnswer.__table__

PAIRS_PER_QUERY = 1000


def pair_of(a: UUID, b: UUID) -> Pair:
    return (a, b) if a < b else (b, a)


@dataclass(frozen=True, slots=True)
class PairAnswer:
    """What the matrix shows for a pair (both of its cells show the same)."""

    count: int | None
    suppressed: bool
    min_audience: int
    partnership_id: UUID | None
    noise: bool
    answered_at: datetime | None = None
    refused: str | None = None  # a reason code: purpose-not-allowed, budget-exhausted, ...
    reason: str | None = None  # the same, said for a person
    stale: bool = False  # a view that did not spend: the data changed since answered_at


@dataclass(frozen=True, slots=True)
class Terms:
    """The rules a pair is answered under: its partnership's, or the coalition default."""

    partnership_id: UUID | None
    min_audience: int
    epsilon: float | None

    @classmethod
    def of(cls, partnership: Partnership | None, default_min_audience: int) -> Terms:
        if partnership is None:
            return cls(None, default_min_audience, None)
        return cls(partnership.id, partnership.min_audience, partnership.epsilon)


async def stored_answers(
    session: AsyncSession, purpose: str, pairs: Iterable[Pair] | None = None
) -> dict[Pair, MatrixAnswer]:
    """The stored answers for ``purpose`` (of ``pairs`` only, when given)."""
    stmt = select(MatrixAnswer).where(MatrixAnswer.purpose == purpose)
    if pairs is None:
        return await _answers(session, stmt)
    wanted = list(pairs)
    found: dict[Pair, MatrixAnswer] = {}
    # A few hundred partners make tens of thousands of pairs: one row-value IN list that long
    # exceeds PostgreSQL's stack depth (StatementTooComplex). Ask in slices.
    for start in range(0, len(wanted), PAIRS_PER_QUERY):
        pair_key = tuple_(MatrixAnswer.partner_low, MatrixAnswer.partner_high)
        chunk = stmt.where(pair_key.in_(wanted[start : start + PAIRS_PER_QUERY]))
        found.update(await _answers(session, chunk))
    return found


async def _answers(session: AsyncSession, stmt: Select[MatrixAnswer]) -> dict[Pair, MatrixAnswer]:
    rows = await session.scalars(stmt.execution_options(populate_existing=True))
    return {(row.partner_low, row.partner_high): row for row in rows}


def decided_on(kept: MatrixAnswer, terms: Terms, versions: Versions) -> bool:
    """Whether ``kept`` was decided on these data versions under these terms."""
    return (kept.low_version, kept.high_version) == versions and Terms(
        kept.partnership_id, kept.min_audience, kept.epsilon
    ) == terms


def servable(kept: MatrixAnswer | None, terms: Terms, versions: Versions) -> bool:
    """Whether ``kept`` may be served again, free: an answer, not a refusal, decided on these
    data versions under these terms."""
    return kept is not None and kept.refused is None and decided_on(kept, terms, versions)


def recalled(kept: MatrixAnswer, *, stale: bool = False) -> PairAnswer:
    """A stored answer or refusal as the matrix shows it."""
    return PairAnswer(
        count=kept.count,
        suppressed=kept.count is None and kept.refused is None,
        min_audience=kept.min_audience,
        partnership_id=kept.partnership_id,
        noise=kept.epsilon is not None,
        answered_at=kept.answered_at,
        refused=kept.refused,
        reason=kept.reason,
        stale=stale,
    )


async def store(
    session: AsyncSession,
    purpose: str,
    pair: Pair,
    versions: Versions,
    terms: Terms,
    answer: PairAnswer,
) -> PairAnswer:
    """Keep the answer (or refusal) for this pair and versions, replacing the older one."""
    row = {
        "purpose": purpose,
        "partner_low": pair[0],
        "partner_high": pair[1],
        "low_version": versions[0],
        "high_version": versions[1],
        "partnership_id": terms.partnership_id,
        "min_audience": terms.min_audience,
        "epsilon": terms.epsilon,
        "count": answer.count,
        "refused": answer.refused,
        "reason": answer.reason,
        "answered_at": answer.answered_at,
    }
    statement = dialect_insert(session, ANSWERS).values(**row)
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=["purpose", "partner_low", "partner_high"],
            set_={k: statement.excluded[k] for k in row if k != "purpose"},
        )
    )
    return answer
