"""The rewards jobs, run by the hub's real scheduler on request (POST /v1/jobs/{name}/run):
rewards_sync fills each brand's feed exactly once and only with consented members named by that
brand's own references; settlement statements equal a recomputation from the postings and
never change; expiry posts lots away. The ledger balances after every test."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from partners.rewards.jobs import period_of
from partners.rewards.ledger import split
from tests.conftest import Hub, execute_sql
from tests.rewards.helpers import (
    NO_SHARE,
    SHARE,
    balance,
    brands,
    enrol,
    event,
    feed,
    launch_jobs_hub,
    ledger_problems,
    move_uses_to,
    recompute,
    run_job,
    send,
)


@pytest.fixture(scope="module")
def hub(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    with launch_jobs_hub(backend, tmp_path_factory.mktemp(f"rewards-jobs-{backend}")) as running:
        yield running


@pytest.fixture(autouse=True)
def ledger_balances_after_each_test(hub: Hub) -> Iterator[None]:
    yield
    assert ledger_problems(hub.database_url) == []


def test_sync_shares_consented_activity_once_named_by_the_readers_refs(hub: Hub) -> None:
    pair = brands(hub)
    outsider = brands(hub, purposes=["analytics"])  # no rewards_sharing
    enrol(hub, pair.a, "y1", "a-y1", SHARE)
    enrol(hub, pair.b, "y1", "b-y1", SHARE)  # shares at both: shared
    enrol(hub, pair.a, "y2", "a-y2", SHARE)
    enrol(hub, pair.b, "y2", "b-y2", NO_SHARE)  # not at B: not shared
    enrol(hub, pair.a, "y3", "a-y3", NO_SHARE)
    enrol(hub, pair.b, "y3", "b-y3", SHARE)  # not at A, where it happened: not shared
    enrol(hub, outsider.b, "y1", "c-y1", SHARE)
    sent = send(
        hub,
        pair.a,
        [
            event("y-1", "y1", "earn", 10),
            event("y-2", "y2", "earn", 20),
            event("y-3", "y3", "earn", 30),
            event("y-4", "y1", "redeem", 4),
        ],
    )
    assert sent.status_code == 200, sent.text
    first = run_job(hub, "rewards_sync")
    assert first["counts"]["feed_items"] >= 2
    items = feed(hub, pair.b)["items"]
    assert [(i["customer_ref"], i["kind"], i["points"]) for i in items] == [
        ("b-y1", "earn", 10),
        ("b-y1", "redeem", 4),
    ]
    assert all(i["source_partner_id"] == pair.a.id for i in items)
    assert feed(hub, outsider.b)["items"] == []
    assert feed(hub, pair.a)["items"] == []  # a brand's own activity is not fed back to it
    # Running again adds nothing.
    run_job(hub, "rewards_sync")
    assert len(feed(hub, pair.b)["items"]) == 2
    # A withdrawal at B stops sharing at once, for activity not yet synced too.
    cursor = feed(hub, pair.b)["next_cursor"]
    send(hub, pair.a, [event("y-5", "y1", "earn", 1)])
    pair.b.consents(hub, "b-y1", ["analytics"])
    run_job(hub, "rewards_sync")
    assert feed(hub, pair.b, cursor)["items"] == []


def test_settlement_statements_equal_a_recomputation_and_never_change(hub: Hub) -> None:
    pair = brands(hub)
    enrol(hub, pair.a, "s1", "a-s1", SHARE)
    enrol(hub, pair.b, "s1", "b-s1", SHARE)
    # A issues 100, B issues 30; B redeems 70 (A's older 100 first), A redeems 10 of it too.
    send(hub, pair.a, [event("s-a", "s1", "earn", 100, occurred_at="2026-01-01T00:00:00Z")])
    send(hub, pair.b, [event("s-b", "s1", "earn", 30, occurred_at="2026-01-02T00:00:00Z")])
    send(hub, pair.b, [event("s-rb", "s1", "redeem", 70)])
    send(hub, pair.a, [event("s-ra", "s1", "redeem", 40)])  # 30 of A's, then 10 of B's
    last_month = datetime.now(UTC).replace(day=1) - timedelta(days=3)
    move_uses_to(hub, last_month)
    run_job(hub, "settlement")
    statements = hub.as_admin("GET", "/v1/rewards/settlements").json()["items"]
    start, end = period_of(last_month, "month")
    (mine,) = [s for s in statements if s["period_start"].startswith(start.date().isoformat())]
    # B redeemed 70 issued by A; A redeemed 10 issued by B: A owes B 60.
    lines = [
        line
        for line in mine["lines"]
        if {line["from_partner_id"], line["to_partner_id"]} == {pair.a.id, pair.b.id}
    ]
    assert lines == [
        {
            "from_partner_id": pair.a.id,
            "to_partner_id": pair.b.id,
            "points": 60,
            "amount_minor": 60,
        }
    ]
    recomputed = recompute(hub, start, end)
    assert [
        {
            "from_partner_id": line["from"],
            "to_partner_id": line["to"],
            "points": line["points"],
            "amount_minor": line["amount_minor"],
        }
        for line in recomputed
    ] == mine["lines"]
    # A partner sees only its own lines; the statement never changes once closed.
    seen_by_b = pair.b.get(hub, "/v1/rewards/settlements").json()["items"]
    assert all(
        pair.b.id in (line["from_partner_id"], line["to_partner_id"])
        for s in seen_by_b
        for line in s["lines"]
    )
    run_job(hub, "settlement")
    again = hub.as_admin("GET", "/v1/rewards/settlements").json()["items"]
    assert [s for s in again if s["id"] == mine["id"]] == [mine]


def funded_offer(hub: Hub, people: str) -> tuple[Any, dict[str, Any]]:
    """Two brands, 12 shared members (``people`` 0 to 11: members are the coalition's, so a
    test of its own names its own), and an active offer A funds 300 and B 100 of."""
    pair = brands(hub, min_audience=10)
    for n in range(12):
        enrol(hub, pair.a, f"{people}{n}", f"a-{people}{n}", SHARE)
        enrol(hub, pair.b, f"{people}{n}", f"b-{people}{n}", SHARE)
    offer = pair.a.post(
        hub,
        "/v1/offers",
        {
            "partnership_id": pair.partnership,
            "title": "Fly and stay",
            "points": {pair.a.id: 300, pair.b.id: 100},
            "holdout": 0,  # a small audience: no control group
        },
    ).json()
    approved = pair.b.post(hub, f"/v1/offers/{offer['id']}/approve")
    assert approved.status_code == 200, approved.text
    return pair, offer


def this_month_between(hub: Hub, pair: Any) -> list[dict[str, Any]]:
    """This month's settlement lines between the pair's two brands."""
    start, end = period_of(datetime.now(UTC), "month")
    return [
        line
        for line in recompute(hub, start, end)
        if {line["from"], line["to"]} == {pair.a.id, pair.b.id}
    ]


def test_each_redemption_of_a_funded_lot_is_split_on_its_own(hub: Hub) -> None:
    """A funded lot's split rounds per redemption (largest remainder): three redemptions of
    1 point at B are A's 1 point each (3 owed), where one split of their sum would give A 2.
    The statement's lines equal a sum of per-use splits computed here from the raw uses."""
    pair, offer = funded_offer(hub, "ofs")
    now = datetime.now(UTC).isoformat()
    earned = send(
        hub, pair.a, [event("ofs-earn", "ofs0", "earn", 80, offer_id=offer["id"], occurred_at=now)]
    )
    assert earned.status_code == 200, earned.text
    for n, points in enumerate([1, 1, 1, 4]):  # 4 of a 60:20 split is exactly 3:1
        redeemed = send(hub, pair.b, [event(f"ofs-redeem-{n}", "ofs0", "redeem", points)])
        assert redeemed.status_code == 200, redeemed.text
    lines = this_month_between(hub, pair)
    assert lines == [{"from": pair.a.id, "to": pair.b.id, "points": 6, "amount_minor": 6}]
    # The same from the uses themselves, one split per use.
    uses = execute_sql(
        hub.database_url,
        "SELECT u.points, l.funding FROM reward_lot_uses u JOIN reward_lots l ON l.id = u.lot_id "
        "JOIN reward_events e ON e.id = l.event_ref WHERE e.event_id = 'ofs-earn' "
        "AND u.kind = 'redeem'",
    )
    assert sorted(int(points) for points, _ in uses) == [1, 1, 1, 4]
    owed = 0
    for points, funding in uses:
        shares = funding if isinstance(funding, dict) else json.loads(funding)
        owed += split(int(points), shares)[pair.a.id]
    assert owed == 6


