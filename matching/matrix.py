"""The coalition admin's overlap matrix: every pair of active partners, under the pair's rules.

An admin view is never a way around a partnership's rules (DESIGN.md "Matching semantics"):

* A pair that has, or ever had, a partnership (proposed, active, suspended or ended) is
  answered exactly as that partnership answers its total overlap for the purpose: its
  ``min_audience``, its ``epsilon`` noise spent from its one budget, and differencing against
  every earlier answer of the same question, the members' included (the matrix asks the
  question "<partnership>, <purpose>, no breakdown", as a member does). A purpose the
  partnership does not allow, an empty budget or a differencing refusal marks the cell
  refused, with the reason. When a pair had several partnerships, the open one governs (there
  is at most one), else the most recently created.
* Only a pair that never had a partnership is answered with the coalition's default
  threshold, counting people who carry ``analytics`` consent (and the purpose's) on both
  sides, without noise.

Answers are stored (:class:`~matching.models.MatrixAnswer`) with the data version of both
sides (``identifier_state.version``, which every upload, consent change, erasure and
re-keying raises) and the partnership whose rules they followed. While neither version moves,
the stored answer is served again, free: the same noisy number, no epsilon spent, no new
differencing entry. Only a changed version spends again. A view that must not spend (the
console's page, ``spend=False``) shows the stored answer of a noisy pair whose data changed as
stale, and answers it only when asked to refresh, so page views cannot drain a budget.
Refusals are stored too, so that such a view can say why the last refresh was refused, but
they are never served as answers: the next read that may spend decides afresh (a budget may
have renewed meanwhile).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from sqlalchemy import select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from hub.core.audit import Actor, append
from hub.core.db import dialect_insert, writing
from hub.core.errors import HubError, TooManyRequests
from matching import engine, rules
from matching.loader import Loaded
from matching.models import MatrixAnswer
from matching.overlap import (
    OverlapService,
    PrivacyRefusal,
    Question,
    answer_question,
    lock_partnerships,
)
from partners.identifiers.models import CONSENT_BITS, IdentifierState
from partners.partners.models import ACTIVE as PARTNER_ACTIVE
from partners.partners.models import Partner
from partners.partnerships.models import ENDED, Partnership

Pair = tuple[UUID, UUID]  # smaller partner id first
ANSWERS = MatrixAnswer.__table__

PURPOSE_NOT_ALLOWED = "purpose-not-allowed"
BUDGET_EXHAUSTED = "budget-exhausted"
DIFFERENCING = "differencing"


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
class MatrixCell:
    a: UUID
    b: UUID
    answer: PairAnswer


@dataclass(frozen=True, slots=True)
class Matrix:
    purpose: str
    partners: list[tuple[UUID, str]]
    cells: list[MatrixCell]


def pair_of(a: UUID, b: UUID) -> Pair:
    return (a, b) if a < b else (b, a)


async def overlap_matrix(
    service: OverlapService,
    purpose: str,
    default_min_audience: int,
    actor: Actor,
    *,
    spend: bool = True,
) -> Matrix:
    """Every pair of active partners for ``purpose`` (the diagonal is not an overlap).

    Pairs whose stored answer is current are served from it; the others are answered now,
    except, when ``spend`` is false, the noisy ones: they show what is known without
    spending (:func:`_last_known`).
    """
    async with service.session_maker() as session:
        partners = [
            (p.id, p.name)
            for p in await session.scalars(
                select(Partner).where(Partner.status == PARTNER_ACTIVE).order_by(Partner.name)
            )
        ]
        ids = [pid for pid, _ in partners]
        governing = await governing_partnerships(session, ids)
        versions = await data_versions(session, ids)
        stored = await stored_answers(session, purpose, None)
    answers: dict[Pair, PairAnswer] = {}
    due: list[Pair] = []
    for i, a in enumerate(ids):
        for b in ids[i + 1 :]:
            pair = pair_of(a, b)
            partnership = governing.get(pair)
            kept = stored.get(pair)
            now = (versions[pair[0]], versions[pair[1]])
            if partnership is not None and purpose not in partnership.purposes:
                answers[pair] = _not_allowed(partnership, purpose)
            elif kept is not None and _is_current(kept, partnership, default_min_audience, now):
                answers[pair] = _from_stored(kept)
            elif not spend and partnership is not None and partnership.epsilon is not None:
                answers[pair] = _last_known(kept, partnership, now)
            else:
                due.append(pair)
    if due:
        answers.update(await _answer(service, purpose, due, governing, default_min_audience, actor))
    await _audit_matrix(service, actor, purpose, len(partners), answers, answered=len(due))
    cells = [MatrixCell(a, b, answers[pair_of(a, b)]) for a in ids for b in ids if a != b]
    return Matrix(purpose, partners, cells)


async def governing_partnerships(
    session: AsyncSession, ids: Sequence[UUID]
) -> dict[Pair, Partnership]:
    """The partnership whose rules govern each pair of ``ids`` that ever had one."""
    wanted = set(ids)
    found: dict[Pair, Partnership] = {}
    for partnership in await session.scalars(select(Partnership).order_by(Partnership.created_at)):
        members = [m.partner_id for m in partnership.members]
        if len(members) != 2 or not set(members) <= wanted:
            continue
        pair = pair_of(members[0], members[1])
        held = found.get(pair)
        # Later partnerships replace earlier ones, but an open one is never replaced by an
        # ended one (a pair has at most one open partnership).
        if held is None or held.status == ENDED or partnership.status != ENDED:
            found[pair] = partnership
    return found


async def data_versions(session: AsyncSession, ids: Sequence[UUID]) -> dict[UUID, int]:
    """Each partner's identifier version (0 before its first record)."""
    versions = dict.fromkeys(ids, 0)
    rows = await session.execute(
        select(IdentifierState.partner_id, IdentifierState.version).where(
            IdentifierState.partner_id.in_(ids)
        )
    )
    versions.update({UUID(str(pid)): int(version) for pid, version in rows})
    return versions


