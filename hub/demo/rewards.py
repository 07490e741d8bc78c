"""Reward activity for the demo: earns at every brand over the last 60 days, some naming the
joint offer, redemptions (some spending coalition points earned at another brand, which is
what settlement is about), and a few adjustments.

Events are checked and recorded through the API's own path (``check_events`` and
``RewardService.record``), in requests of up to 1,000 as a brand would send them, all in one
transaction: the demo's activity is there whole or not at all. A redeem must never exceed
what the member may spend at that brand (the API refuses the whole request), so the plan
keeps a copy of the ledger's rule -- lots spent oldest first, local lots of the brand plus
coalition lots where the member shares rewards at it -- and only asks for what is there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import numpy as np
from sqlalchemy import Table, exists, select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.core.audit import Actor
from hub.demo.brands import AIRLINE, BRANDS, COFFEE, HOTEL, OFFER_POINTS
from hub.demo.people import Population
from matching.models import OfferAudience
from partners.identifiers.crypto import IdentifierCrypto
from partners.identifiers.models import CONSENT_BITS, ID_TYPE_CODES
from partners.kit import encode_digest, parse_digest
from partners.rewards.ledger import records_at
from partners.rewards.models import RewardEvent
from partners.rewards.schemas import MAX_EVENTS
from partners.rewards.service import RewardService, check_events

EVENTS: Table = RewardEvent.__table__  # type: ignore[assignment]
EVENT_PREFIX = "demo-"
DAYS = 60
# Events across the coalition: a quarter of one brand's customer count, at most MAX_EVENTS_TOTAL
# (recording and sharing them is the slowest part of a full-size demo on SQLite).
EVENTS_PER_CUSTOMER = 0.25
MAX_EVENTS_TOTAL = 20_000
BRAND_SHARES = {AIRLINE.key: 0.15, HOTEL.key: 0.17, COFFEE.key: 0.40, "bank": 0.28}
REDEEM_SHARE = 0.08
POSITIVE_ADJUSTS = 25
NEGATIVE_ADJUSTS = 5
OFFER_EARN_SHARE = 0.05  # of the airline's and hotel's earns in the offer's first week
SHARING = CONSENT_BITS["rewards_sharing"]
COALITION, LOCAL = "coalition", "local"


@dataclass
class _Lot:
    earned_at: datetime
    order: int
    wallet: str
    issuer: str
    remaining: int


@dataclass
class RewardPlan:
    """Events per brand, in the order they are recorded: credits first, then spends."""

    credits: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    spends: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(len(v) for v in (*self.credits.values(), *self.spends.values()))


class _Ledger:
    """The member's lots as the hub's ledger keeps them (to plan only spendable redeems)."""

    def __init__(self) -> None:
        self.lots: dict[int, list[_Lot]] = {}
        self.order = 0

    def credit(self, person: int, when: datetime, wallet: str, issuer: str, points: int) -> None:
        self.order += 1
        self.lots.setdefault(person, []).append(_Lot(when, self.order, wallet, issuer, points))

    def _spendable(self, person: int, brand: str, sharing: bool) -> list[_Lot]:
        lots = [
            lot
            for lot in self.lots.get(person, ())
            if lot.remaining and (lot.issuer == brand if lot.wallet == LOCAL else sharing)
        ]
        return sorted(lots, key=lambda lot: (lot.earned_at, lot.order))

    def available(self, person: int, brand: str, sharing: bool) -> int:
        return sum(lot.remaining for lot in self._spendable(person, brand, sharing))

    def debit(self, person: int, brand: str, sharing: bool, points: int) -> None:
        for lot in self._spendable(person, brand, sharing):
            take = min(points, lot.remaining)
            lot.remaining -= take
            points -= take
            if not points:
                return


def plan_rewards(
    population: Population, seed: int, now: datetime, offer_id: UUID | None
) -> RewardPlan:
    """The demo's reward events (deterministic for a seed, a size and ``now``)."""
    rng = np.random.default_rng(seed + 1)
    customers = len(population.bases[AIRLINE.key])
    total = min(int(customers * EVENTS_PER_CUSTOMER), MAX_EVENTS_TOTAL)
    ledger = _Ledger()
    plan = RewardPlan()
    sharing: dict[str, dict[int, bool]] = {}
    for brand in BRANDS:
        base = population.bases[brand.key]
        sharing[brand.key] = dict(
            zip(base.people.tolist(), ((base.consents & SHARING) != 0).tolist(), strict=True)
        )
    for brand in BRANDS:
        base = population.bases[brand.key]
        count = int(total * BRAND_SHARES[brand.key] * (1 - REDEEM_SHARE))
        people = rng.choice(base.people, size=count).tolist()
        ages = np.sort(rng.random(count))[::-1] * DAYS * 86_400  # oldest first
        low, high = brand.earn_points
        points = rng.integers(low, high + 1, size=count).tolist()
        events = []
        for n, (person, age, amount) in enumerate(zip(people, ages.tolist(), points, strict=True)):
            when = now - timedelta(seconds=int(age) + 60)
            offer = None
            in_offer_week = offer_id is not None and brand.key in OFFER_POINTS and age < 7 * 86_400
            if in_offer_week and rng.random() < OFFER_EARN_SHARE:
                offer, amount = offer_id, sum(OFFER_POINTS.values())
            wallet = COALITION if sharing[brand.key][person] else LOCAL
            ledger.credit(person, when, wallet, brand.key, amount)
            events.append(_event(population, brand.key, n, person, "earn", amount, when, offer))
        plan.credits[brand.key] = events
    _goodwill(population, rng, now, ledger, sharing, plan)
    for brand in BRANDS:
        plan.spends[brand.key] = _spends(population, rng, now, ledger, sharing, brand.key, total)
    return plan


