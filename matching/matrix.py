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

Answers are stored (:mod:`matching.matrix_answers`) with the data version of both
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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.core.audit import Actor, append
from hub.core.db import writing
from hub.core.errors import HubError, InvalidInput, TooManyRequests
from matching import engine, rules
from matching.loader import Loaded
from matching.matrix_answers import (
    Pair,
    PairAnswer,
    Terms,
    Versions,
    decided_on,
    pair_of,
    recalled,
    servable,
    store,
    stored_answers,
)
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

PURPOSE_NOT_ALLOWED = "purpose-not-allowed"
BUDGET_EXHAUSTED = "budget-exhausted"
DIFFERENCING = "differencing"
# Pairs answered per transaction: well under a second of SQLite's write lock each.
PAIRS_PER_TRANSACTION = 200


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


async def overlap_matrix(
    service: OverlapService,
    purpose: str,
    default_min_audience: int,
    actor: Actor,
    *,
    max_partners: int,
    spend: bool = True,
    chosen: Sequence[UUID] = (),
) -> Matrix:
    """Every pair of active partners for ``purpose`` (the diagonal is not an overlap), or of
    the ``chosen`` ones; at most ``max_partners`` (422 beyond: the pairs grow with the square,
    and a coalition of thousands would be millions of pairs in one answer).

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
        partners = _within_bounds(partners, chosen, max_partners)
        ids = [pid for pid, _ in partners]
        governing = await governing_partnerships(session, ids)
        versions = await data_versions(session, ids)
        stored = await stored_answers(session, purpose)
    answers: dict[Pair, PairAnswer] = {}
    due: list[Pair] = []
    for i, a in enumerate(ids):
        for b in ids[i + 1 :]:
            pair = pair_of(a, b)
            partnership = governing.get(pair)
            kept = stored.get(pair)
            terms = Terms.of(partnership, default_min_audience)
            now = (versions[pair[0]], versions[pair[1]])
            if partnership is not None and purpose not in partnership.purposes:
                answers[pair] = _not_allowed(partnership, purpose)
            elif kept is not None and servable(kept, terms, now):
                answers[pair] = recalled(kept)
            elif not spend and terms.epsilon is not None:
                answers[pair] = _last_known(kept, terms, now)
            else:
                due.append(pair)
    if due:
        answers.update(await _answer(service, purpose, due, governing, default_min_audience, actor))
    await _audit_matrix(service, actor, purpose, ids, answers, answered=len(due))
    cells = [MatrixCell(a, b, answers[pair_of(a, b)]) for a in ids for b in ids if a != b]
    return Matrix(purpose, partners, cells)


def _within_bounds(
    active: list[tuple[UUID, str]], chosen: Sequence[UUID], max_partners: int
) -> list[tuple[UUID, str]]:
    """The active partners the matrix covers: the ``chosen`` ones, or all of them."""
    if chosen:
        wanted = set(chosen)
        unknown = sorted(str(p) for p in wanted - {pid for pid, _ in active})
        if unknown:
            raise InvalidInput(
                f"{len(unknown)} of the partners named are not active partners; nothing was "
                "answered.",
                errors=[
                    {"index": n, "field": "partner", "reason": f"{p}: no active partner"}
                    for n, p in enumerate(unknown)
                ],
                fix="Name active partners only (GET /v1/partners lists them).",
            )
        if len(wanted) > max_partners:
            raise InvalidInput(
                f"{len(wanted)} partners were named; one matrix covers at most {max_partners}.",
                fix=f"Name at most {max_partners} partners with ?partner=<id>.",
            )
        return [(pid, name) for pid, name in active if pid in wanted]
    if len(active) > max_partners:
        raise InvalidInput(
            f"The coalition has {len(active)} active partners; one matrix covers at most "
            f"{max_partners} ({max_partners * (max_partners - 1) // 2} pairs).",
            fix=f"Name the partners to compare with ?partner=<id> (repeat it, at most "
            f"{max_partners} times), or raise matching.matrix_max_partners.",
        )
    return active


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


def _last_known(kept: MatrixAnswer | None, terms: Terms, versions: Versions) -> PairAnswer:
    """A noisy pair not answered for its current data, in a view that does not spend: the
    refusal decided on this data, else its last answer (stale), else nothing yet (stale)."""
    if kept is not None and kept.refused is not None and decided_on(kept, terms, versions):
        return recalled(kept)
    if kept is not None and kept.refused is None and kept.partnership_id == terms.partnership_id:
        return recalled(kept, stale=True)
    return PairAnswer(
        count=None,
        suppressed=False,
        min_audience=terms.min_audience,
        partnership_id=terms.partnership_id,
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
            pair: engine.overlap(a, b, CONSENT_BITS[purpose] if pair in governing else bare)
            if len(a.hi) and len(b.hi)
            else 0  # a side with no records overlaps no one
            for pair in due
            for a, b in [(loaded[pair[0]].side, loaded[pair[1]].side)]
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
    """Answer the pairs ``due`` and store what was answered.

    In transactions of at most :data:`PAIRS_PER_TRANSACTION` pairs, each holding the row locks
    of its pairs' governing partnerships (two concurrent matrices cannot spend twice for one
    version: the second finds the first one's answer stored). A matrix of a thousand partners
    is half a million pairs: in one transaction it held SQLite's write lock for minutes, and
    every other writer of the hub got a 503.
    """
    loaded, counts = await _true_counts(service, purpose, due, governing)
    answers: dict[Pair, PairAnswer] = {}
    for start in range(0, len(due), PAIRS_PER_TRANSACTION):
        chunk = due[start : start + PAIRS_PER_TRANSACTION]
        answers.update(
            await _answer_chunk(
                service, purpose, chunk, governing, default_min_audience, actor, loaded, counts
            )
        )
    return answers


async def _answer_chunk(
    service: OverlapService,
    purpose: str,
    due: Sequence[Pair],
    governing: Mapping[Pair, Partnership],
    default_min_audience: int,
    actor: Actor,
    loaded: Mapping[UUID, Loaded],
    counts: Mapping[Pair, int],
) -> dict[Pair, PairAnswer]:
    """One transaction of :func:`_answer`."""
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
                terms = Terms.of(partnership, default_min_audience)
                versions = (loaded[pair[0]].version, loaded[pair[1]].version)
                previous = kept.get(pair)
                if previous is not None and servable(previous, terms, versions):
                    answers[pair] = recalled(previous)  # answered meanwhile
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
                    answers[pair] = await store(session, purpose, pair, versions, terms, answer)
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
    versions: Versions,
    total: int,
    actor: Actor,
) -> PairAnswer:
    """The pair answered as its partnership answers a member (audited on the partnership).

    A refusal is stored too, for the console's view to show why; it is never served again
    as an answer (the next read that may spend decides afresh)."""
    params = {"purpose": purpose, "by": "", "via": "matrix"}
    terms = Terms.of(partnership, partnership.min_audience)
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
            "overlap.refused",
            "partnership",
            str(partnership.id),
            concerns=(m.partner_id for m in partnership.members),
            reason=refusal.slug,
            **params,
        )
        await append(session, event)
        refused = _refused(partnership, _refusal_code(refusal), refusal.detail, at=now)
        return await store(session, purpose, pair, versions, terms, refused)
    await append(
        session,
        actor.event(
            "overlap.answered",
            "partnership",
            str(partnership.id),
            concerns=(m.partner_id for m in partnership.members),
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
    return await store(session, purpose, pair, versions, terms, answer)


async def _audit_matrix(
    service: OverlapService,
    actor: Actor,
    purpose: str,
    partners: Sequence[UUID],
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
                    concerns=partners,  # every active partner: the matrix shows them all
                    purpose=purpose,
                    partners=len(partners),
                    answered=answered,
                    refused=sum(1 for a in answers.values() if a.refused),
                    stale=sum(1 for a in answers.values() if a.stale),
                ),
            )