async def stored_answers(
    session: AsyncSession, purpose: str, pairs: Iterable[Pair] | None
) -> dict[Pair, MatrixAnswer]:
    stmt = select(MatrixAnswer).where(MatrixAnswer.purpose == purpose)
    if pairs is not None:
        stmt = stmt.where(
            tuple_(MatrixAnswer.partner_low, MatrixAnswer.partner_high).in_(list(pairs))
        )
    rows = await session.scalars(stmt.execution_options(populate_existing=True))
    return {(row.partner_low, row.partner_high): row for row in rows}


def _terms(partnership: Partnership | None, default_min_audience: int) -> tuple[Any, ...]:
    if partnership is None:
        return (None, default_min_audience, None)
    return (partnership.id, partnership.min_audience, partnership.epsilon)


def _answered_on(
    kept: MatrixAnswer,
    partnership: Partnership | None,
    default_min_audience: int,
    versions: tuple[int, int],
) -> bool:
    """Whether ``kept`` was decided on these data versions under the same rules."""
    return (kept.low_version, kept.high_version) == versions and (
        kept.partnership_id,
        kept.min_audience,
        kept.epsilon,
    ) == _terms(partnership, default_min_audience)


def _is_current(
    kept: MatrixAnswer,
    partnership: Partnership | None,
    default_min_audience: int,
    versions: tuple[int, int],
) -> bool:
    """Whether ``kept`` may be served again, free: an answer (not a refusal) decided on these
    data versions under the same rules."""
    return kept.refused is None and _answered_on(kept, partnership, default_min_audience, versions)


def _from_stored(kept: MatrixAnswer, *, stale: bool = False) -> PairAnswer:
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


def _last_known(
    kept: MatrixAnswer | None, partnership: Partnership, versions: tuple[int, int]
) -> PairAnswer:
    """A noisy pair not answered for its current data, in a view that does not spend: the
    refusal decided on this data, else its last answer (stale), else nothing yet (stale)."""
    if kept is not None and kept.partnership_id == partnership.id:
        # (a partnership's terms do not depend on the coalition default: 0 stands in for it)
        if kept.refused is not None and _answered_on(kept, partnership, 0, versions):
            return _from_stored(kept)
        if kept.refused is None:
            return _from_stored(kept, stale=True)
    return PairAnswer(
        count=None,
        suppressed=False,
        min_audience=partnership.min_audience,
        partnership_id=partnership.id,
        noise=True,
        stale=True,
    )


def _not_allowed(partnership: Partnership, purpose: str) -> PairAnswer:
    return _refused(
        partnership,
        PURPOSE_NOT_ALLOWED,
        f"Partnership {partnership.id} ({partnership.status}) does not allow the purpose "
        f"{purpose!r}.",
    )


def _refused(
    partnership: Partnership, code: str, reason: str, *, at: datetime | None = None
) -> PairAnswer:
    return PairAnswer(
        count=None,
        suppressed=False,
        min_audience=partnership.min_audience,
        partnership_id=partnership.id,
        noise=partnership.epsilon is not None,
        answered_at=at,
        refused=code,
        reason=reason,
    )


def _refusal_code(refusal: HubError) -> str:
    if isinstance(refusal, TooManyRequests):
        return BUDGET_EXHAUSTED
    if isinstance(refusal, PrivacyRefusal):
        return DIFFERENCING
    return refusal.slug


async def _true_counts(
    service: OverlapService,
    purpose: str,
    due: Sequence[Pair],
    governing: Mapping[Pair, Partnership],
) -> tuple[dict[UUID, Loaded], dict[Pair, int]]:
    """The partners' arrays and the TRUE overlap of every pair due for an answer."""
    needed = sorted({pid for pair in due for pid in pair})
    loaded = dict(
        zip(needed, await asyncio.gather(*(service.arrays.get(p) for p in needed)), strict=True)
    )
    # A partnership counts as it would for its members; other pairs need analytics consent.
    bare = CONSENT_BITS["analytics"] | CONSENT_BITS[purpose]

    def count_all() -> dict[Pair, int]:
        return {
            pair: engine.overlap(
                loaded[pair[0]].side,
                loaded[pair[1]].side,
                CONSENT_BITS[purpose] if pair in governing else bare,
            )
            for pair in due
        }

    return loaded, await asyncio.to_thread(count_all)


