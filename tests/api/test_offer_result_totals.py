"""Offer results' running totals (``offer_result_totals``, kept as events are applied) give
exactly what the full aggregate over ``reward_events`` gives (the reference, kept in
``matching.measurement``), on both databases, through the real API: late events, events
dated ahead of now, before and after the window, the attribution days' tail, offers ended
early, two offers of one partnership overlapping, events applied before activation, offers
filled before their first read, erasure, segments by the caller's attribute.

Each comparison reads both figures in one transaction (same snapshot, same window) and also
checks them against what the test itself sent, so that two equal wrong answers fail too."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import async_sessionmaker

from hub.core.db import create_hub_async_engine, create_hub_sync_engine
from matching.measurement import Figures, arm_figures, arm_total
from matching.models import Offer, OfferResultFill, OfferResultTotal
from matching.result_totals import bounds
from matching.results import window_of
from partners.partnerships.models import PartnershipMember
from tests.api.test_offer_results import PEOPLE, World, side_of, world
from tests.conftest import Hub
from tests.rewards.helpers import event, ledger_problems, send

CAP = 10**12  # no clamping: the sums below are checked against what was sent


Key = tuple[str, bool, str | None]


def both(hub: Hub, offer_id: str, by: str | None = "tier") -> dict[Key, Figures]:
    """(side, reference) -> figures, the totals' and the reference's, in one transaction;
    side A (the partnership's member that holds tiers) broken down ``by``.

    One snapshot for all of them (REPEATABLE READ on PostgreSQL): in READ COMMITTED each
    query saw its own, and the serving process's maintenance could reconcile the offer's arms
    between the reference and the totals (five erased people apart, seen once in ten runs)."""

    async def run() -> dict[Key, Figures]:
        engine = create_hub_async_engine(hub.database_url)
        try:
            snapshot = (
                engine.execution_options(isolation_level="REPEATABLE READ")
                if engine.dialect.name == "postgresql"
                else engine
            )
            maker = async_sessionmaker(snapshot, expire_on_commit=False)
            async with maker() as session, session.begin():
                offer = await session.get(Offer, UUID(offer_id))
                assert offer is not None
                sides = (
                    await session.scalars(
                        select(PartnershipMember.partner_id).where(
                            PartnershipMember.partnership_id == offer.partnership_id
                        )
                    )
                ).all()
                window = window_of(offer, datetime.now(UTC))
                out: dict[Key, Figures] = {}
                for side in sides:
                    for reference in (True, False):
                        for attribute in (None, by):
                            out[(str(side), reference, attribute)] = await arm_figures(
                                session,
                                offer.id,
                                side,
                                window,
                                CAP,
                                CAP,
                                attribute,
                                closes=bounds(offer)[1],
                                reference=reference,
                            )
                return out
        finally:
            await engine.dispose()

    return asyncio.run(run())


def equal_totals(hub: Hub, offer_id: str) -> dict[str, tuple[int, int]]:
    """Assert the totals equal the reference (overall and by tier); side -> (responders,
    points) over both arms."""
    figures = both(hub, offer_id)
    out = {}
    for (side, reference, attribute), arms in figures.items():
        if reference:
            continue
        assert arms == figures[(side, True, attribute)], (side, attribute)
        if attribute is None:
            whole = [arm_total(by) for by in arms.values()]
            out[side] = (sum(t.responders for t in whole), sum(t.points for t in whole))
    return out


def api_agrees(hub: Hub, w: World, caller: Any = None) -> None:
    """The API's released figures at side A are the reference's (no epsilon; an arm may be
    suppressed when small, the treated one is not at these sizes)."""
    response = w.results(hub, caller)
    assert response.status_code == 200, response.text
    side = side_of(response.json(), w.a)
    truth = both(hub, w.offer["id"], None)[(w.a.id, True, None)]
    assert side["treated"]["responders"] is not None
    for arm in ("treated", "control"):
        if side[arm]["responders"] is not None:
            whole = arm_total(truth[arm])
            assert (side[arm]["responders"], side[arm]["points"]) == (
                whole.responders,
                whole.points,
            )


def at(moment: datetime) -> str:
    return moment.isoformat()


def sends(hub: Hub, w: World, side: Any, events: list[dict[str, Any]]) -> None:
    response = send(hub, side, events)
    assert response.status_code == 200, response.text


def earn(w: World, n: int, points: int, when: datetime, kind: str = "earn") -> dict[str, Any]:
    amount = {} if kind == "adjust" else {"amount_minor": points * 3}
    return (
        event(f"{w.tag}-{uuid.uuid4().hex[:10]}", f"{w.tag}{n}", kind, points, occurred_at=at(when))
        | amount
    )


def propose(hub: Hub, w: World, **terms: Any) -> dict[str, Any]:
    """Another offer of the same partnership (its window overlaps the world's offer)."""
    response = w.a.post(
        hub,
        "/v1/offers",
        {
            "partnership_id": w.partnership,
            "title": f"Another {uuid.uuid4().hex[:6]}",
            "points": {w.a.id: 10, w.b.id: 10},
            "holdout": 0.2,
            **terms,
        },
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


def approve(hub: Hub, w: World, offer: dict[str, Any]) -> dict[str, Any]:
    response = w.b.post(hub, f"/v1/offers/{offer['id']}/approve")
    assert response.status_code == 200, response.text
    return dict(response.json())


def filled_at(hub: Hub, offer_id: str) -> list[datetime]:
    engine = create_hub_sync_engine(hub.database_url)
    try:
        with engine.connect() as conn:
            return list(
                conn.scalars(
                    select(OfferResultFill.filled_at)
                    .where(OfferResultFill.offer_id == UUID(offer_id))
                    .order_by(OfferResultFill.partner_id)
                )
            )
    finally:
        engine.dispose()


def kept_events(hub: Hub, offer_id: str, side: str) -> int:
    engine = create_hub_sync_engine(hub.database_url)
    try:
        with engine.connect() as conn:
            return int(
                conn.scalar(
                    select(func.coalesce(func.sum(OfferResultTotal.events), 0)).where(
                        OfferResultTotal.offer_id == UUID(offer_id),
                        OfferResultTotal.partner_id == UUID(side),
                    )
                )
                or 0
            )
    finally:
        engine.dispose()


def test_totals_equal_the_events_late_ahead_outside_and_uncounted_kinds(hub: Hub) -> None:
    w = world(hub)
    activated = datetime.fromisoformat(w.offer["activated_at"])
    now = datetime.now(UTC)
    a_events = [earn(w, n, 100 + n, now) for n in range(60)]
    a_events += [earn(w, n, 7, now) for n in range(0, 60, 4)]  # second earns
    a_events += [earn(w, n, 30, now, "redeem") for n in range(10, 20)]
    a_events += [earn(w, n, 20, now, "adjust") for n in range(60, 70)]  # never counts
    a_events += [earn(w, n, 50, activated - timedelta(hours=1)) for n in range(70, 75)]  # before
    a_events += [earn(w, n, 60, now + timedelta(hours=2)) for n in range(75, 80)]  # dated ahead
    sends(hub, w, w.a, a_events)
    # Late: sent after the others, dated just after activation (inside the window).
    sends(hub, w, w.a, [earn(w, n, 40, activated + timedelta(milliseconds=1)) for n in (1, 80)])
    sends(hub, w, w.b, [earn(w, n, 5, now) for n in range(30)])

    got = equal_totals(hub, w.offer["id"])
    points_a = (
        sum(100 + n for n in range(60)) + 7 * 15 + 30 * 10 + 40 * 2
    )  # earns, second earns, redeems, the late ones
    assert got[w.a.id] == (61, points_a)  # 0..59 and 80
    assert got[w.b.id] == (30, 150)
    # The dated-ahead events are in the totals (taken out by the read while they are ahead).
    counted = 60 + 15 + 10 + 2
    assert kept_events(hub, w.offer["id"], w.a.id) == counted + 5
    filled = filled_at(hub, w.offer["id"])  # at activation, both sides
    assert len(filled) == 2
    api_agrees(hub, w, w.a)  # the API's figures are the same
    assert filled_at(hub, w.offer["id"]) == filled  # read from the totals kept, not refilled
    assert ledger_problems(hub.database_url) == []


def applied_ahead(offer: dict[str, Any], soon: datetime) -> int:
    """How many of the five events dated ``soon`` (sent before any of these offers was
    activated) the offer's window holds."""
    opens = datetime.fromisoformat(offer["activated_at"])
    closes = offer.get("ends_at")
    days = offer.get("attribution_days", 0)
    inside = opens <= soon and (
        closes is None or soon < datetime.fromisoformat(closes) + timedelta(days=days)
    )
    return 5 if inside else 0


def test_ended_offers_attribution_tail_and_events_applied_before_activation(hub: Hub) -> None:
    w = world(hub)
    # Proposed (not active yet): events dated a few seconds ahead are applied before it is
    # activated, and fall inside its window once it is.
    early = propose(hub, w)
    soon = datetime.now(UTC) + timedelta(seconds=6)
    sends(hub, w, w.a, [earn(w, n, 11, soon) for n in range(200, 205)])
    early = approve(hub, w, early)
    sharp = approve(hub, w, propose(hub, w))  # attribution_days 0
    tail = approve(hub, w, propose(hub, w, attribution_days=2))
    now = datetime.now(UTC)
    sends(hub, w, w.a, [earn(w, n, 10, now) for n in range(20)])
    sends(hub, w, w.a, [earn(w, n, 10, now + timedelta(hours=3)) for n in range(20, 25)])
    for offer in (sharp, tail):
        ended = w.a.post(hub, f"/v1/offers/{offer['id']}/end")
        assert ended.status_code == 200, ended.text
        offer["ends_at"] = ended.json()["ends_at"]
    ends = datetime.fromisoformat(sharp["ends_at"])
    # Late events dated before the end, then events after it.
    sends(hub, w, w.a, [earn(w, n, 10, ends - timedelta(milliseconds=5)) for n in range(25, 30)])
    sends(hub, w, w.a, [earn(w, n, 10, datetime.now(UTC)) for n in range(30, 35)])
    while datetime.now(UTC) <= soon:
        time.sleep(0.2)

    extra = applied_ahead(sharp, soon)
    assert equal_totals(hub, sharp["id"])[w.a.id] == (25 + extra, 250 + 11 * extra)
    # The ended offer's events dated ahead (from its end on) left its totals when it ended.
    assert kept_events(hub, sharp["id"], w.a.id) == 25 + extra
    # Two days of attribution: the events after the end count; those dated hours ahead not
    # yet (they are in the totals: the read takes them out while they are ahead).
    extra = applied_ahead(tail, soon)
    assert equal_totals(hub, tail["id"])[w.a.id] == (30 + extra, 300 + 11 * extra)
    assert kept_events(hub, tail["id"], w.a.id) == 35 + extra
    # The open offers (the world's overlaps all the others).
    extra = applied_ahead(early, soon)
    assert equal_totals(hub, early["id"])[w.a.id] == (30 + extra, 300 + 11 * extra)
    assert equal_totals(hub, w.offer["id"])[w.a.id] == (35, 355)


def test_an_offer_without_totals_is_filled_at_its_first_read_and_erasure_counts(
    hub: Hub,
) -> None:
    w = world(hub)
    now = datetime.now(UTC)
    sends(hub, w, w.a, [earn(w, n, 10, now) for n in range(120)])
    # As for an offer activated before the totals existed: no fill, no totals.
    engine = create_hub_sync_engine(hub.database_url)
    try:
        with engine.begin() as conn:
            offer_id = UUID(w.offer["id"])
            conn.execute(delete(OfferResultTotal).where(OfferResultTotal.offer_id == offer_id))
            conn.execute(delete(OfferResultFill).where(OfferResultFill.offer_id == offer_id))
    finally:
        engine.dispose()
    sends(hub, w, w.a, [earn(w, n, 10, now) for n in range(120, 160)])  # not kept: no fill
    assert kept_events(hub, w.offer["id"], w.a.id) == 0
    api_agrees(hub, w)  # the read fills it first
    assert kept_events(hub, w.offer["id"], w.a.id) == 160
    assert equal_totals(hub, w.offer["id"])[w.a.id] == (160, 1600)
    # Kept again from here on.
    sends(hub, w, w.a, [earn(w, n, 10, datetime.now(UTC)) for n in range(160, 180)])
    assert equal_totals(hub, w.offer["id"])[w.a.id] == (180, 1800)
    # Erasing five people at A: their events no longer map to anyone, in both figures.
    erased = w.a.post(
        hub, "/v1/identifiers/erase", {"customer_refs": [f"a-{w.tag}{n}" for n in range(5)]}
    )
    assert erased.status_code == 200, erased.text
    assert equal_totals(hub, w.offer["id"])[w.a.id] == (175, 1750)
    # A read reconciles the arms (the erased people leave them), then refuses: five people
    # apart from the last answer (differencing).
    refused = w.results(hub)
    assert refused.status_code == 422, refused.text
    assert "differ from an earlier answer" in refused.json()["detail"]
    assert equal_totals(hub, w.offer["id"])[w.a.id] == (175, 1750)


def test_totals_stay_exact_while_events_arrive_during_a_fill_and_an_end(hub: Hub) -> None:
    """Events sent from three threads while one offer is filled by its first read and another
    is ended: the fill and the close wait for the inserters in flight and hold the next ones
    back (PostgreSQL), so nothing is counted twice or lost."""
    w = world(hub)
    other = approve(hub, w, propose(hub, w))
    engine = create_hub_sync_engine(hub.database_url)
    try:
        with engine.begin() as conn:
            offer_id = UUID(w.offer["id"])
            conn.execute(delete(OfferResultTotal).where(OfferResultTotal.offer_id == offer_id))
            conn.execute(delete(OfferResultFill).where(OfferResultFill.offer_id == offer_id))
    finally:
        engine.dispose()
    failures: list[str] = []

    def sender(first: int) -> None:
        for k in range(6):
            now = datetime.now(UTC)
            body = [earn(w, (first + k * 7 + j) % PEOPLE, 3, now) for j in range(150)]
            body += [earn(w, j, 2, now + timedelta(hours=1)) for j in range(first, first + 5)]
            response = send(hub, w.a, body)
            if response.status_code != 200:
                failures.append(response.text)

    threads = [threading.Thread(target=sender, args=(n * 50,)) for n in range(3)]
    for thread in threads:
        thread.start()
    time.sleep(0.3)
    read = w.results(hub)
    ended = w.a.post(hub, f"/v1/offers/{other['id']}/end")
    for thread in threads:
        thread.join()
    assert failures == []
    assert read.status_code == 200, read.text
    assert ended.status_code == 200, ended.text
    for offer in (w.offer["id"], other["id"]):
        responders, points = equal_totals(hub, offer)[w.a.id]
        assert responders > 0
        assert points > 0
    # Every event sent is in the open offer's totals (its fill and the threads together).
    assert kept_events(hub, w.offer["id"], w.a.id) == 3 * 6 * 155
