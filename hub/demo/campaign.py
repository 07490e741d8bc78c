"""The demo's campaign response: how the hotel's customers behave during "Fly & Stay".

Synthetic behaviour with a known true lift, so the results page has something real to find:
in the offer's window a share :data:`TREATED_RATE` of the hotel's customers the offer reached
(the treated arm) and :data:`CONTROL_RATE` of those held out each make one extra stay (an earn
with its purchase value in ``amount_minor``): exactly that share of each arm, so a true
lift of eight points at the hotel, on top of the demo's ordinary activity (which falls on both
arms alike). The airline's customers get no extra behaviour: its lift is about zero.

Only the demo reads the control arm person by person, to play the customers' part; the API
never tells anyone who was held out.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import numpy as np
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.demo.brands import HOTEL
from hub.demo.people import Population
from matching.models import Offer, OfferAudience, OfferControl
from partners.identifiers.crypto import IdentifierCrypto
from partners.identifiers.models import ID_TYPE_CODES
from partners.kit import encode_digest
from partners.rewards.ledger import records_at

TREATED_RATE = 0.20
CONTROL_RATE = 0.12
EVENT_PREFIX = "demo-campaign-"
BATCH = 5_000


async def _arms(session: AsyncSession, offer_id: UUID, side: UUID) -> dict[str, bool]:
    """customer_ref -> treated (True) or held out (False), at the hotel."""
    arms: dict[str, bool] = {}
    for table, treated in ((OfferAudience, True), (OfferControl, False)):
        refs = await session.scalars(
            select(table.customer_ref).where(table.offer_id == offer_id, table.partner_id == side)
        )
        arms.update(dict.fromkeys(refs, treated))
    return arms


async def _people_by_ref(
    session: AsyncSession, crypto: IdentifierCrypto, population: Population, side: UUID
) -> dict[str, int]:
    """The hotel's customer_ref of each of its customers (person index), by their email."""
    people = [p for p in population.bases[HOTEL.key].people.tolist() if population.email[p]]
    email = ID_TYPE_CODES["email"]
    out: dict[str, int] = {}
    for start in range(0, len(people), BATCH):
        chunk = people[start : start + BATCH]
        digests = [population.email[p] for p in chunk]
        held = await records_at(session, crypto, side, [(email, d) for d in digests if d])
        out.update(
            {record.customer_ref: p for p, record in zip(chunk, held, strict=True) if record}
        )
    return out


async def campaign_events(
    session: AsyncSession,
    crypto: IdentifierCrypto,
    population: Population,
    offer: Offer,
    hotel: UUID,
    seed: int,
    now: datetime,
) -> list[dict[str, Any]]:
    """The hotel's extra stays during the offer (deterministic for a seed and ``now``)."""
    if offer.activated_at is None:
        return []
    arms = await _arms(session, offer.id, hotel)
    people = await _people_by_ref(session, crypto, population, hotel)
    rng = np.random.default_rng(seed + 16)
    opens = offer.activated_at
    span = max(60.0, (now - opens).total_seconds() - 120)
    events: list[dict[str, Any]] = []
    for treated, rate in ((True, TREATED_RATE), (False, CONTROL_RATE)):
        # Exactly the arm's rate responds (drawn without replacement, people in index order):
        # the planted lift is then the same in every build, whatever the offer's random salt
        # put in each arm; only the ordinary activity and the results' noise vary.
        members = sorted(
            people[ref] for ref, arm in arms.items() if arm == treated and ref in people
        )
        chosen = rng.choice(len(members), size=round(rate * len(members)), replace=False)
        for person in sorted(members[int(i)] for i in chosen):
            digest = population.email[person]
            assert digest is not None
            when = opens + timedelta(seconds=60 + float(rng.random()) * span)
            events.append(
                {
                    "event_id": f"{EVENT_PREFIX}{len(events):07d}",
                    "id_type": "email",
                    "id_hash": encode_digest(digest),
                    "kind": "earn",
                    "points": int(rng.integers(300, 900)),
                    "occurred_at": when.isoformat(),
                    "amount_minor": int(rng.integers(9_000, 40_000)),
                }
            )
    return events