async def _answer(
    service: OverlapService,
    purpose: str,
    due: Sequence[Pair],
    governing: Mapping[Pair, Partnership],
    default_min_audience: int,
    actor: Actor,
) -> dict[Pair, PairAnswer]:
    """Answer the pairs ``due`` and store what was answered, in one transaction holding the
    governing partnerships' row locks (two concurrent matrices cannot spend twice for one
    version: the second finds the first one's answer stored)."""
    loaded, counts = await _true_counts(service, purpose, due, governing)
    answers: dict[Pair, PairAnswer] = {}
    with writing():
        async with service.session_maker() as session, session.begin():
            governed = sorted({governing[pair].id for pair in due if pair in governing})
            await lock_partnerships(session, governed)
            partnerships = {
                p.id: p
                for p in await session.scalars(
                    select(Partnership)
                    .where(Partnership.id.in_(governed))
                    .execution_options(populate_existing=True)
                )
            }
            kept = await stored_answers(session, purpose, due)
            for pair in due:
                governing_one = governing.get(pair)
                partnership = partnerships[governing_one.id] if governing_one else None
                versions = (loaded[pair[0]].version, loaded[pair[1]].version)
                previous = kept.get(pair)
                if previous is not None and _is_current(
                    previous, partnership, default_min_audience, versions
                ):
                    answers[pair] = _from_stored(previous)  # answered meanwhile
                elif partnership is None:
                    shown = rules.threshold(counts[pair], default_min_audience)
                    answer = PairAnswer(
                        count=shown.count,
                        suppressed=shown.suppressed,
                        min_audience=default_min_audience,
                        partnership_id=None,
                        noise=False,
                        answered_at=datetime.now(UTC),
                    )
                    answers[pair] = await _store(session, purpose, pair, versions, answer, None)
                else:
                    answers[pair] = await _answer_for_partnership(
                        service, session, partnership, purpose, pair, versions, counts[pair], actor
                    )
    return answers


async def _answer_for_partnership(
    service: OverlapService,
    session: AsyncSession,
    partnership: Partnership,
    purpose: str,
    pair: Pair,
    versions: tuple[int, int],
    total: int,
    actor: Actor,
) -> PairAnswer:
    """The pair answered as its partnership answers a member (audited on the partnership).

    A refusal is stored too, for the console's view to show why; it is never served again
    as an answer (the next read that may spend decides afresh)."""
    params = {"purpose": purpose, "by": "", "via": "matrix"}
    now = datetime.now(UTC)
    try:
        published = await answer_question(
            session,
            partnership,
            Question(None, purpose, "", total),
            service.noise,
            service.settings.max_breakdown_answers,
        )
    except HubError as refusal:
        event = actor.event(
            "overlap.refused", "partnership", str(partnership.id), reason=refusal.slug, **params
        )
        await append(session, event)
        refused = _refused(partnership, _refusal_code(refusal), refusal.detail, at=now)
        return await _store(session, purpose, pair, versions, refused, partnership.epsilon)
    await append(
        session,
        actor.event(
            "overlap.answered",
            "partnership",
            str(partnership.id),
            suppressed=published.total.suppressed,
            epsilon=partnership.epsilon,
            **params,
        ),
    )
    answer = PairAnswer(
        count=published.total.count,
        suppressed=published.total.suppressed,
        min_audience=partnership.min_audience,
        partnership_id=partnership.id,
        noise=partnership.epsilon is not None,
        answered_at=now,
    )
    return await _store(session, purpose, pair, versions, answer, partnership.epsilon)


async def _store(
    session: AsyncSession,
    purpose: str,
    pair: Pair,
    versions: tuple[int, int],
    answer: PairAnswer,
    epsilon: float | None,
) -> PairAnswer:
    """Keep the answer (or refusal) for this pair and versions, replacing the older one."""
    row = {
        "purpose": purpose,
        "partner_low": pair[0],
        "partner_high": pair[1],
        "low_version": versions[0],
        "high_version": versions[1],
        "partnership_id": answer.partnership_id,
        "min_audience": answer.min_audience,
        "epsilon": epsilon,
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


async def _audit_matrix(
    service: OverlapService,
    actor: Actor,
    purpose: str,
    partners: int,
    answers: Mapping[Pair, PairAnswer],
    *,
    answered: int,
) -> None:
    """Every matrix read is a disclosure, served from stored answers or not: it is audited
    (how many pairs were answered anew, refused or shown stale; never a count of people)."""
    with writing():
        async with service.session_maker() as session, session.begin():
            await append(
                session,
                actor.event(
                    "overlap.matrix",
                    "coalition",
                    None,
                    purpose=purpose,
                    partners=partners,
                    answered=answered,
                    refused=sum(1 for a in answers.values() if a.refused),
                    stale=sum(1 for a in answers.values() if a.stale),
                ),
            )