def test_offer_funded_earns_are_charged_to_the_funding_split(hub: Hub) -> None:
    pair, offer = funded_offer(hub, "of")
    now = datetime.now(UTC).isoformat()
    earned = send(
        hub, pair.a, [event("of-earn", "of0", "earn", 80, offer_id=offer["id"], occurred_at=now)]
    )
    assert earned.status_code == 200, earned.text
    funding = execute_sql(
        hub.database_url,
        "SELECT l.funding FROM reward_lots l JOIN reward_events e ON e.id = l.event_ref "
        "WHERE e.event_id = 'of-earn'",
    )[0][0]
    funding = funding if isinstance(funding, dict) else json.loads(funding)
    assert funding == {pair.a.id: 60, pair.b.id: 20}
    # Redeemed at B: A owes B for A's 60 share only (B funded the other 20 itself).
    assert send(hub, pair.b, [event("of-redeem", "of0", "redeem", 80)]).status_code == 200
    lines = this_month_between(hub, pair)
    assert lines == [{"from": pair.a.id, "to": pair.b.id, "points": 60, "amount_minor": 60}]
    refused = send(hub, pair.a, [event("of-bad", "of1", "earn", 5, offer_id=str(pair.a.id))])
    assert refused.status_code == 422


def test_expiry_posts_old_lots_away(hub: Hub) -> None:
    pair = brands(hub)
    enrol(hub, pair.a, "x1", "a-x1", SHARE)
    send(hub, pair.a, [event("x-old", "x1", "earn", 50, occurred_at="2020-01-01T00:00:00Z")])
    send(hub, pair.a, [event("x-new", "x1", "earn", 5)])
    send(hub, pair.a, [event("x-spend", "x1", "redeem", 20)])  # from the old lot
    run = run_job(hub, "points_expiry")
    assert run["counts"]["points"] >= 30
    assert balance(hub, pair.a, "x1")["points"] == 5
    expired = execute_sql(
        hub.database_url,
        "SELECT sum(p.amount) FROM reward_postings p WHERE p.account = 'expired' AND p.txn IN "
        "(SELECT 'expiry:' || l.id FROM reward_lots l JOIN reward_events e ON "
        "e.id = l.event_ref WHERE e.event_id = 'x-old')",
    )[0][0]
    assert expired == 30
