"""Who funds an earn made under a joint offer: the rule that keeps a brand from billing its
partner for someone the offer never reached.

An earn naming an ``offer_id`` is funded by the offer's ``points`` split only when

* the offer belongs to a partnership of the earning brand and was activated;
* ``occurred_at`` lies in the offer's window ``[max(activated_at, starts_at), ends_at)`` and
  the event arrives at most :data:`LATE_DAYS` days after the end;
* the event's identifier is a record of the earning brand whose ``customer_ref`` is in that
  brand's audience of the offer (the treated arm), reconciled to both sides' current data
  first, so a withdrawal or an erasure since activation counts.

Otherwise the whole request is refused (422) with the reason per event. The other member
funds its share only if its side of the matched group is in its own audience; otherwise the
earner funds the earn alone. The split is written once, on the lot, and never changes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from sqlalchemy import Table, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from hub.core.errors import InvalidInput
from partners.identifiers.models import IdentifierRecord
from partners.identifiers.records import current

RECORDS: Table = IdentifierRecord.__table__  # type: ignore[assignment]
LATE_DAYS = 7

# Brings offers' stored audiences in line with both members' current records (matching's
# reconciliation, injected so the rewards domain does not build arrays itself). It runs in
# sessions of its own, before the request's transaction takes SQLite's write lock.
Reconcile = Callable[[Sequence[UUID]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class HeldRecord:
    """The earning brand's record of an event's identifier."""

    customer_ref: str
    consents: int
    match_key: bytes


@dataclass(frozen=True, slots=True)
class OfferEarn:
    index: int
    offer_id: UUID
    occurred_at: datetime
    record: HeldRecord
    id_type: int


def _error(index: int, reason: str) -> dict[str, Any]:
    return {"index": index, "field": "offer_id", "reason": reason}


def window_reason(
    occurred_at: datetime,
    activated_at: datetime | None,
    starts_at: datetime | None,
    ends_at: datetime | None,
    now: datetime,
) -> str | None:
    """Why an event at ``occurred_at`` cannot be funded by the offer's window, or None."""
    if activated_at is None:
        return "the offer was never activated: it funds nothing"
    opens = max(activated_at, starts_at) if starts_at else activated_at
    if occurred_at < opens:
        return f"occurred_at is before the offer's window opened ({opens.isoformat()})"
    if ends_at is not None and occurred_at >= ends_at:
        return f"occurred_at is after the offer's window closed ({ends_at.isoformat()})"
    if ends_at is not None and now > ends_at + timedelta(days=LATE_DAYS):
        return (
            f"the offer ended at {ends_at.isoformat()}; events are funded up to "
            f"{LATE_DAYS} days after its end"
        )
    return None


async def offer_funding(
    session: AsyncSession,
    partner_id: UUID,
    earns: Sequence[OfferEarn],
) -> dict[int, dict[str, int] | None]:
    """The funding split of each earn (by index; None: the earner alone), or InvalidInput
    naming why each refused earn cannot be funded. The offers were reconciled first."""
    from matching.models import Offer, OfferAudience
    from partners.partnerships.models import Partnership, PartnershipMember

    if not earns:
        return {}
    wanted = sorted({e.offer_id for e in earns})
    offers = {
        offer.id: (offer, partnership)
        for offer, partnership in await session.execute(
            select(Offer, Partnership)
            .join(Partnership, Partnership.id == Offer.partnership_id)
            .join(PartnershipMember, PartnershipMember.partnership_id == Offer.partnership_id)
            .where(Offer.id.in_(wanted), PartnershipMember.partner_id == partner_id)
        )
    }
    now = datetime.now(UTC)
    errors: list[dict[str, Any]] = []
    for e in earns:
        found = offers.get(e.offer_id)
        if found is None:
            errors.append(_error(e.index, "no such offer of your partnerships"))
            continue
        offer = found[0]
        reason = window_reason(
            e.occurred_at, offer.activated_at, offer.starts_at, offer.ends_at, now
        )
        if reason is None and sum(offer.points.values()) <= 0:
            reason = "the offer funds no points"
        if reason:
            errors.append(_error(e.index, reason))
    if errors:
        raise _refused(errors)
    audiences = await _audience_members(session, offers, earns, partner_id, OfferAudience)
    out: dict[int, dict[str, int] | None] = {}
    for e in earns:
        offer = offers[e.offer_id][0]
        mine, theirs = audiences[e.index]
        if not mine:
            errors.append(_error(e.index, "the member is not in your audience of this offer"))
            continue
        out[e.index] = dict(offer.points) if theirs else None
    if errors:
        raise _refused(errors)
    return out


async def _audience_members(
    session: AsyncSession,
    offers: dict[UUID, tuple[Any, Any]],
    earns: Sequence[OfferEarn],
    partner_id: UUID,
    audience_table: Any,
) -> dict[int, tuple[bool, bool]]:
    """Per earn: (the earner's person is in its audience, the other member's side of the
    group is in the other member's audience). Three queries per offer named, whatever the
    number of earns (a request holds up to 1,000)."""
    audience = audience_table.__table__
    out: dict[int, tuple[bool, bool]] = {}
    for offer_id, (_, partnership) in offers.items():
        named = [e for e in earns if e.offer_id == offer_id]
        other = next(m.partner_id for m in partnership.members if m.partner_id != partner_id)
        refs = sorted({e.record.customer_ref for e in named})
        mine = set(
            await session.scalars(
                select(audience.c.customer_ref).where(
                    audience.c.offer_id == offer_id,
                    audience.c.partner_id == partner_id,
                    audience.c.customer_ref.in_(refs),
                )
            )
        )
        # The earner's people's identifiers, then those the other member's audience holds.
        keys_of: dict[str, set[tuple[int, bytes]]] = {ref: set() for ref in mine}
        for ref, t, k in await session.execute(
            select(RECORDS.c.customer_ref, RECORDS.c.id_type, RECORDS.c.match_key).where(
                current(RECORDS, partner_id), RECORDS.c.customer_ref.in_(sorted(mine))
            )
        ):
            keys_of[ref].add((int(t), bytes(k)))
        wanted = sorted({key for keys in keys_of.values() for key in keys})
        theirs = set()
        if wanted:
            theirs = {
                (int(t), bytes(k))
                for t, k in await session.execute(
                    select(RECORDS.c.id_type, RECORDS.c.match_key).where(
                        current(RECORDS, other),
                        tuple_(RECORDS.c.id_type, RECORDS.c.match_key).in_(wanted),
                        RECORDS.c.customer_ref.in_(
                            select(audience.c.customer_ref).where(
                                audience.c.offer_id == offer_id, audience.c.partner_id == other
                            )
                        ),
                    )
                )
            }
        for e in named:
            ref = e.record.customer_ref
            out[e.index] = (ref in mine, bool(keys_of.get(ref, set()) & theirs))
    return out


def _refused(errors: list[dict[str, Any]]) -> InvalidInput:
    return InvalidInput(
        f"{len(errors)} earn(s) cannot be funded by the offer they name; nothing was applied.",
        errors=errors,
        fix="Name an offer only for a member of your audience of it (GET "
        "/v1/offers/{id}/audience), for an event inside the offer's window; send other "
        "earns without offer_id.",
    )
