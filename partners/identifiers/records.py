"""The one "current records" rule: which rows of ``identifier_records`` count.

A partner's records live in generations (see ``IdentifierRecord``). A row counts when its
``generation`` is at most the partner's current generation and it is not ``retired`` by then.
While a bulk upload is written, its rows carry the next generation and the rows they replace
carry ``retired`` = that generation: readers still see the old records, all of them, until
one small transaction raises the partner's generation; then they see the new ones, all of
them. Every reader of records goes through :func:`current` (a test holds the code to it).

Writers that must reach both generations while an upload is applied (a consent withdrawal,
an erasure) write without this filter; a writer that must not (a synchronous upsert, which
would be overwritten by the upload or overwrite it) is refused until the upload is done
(:func:`unsettled`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any
from uuid import UUID

from sqlalchemy import ColumnElement, Table, and_, func, literal, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from partners.identifiers.models import (
    ID_TYPE_CODES,
    IdentifierRecord,
    IdentifierState,
    PendingConsentEvent,
)

RECORDS: Table = IdentifierRecord.__table__  # type: ignore[assignment]
STATE: Table = IdentifierState.__table__  # type: ignore[assignment]
PENDING_EVENTS: Table = PendingConsentEvent.__table__  # type: ignore[assignment]


def with_keys(
    records: Any, match_keys: Sequence[bytes], id_types: Iterable[int] = ID_TYPE_CODES.values()
) -> ColumnElement[bool]:
    """The rows of ``records`` with one of these match keys, of one of these id types.

    Always give the id type with the keys: the records' key is (partner, id type, match key,
    generation), so ``match_key IN (…)`` alone cannot seek in it and PostgreSQL reads every
    record of the table instead (a 1,000-key lookup: 270 ms on 4M records against 7 ms; the
    soak of issue 19 spent more database CPU on it than on anything else). A row of another
    id type with the same key cannot exist in practice (keys are HMACs of typed digests);
    callers still match found rows on (id type, key).
    """
    return and_(
        records.c.id_type.in_(sorted(set(id_types))),
        records.c.match_key.in_(list(match_keys)),
    )


def generation_of(partner: Any) -> ColumnElement[int]:
    """The partner's current generation as a scalar subquery (0 before its first write).

    With a fixed partner id it is uncorrelated: the database computes it once per statement.
    """
    return func.coalesce(
        select(STATE.c.generation).where(STATE.c.partner_id == partner).scalar_subquery(),
        0,
    )


def current(
    records: Any = RECORDS, partner_id: UUID | None = None, *, generation: int | None = None
) -> ColumnElement[bool]:
    """The rows of ``records`` (the table or an alias) that count now.

    With ``partner_id`` the rule also restricts to that partner (and reads its generation
    once); without, each row is compared with its own partner's generation. With
    ``generation`` too (the partner's pending one), the rows that will count once that
    generation is current: what an upload's arrays are built from before its flip.
    """
    if partner_id is not None:
        partner = literal(partner_id, RECORDS.c.partner_id.type)
        as_of: Any = generation_of(partner) if generation is None else generation
        return and_(
            records.c.partner_id == partner,
            records.c.generation <= as_of,
            or_(records.c.retired.is_(None), records.c.retired > as_of),
        )
    generation_now = generation_of(records.c.partner_id)
    return and_(
        records.c.generation <= generation_now,
        or_(records.c.retired.is_(None), records.c.retired > generation_now),
    )


async def pending_generation(session: AsyncSession, partner_id: UUID) -> int | None:
    """The generation a bulk upload is writing for the partner, if one is."""
    return await session.scalar(select(STATE.c.pending).where(STATE.c.partner_id == partner_id))


async def unsettled(session: AsyncSession, partner_id: UUID) -> bool:
    """Whether the partner's records are mid-apply or not yet tidied after a flip (a key may
    then have more than one row)."""
    state = (
        await session.execute(
            select(STATE.c.generation, STATE.c.pending).where(STATE.c.partner_id == partner_id)
        )
    ).first()
    if state is None:
        return False
    if state.pending is not None:
        return True
    retired = await session.scalar(
        select(RECORDS.c.partner_id)
        .where(
            RECORDS.c.partner_id == partner_id,
            RECORDS.c.retired.is_not(None),
            RECORDS.c.retired <= state.generation,
        )
        .limit(1)
    )
    return retired is not None