def _goodwill(
    population: Population,
    rng: np.random.Generator,
    now: datetime,
    ledger: _Ledger,
    sharing: dict[str, dict[int, bool]],
    plan: RewardPlan,
) -> None:
    """A few positive adjustments (service recovery), each a new lot like an earn."""
    for n in range(POSITIVE_ADJUSTS):
        brand = BRANDS[n % len(BRANDS)].key
        person = int(rng.choice(population.bases[brand].people))
        when = now - timedelta(days=int(rng.integers(1, 30)))
        ledger.credit(person, when, COALITION if sharing[brand][person] else LOCAL, brand, 250)
        plan.credits[brand].append(
            _event(population, brand, 900_000 + n, person, "adjust", 250, when, None)
        )


def _spends(
    population: Population,
    rng: np.random.Generator,
    now: datetime,
    ledger: _Ledger,
    sharing: dict[str, dict[int, bool]],
    brand: str,
    total: int,
) -> list[dict[str, Any]]:
    """Redeems at ``brand`` of members who may spend there (coalition points earned at other
    brands included), and a few negative adjustments."""
    wanted = int(total * BRAND_SHARES[brand] * REDEEM_SHARE)
    candidates = [p for p in sharing[brand] if p in ledger.lots]
    events: list[dict[str, Any]] = []
    if not candidates:
        return events
    picks = rng.choice(len(candidates), size=wanted * 2).tolist()
    for pick in picks:
        if len(events) >= wanted + NEGATIVE_ADJUSTS:
            break
        person = candidates[pick]
        shares = sharing[brand][person]
        available = ledger.available(person, brand, shares)
        adjust = len(events) < NEGATIVE_ADJUSTS
        points = min(available, 100 if adjust else int(rng.choice([100, 250, 500, 1000, 2000])))
        if points < 50:
            continue
        ledger.debit(person, brand, shares, points)
        kind, signed = ("adjust", -points) if adjust else ("redeem", points)
        when = now - timedelta(seconds=int(rng.integers(60, 7 * 86_400)))
        events.append(
            _event(population, brand, 800_000 + len(events), person, kind, signed, when, None)
        )
    return events


def _event(
    population: Population,
    brand: str,
    n: int,
    person: int,
    kind: str,
    points: int,
    when: datetime,
    offer_id: UUID | None,
) -> dict[str, Any]:
    email = population.email[person]
    assert email is not None
    event: dict[str, Any] = {
        "event_id": f"{EVENT_PREFIX}{brand}-{n:07d}",
        "id_type": "email",
        "id_hash": encode_digest(email),
        "kind": kind,
        "points": points,
        "occurred_at": when.isoformat(),
    }
    if offer_id is not None:
        event["offer_id"] = str(offer_id)
    return event


async def has_demo_activity(session: AsyncSession, partner_ids: list[UUID]) -> bool:
    return bool(
        await session.scalar(
            select(
                exists().where(
                    EVENTS.c.partner_id.in_(partner_ids),
                    EVENTS.c.event_id.startswith(EVENT_PREFIX),
                )
            )
        )
    )


async def record_plan(
    session: AsyncSession,
    crypto: IdentifierCrypto,
    plan: RewardPlan,
    ids: dict[str, UUID],
    on_progress: Callable[[int], None],
    offer: tuple[UUID, datetime] | None = None,
) -> int:
    """Record the plan in requests of up to 1,000 events (the caller commits). Returns the
    events applied. ``offer`` (its id and when its window opened) decides which earns name
    it: those of people in the earning brand's audience, inside the window."""
    service = RewardService(session, crypto)
    applied = 0
    for phase in (plan.credits, plan.spends):
        for brand, planned in phase.items():
            events = (
                await _offer_for_its_audience(session, crypto, ids[brand], planned, *offer)
                if offer
                else planned
            )
            actor = Actor(name="cli:demo", partner_id=str(ids[brand]))
            for start in range(0, len(events), MAX_EVENTS):
                valid, errors = check_events(events[start : start + MAX_EVENTS])
                assert not errors, errors  # built valid: a failure here is a bug of the demo
                result = await service.record(ids[brand], valid, actor)
                applied += result.applied
                on_progress(len(valid))
    return applied


async def _offer_for_its_audience(
    session: AsyncSession,
    crypto: IdentifierCrypto,
    partner_id: UUID,
    events: list[dict[str, Any]],
    offer_id: UUID,
    opens: datetime,
) -> list[dict[str, Any]]:
    """The brand's earns inside the offer's window name the offer when the person is in the
    brand's audience of it (the hub funds nobody else); no other event names it."""
    audience = set(
        await session.scalars(
            select(OfferAudience.customer_ref).where(
                OfferAudience.offer_id == offer_id, OfferAudience.partner_id == partner_id
            )
        )
    )
    earns = [
        e
        for e in events
        if audience and e["kind"] == "earn" and datetime.fromisoformat(e["occurred_at"]) >= opens
    ]
    held = await records_at(
        session,
        crypto,
        partner_id,
        [(ID_TYPE_CODES[e["id_type"]], parse_digest(e["id_hash"])) for e in earns],
    )
    inside = {
        e["event_id"]
        for e, record in zip(earns, held, strict=True)
        if record is not None and record.customer_ref in audience
    }
    out = []
    for e in events:
        plain = {k: v for k, v in e.items() if k != "offer_id"}
        out.append({**plain, "offer_id": str(offer_id)} if e["event_id"] in inside else plain)
    return out


def now_minute() -> datetime:
    return datetime.now(UTC).replace(second=0, microsecond=0)
