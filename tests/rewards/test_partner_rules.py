"""The rewards rules, attacked as a hostile partner would: billing a partner through an offer
for people the offer never reached, earning for strangers, erasing another brand's points,
probing balances for who is known elsewhere, and activity that keeps flowing after a
withdrawal. Money and points are checked against the postings after every test."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from partners.rewards.jobs import period_of
from tests.api.matching_helpers import email, rec
from tests.conftest import Hub, execute_sql, table_counts
from tests.rewards.helpers import (
    NO_SHARE,
    SHARE,
    Brands,
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

ONLY_SHARE = ["analytics", "rewards_sharing"]  # shares rewards, no joint offers


@pytest.fixture(scope="module")
def hub(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    with launch_jobs_hub(backend, tmp_path_factory.mktemp(f"rules-{backend}")) as running:
        yield running


@pytest.fixture(autouse=True)
def ledger_balances_after_each_test(hub: Hub) -> Iterator[None]:
    yield
    assert ledger_problems(hub.database_url) == []


def now(**delta: float) -> str:
    return (datetime.now(UTC) + timedelta(**delta)).isoformat()


def funding_of(hub: Hub, event_id: str) -> dict[str, int] | None:
    rows = execute_sql(
        hub.database_url,
        "SELECT l.funding FROM reward_lots l JOIN reward_events e ON e.id = l.event_ref "
        "WHERE e.event_id = :e",
        e=event_id,
    )
    value = rows[0][0]
    return json.loads(value) if isinstance(value, str) else value


def reasons(response: Any) -> list[str]:
    return [e["reason"] for e in response.json()["errors"]]


def offer_pair(hub: Hub, people: int = 12, **offer: Any) -> tuple[Brands, dict[str, Any]]:
    """A and B share ``people`` members (joint offers and rewards consented on both sides) and
    an active offer of 300 (A) + 100 (B) points."""
    pair = brands(hub, min_audience=10)
    tag = offer.pop("tag", "o")
    for n in range(people):
        enrol(hub, pair.a, f"{tag}{n}", f"a-{tag}{n}", SHARE)
        enrol(hub, pair.b, f"{tag}{n}", f"b-{tag}{n}", SHARE)
    proposed = pair.a.post(
        hub,
        "/v1/offers",
        {
            "partnership_id": pair.partnership,
            "title": "Fly and stay",
            "points": {pair.a.id: 300, pair.b.id: 100},
            "holdout": 0,  # a small audience: no control group
            **offer,
        },
    )
    assert proposed.status_code == 201, proposed.text
    approved = pair.b.post(hub, f"/v1/offers/{proposed.json()['id']}/approve")
    assert approved.status_code == 200, approved.text
    return pair, approved.json()


# -- 1. offer funding is bound to the offer -------------------------------------------------


def test_an_offer_earn_for_a_member_of_the_audience_is_split_as_the_offer_says(hub: Hub) -> None:
    pair, offer = offer_pair(hub, tag="ok")
    sent = send(
        hub, pair.a, [event("ok-1", "ok0", "earn", 80, offer_id=offer["id"], occurred_at=now())]
    )
    assert sent.status_code == 200, sent.text
    assert funding_of(hub, "ok-1") == {pair.a.id: 60, pair.b.id: 20}


def test_an_offer_earn_for_an_outsider_bills_nobody(hub: Hub) -> None:
    pair, offer = offer_pair(hub, tag="out")
    # A holds this member, but without joint_offers consent: never in the offer's audience.
    enrol(hub, pair.a, "out-x", "a-out-x", ONLY_SHARE)
    enrol(hub, pair.b, "out-x", "b-out-x", SHARE)
    before = table_counts(hub.database_url)
    refused = send(
        hub,
        pair.a,
        [event("out-1", "out-x", "earn", 2000, offer_id=offer["id"], occurred_at=now())],
    )
    assert refused.status_code == 422, refused.text
    assert reasons(refused) == ["the member is not in your audience of this offer"]
    # A digest A never uploaded (the airline's trick): refused before any offer question.
    stranger = send(
        hub,
        pair.a,
        [event("out-2", "nobody", "earn", 2000, offer_id=offer["id"], occurred_at=now())],
    )
    assert stranger.status_code == 422
    assert stranger.json()["errors"] == [
        {"index": 0, "field": "id_hash", "reason": "your brand holds no record of this identifier"}
    ]
    assert table_counts(hub.database_url) == before  # nothing applied, nothing billed


def test_events_for_identifiers_the_brand_does_not_hold_are_refused_whatever_their_kind(
    hub: Hub,
) -> None:
    pair = brands(hub)
    enrol(hub, pair.b, "theirs", "b-theirs", SHARE)  # B's member: A holds no record of it
    before = table_counts(hub.database_url)
    for kind, points in (("earn", 10), ("redeem", 1), ("adjust", 5), ("adjust", -5)):
        response = send(hub, pair.a, [event(f"th-{kind}{points}", "theirs", kind, points)])
        assert response.status_code == 422, response.text
        assert response.json()["errors"][0]["field"] == "id_hash"
    assert table_counts(hub.database_url) == before  # no member created from thin air


def test_an_offer_earn_outside_the_window_is_refused(hub: Hub) -> None:
    starts = datetime.now(UTC) + timedelta(hours=6)
    pair, offer = offer_pair(hub, tag="win", starts_at=starts.isoformat())
    oid = offer["id"]
    before_start = send(
        hub, pair.a, [event("win-1", "win0", "earn", 10, offer_id=oid, occurred_at=now(hours=1))]
    )
    assert before_start.status_code == 422
    assert "before the offer's window opened" in reasons(before_start)[0]
    before_activation = send(
        hub, pair.a, [event("win-2", "win0", "earn", 10, offer_id=oid, occurred_at=now(days=-1))]
    )
    assert before_activation.status_code == 422
    assert "before the offer's window opened" in reasons(before_activation)[0]
    inside = send(
        hub, pair.a, [event("win-3", "win0", "earn", 10, offer_id=oid, occurred_at=now(hours=7))]
    )
    assert inside.status_code == 200, inside.text
    assert funding_of(hub, "win-3") == {pair.a.id: 8, pair.b.id: 2}


def test_an_ended_offer_funds_late_events_from_its_window_only(hub: Hub) -> None:
    pair, offer = offer_pair(hub, tag="end")
    during = now()
    ended = pair.b.post(hub, f"/v1/offers/{offer['id']}/end")
    assert ended.status_code == 200, ended.text
    assert ended.json()["status"] == "ended"
    assert pair.a.post(hub, f"/v1/offers/{offer['id']}/end").status_code == 200  # harmless
    after = send(
        hub, pair.a, [event("end-1", "end0", "earn", 40, offer_id=offer["id"], occurred_at=now())]
    )
    assert after.status_code == 422
    assert "after the offer's window closed" in reasons(after)[0]
    late = send(
        hub, pair.a, [event("end-2", "end1", "earn", 40, offer_id=offer["id"], occurred_at=during)]
    )
    assert late.status_code == 200, late.text  # it happened inside the window: still funded
    assert funding_of(hub, "end-2") == {pair.a.id: 30, pair.b.id: 10}
    # An outsider cannot end a partnership's offer, and learns nothing of it.
    _, _, outsider = hub.partner_with_token("coffee", ["offers:write"])
    foreign = hub.http.post(f"/v1/offers/{offer['id']}/end", headers=outsider)
    assert foreign.status_code == 404


def test_an_offer_earn_after_the_members_consent_was_withdrawn_is_refused(hub: Hub) -> None:
    pair, offer = offer_pair(hub, tag="wd")
    pair.a.consents(hub, "a-wd0", ["analytics", "rewards_sharing"])  # joint_offers withdrawn
    refused = send(
        hub, pair.a, [event("wd-1", "wd0", "earn", 50, offer_id=offer["id"], occurred_at=now())]
    )
    assert refused.status_code == 422
    assert reasons(refused) == ["the member is not in your audience of this offer"]
    # Erased at A: A holds no record any more.
    assert (
        pair.a.post(hub, "/v1/identifiers/erase", {"customer_refs": ["a-wd1"]}).status_code == 200
    )
    erased = send(
        hub, pair.a, [event("wd-2", "wd1", "earn", 50, offer_id=offer["id"], occurred_at=now())]
    )
    assert erased.status_code == 422
    assert erased.json()["errors"][0]["field"] == "id_hash"


def test_the_other_member_funds_only_for_its_own_audience_and_splits_are_written_once(
    hub: Hub,
) -> None:
    pair, offer = offer_pair(hub, tag="fo")
    # B's side of fo0 leaves B's audience (joint_offers withdrawn at B): A funds it all.
    pair.b.consents(hub, "b-fo0", ["analytics", "rewards_sharing"])
    alone = send(
        hub, pair.a, [event("fo-1", "fo0", "earn", 80, offer_id=offer["id"], occurred_at=now())]
    )
    # Matching on joint_offers needs both sides: fo0 left A's audience too.
    assert alone.status_code == 422
    shared = send(
        hub, pair.a, [event("fo-2", "fo1", "earn", 80, offer_id=offer["id"], occurred_at=now())]
    )
    assert shared.status_code == 200, shared.text
    assert funding_of(hub, "fo-2") == {pair.a.id: 60, pair.b.id: 20}
    # Whatever happens later at B, the split written stays as it was.
    assert (
        pair.b.post(hub, "/v1/identifiers/erase", {"customer_refs": ["b-fo1"]}).status_code == 200
    )
    assert funding_of(hub, "fo-2") == {pair.a.id: 60, pair.b.id: 20}


def test_the_earner_funds_alone_when_the_other_sides_person_is_filtered_out(hub: Hub) -> None:
    pair = brands(hub, min_audience=10)
    for n in range(12):
        enrol(hub, pair.a, f"fl{n}", f"a-fl{n}", SHARE)
        pair.b.upload(hub, [rec(email(f"mfl{n}"), f"b-fl{n}", SHARE, tier="gold")])
    pair.b.upload(hub, [rec(email("mfl99"), "b-fl99", SHARE, tier="silver")])
    enrol(hub, pair.a, "fl99", "a-fl99", SHARE)
    proposed = pair.a.post(
        hub,
        "/v1/offers",
        {
            "partnership_id": pair.partnership,
            "title": "Gold stays",
            "points": {pair.a.id: 300, pair.b.id: 100},
            "holdout": 0,
        },
    ).json()
    approved = pair.b.post(
        hub, f"/v1/offers/{proposed['id']}/approve", {"filters": {"tier": ["gold"]}}
    )
    assert approved.status_code == 200, approved.text
    # fl99 is in A's audience (A has no filter) but B filtered its side out: A funds alone.
    sent = send(
        hub, pair.a, [event("fl-1", "fl99", "earn", 80, offer_id=proposed["id"], occurred_at=now())]
    )
    assert sent.status_code == 200, sent.text
    assert funding_of(hub, "fl-1") is None  # the issuer (A) alone
    both = send(
        hub, pair.a, [event("fl-2", "fl0", "earn", 80, offer_id=proposed["id"], occurred_at=now())]
    )
    assert both.status_code == 200
    assert funding_of(hub, "fl-2") == {pair.a.id: 60, pair.b.id: 20}


# -- 10. dates are sane -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "occurred_at",
    ["1999-12-31T23:59:59+00:00", "0001-01-01T00:00:00+00:00", "future-2d", "9999-12-31T00:00:00Z"],
)
def test_events_from_before_2000_or_beyond_tomorrow_are_refused(hub: Hub, occurred_at: str) -> None:
    pair = brands(hub)
    enrol(hub, pair.a, "dt", "a-dt", SHARE)
    when = now(days=2) if occurred_at == "future-2d" else occurred_at
    response = send(hub, pair.a, [event("dt-bad", "dt", "earn", 5, occurred_at=when)])
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["field"] == "occurred_at"
    assert (
        send(hub, pair.a, [event("dt-ok", "dt", "earn", 5, occurred_at=now(hours=23))]).status_code
        == 200
    )


# -- 4. no membership oracle --------------------------------------------------------------------


def test_balances_never_tell_whether_another_brand_knows_a_digest(hub: Hub) -> None:
    pair = brands(hub)
    enrol(hub, pair.a, "orc", "a-orc", SHARE)
    assert send(hub, pair.a, [event("orc-1", "orc", "earn", 100)]).status_code == 200
    known_elsewhere = pair.b.get(
        hub, "/v1/rewards/balances", id_type="email", id_hash=email("morc")
    )
    unknown = pair.b.get(hub, "/v1/rewards/balances", id_type="email", id_hash=email("mnobody"))
    assert known_elsewhere.status_code == unknown.status_code == 404

    def shape(body: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in body.items() if k not in {"instance", "request_id"}}

    assert shape(known_elsewhere.json()) == shape(unknown.json())
    own = pair.a.get(hub, "/v1/rewards/balances", id_type="email", id_hash=email("morc")).json()
    assert own == {"points": 100, "local_points": 0, "coalition_points": 100}
    by_ref = pair.b.get(hub, "/v1/rewards/balances", customer_ref="a-orc")  # A's ref, at B
    assert by_ref.status_code == 404


# -- 2. erasure is per brand ---------------------------------------------------------------------


def member_row(hub: Hub, event_id: str) -> tuple[int, bytes, Any]:
    (row,) = execute_sql(
        hub.database_url,
        "SELECT m.id, m.match_key, m.tombstoned_at FROM reward_members m "
        "JOIN reward_events e ON e.member_id = m.id WHERE e.event_id = :e",
        e=event_id,
    )
    return int(row[0]), bytes(row[1]), row[2]


def wallet_points(hub: Hub, member: int) -> dict[tuple[str, str | None], int]:
    """Each wallet's points recomputed from the postings alone: (account, owner) -> points."""
    from sqlalchemy import create_engine, func, select

    from hub.core.db import normalise_url
    from partners.rewards.models import RewardPosting as P

    engine = create_engine(normalise_url(hub.database_url))
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                select(P.account, P.partner_id, func.sum(P.amount))
                .where(P.member_id == member)
                .group_by(P.account, P.partner_id)
            ).all()
    finally:
        engine.dispose()
    return {(a, str(p) if p else None): int(s) for a, p, s in rows}


def delivered_items(hub: Hub, partner_id: str) -> list[dict[str, Any]]:
    from uuid import UUID

    from sqlalchemy import create_engine, select

    from hub.core.db import normalise_url
    from partners.webhooks.models import WebhookDelivery as D

    engine = create_engine(normalise_url(hub.database_url))
    try:
        with engine.connect() as conn:
            payloads = conn.execute(
                select(D.payload).where(D.partner_id == UUID(partner_id)).order_by(D.created_at)
            ).scalars()
            return [item for payload in payloads for item in payload["items"]]
    finally:
        engine.dispose()


def test_one_brands_erasure_leaves_the_coalition_wallet_and_other_brands_points(hub: Hub) -> None:
    pair = brands(hub)
    enrol(hub, pair.a, "er", "a-er", SHARE)  # shares at A: A's earns go to the coalition
    enrol(hub, pair.b, "er", "b-er", NO_SHARE)  # not at B: B's earns stay local to B
    assert send(hub, pair.a, [event("er-a", "er", "earn", 100)]).status_code == 200
    assert send(hub, pair.b, [event("er-b", "er", "earn", 40)]).status_code == 200
    member, key, _ = member_row(hub, "er-a")
    erased = pair.a.post(hub, "/v1/identifiers/erase", {"customer_refs": ["a-er"]})
    assert erased.status_code == 200, erased.text
    still, still_key, tombstoned = member_row(hub, "er-a")
    assert (still, still_key, tombstoned) == (member, key, None)  # B still holds the member
    at_b = pair.b.get(hub, "/v1/rewards/balances", id_type="email", id_hash=email("mer"))
    assert at_b.json() == {"points": 40, "local_points": 40, "coalition_points": None}
    points = wallet_points(hub, member)
    assert points[("coalition", None)] == 100  # the coalition wallet stays
    # B's erasure: now nobody holds the member; B's local points are forfeited to B.
    assert pair.b.post(hub, "/v1/identifiers/erase", {"customer_refs": ["b-er"]}).status_code == 200
    _, new_key, tombstoned = member_row(hub, "er-a")
    assert new_key != key
    assert tombstoned is not None
    forfeited = execute_sql(
        hub.database_url,
        "SELECT sum(amount) FROM reward_postings WHERE account = 'forfeited' AND txn IN "
        "(SELECT 'forfeit:' || l.id FROM reward_lots l JOIN reward_events e "
        "ON e.id = l.event_ref WHERE e.event_id = 'er-b')",
    )[0][0]
    assert forfeited == 40


def test_a_brands_erasure_forfeits_only_its_own_local_lots(hub: Hub) -> None:
    pair = brands(hub)
    enrol(hub, pair.a, "lf", "a-lf", NO_SHARE)  # local at A
    enrol(hub, pair.b, "lf", "b-lf", NO_SHARE)  # local at B
    assert send(hub, pair.a, [event("lf-a", "lf", "earn", 70)]).status_code == 200
    assert send(hub, pair.b, [event("lf-b", "lf", "earn", 30)]).status_code == 200
    member, _, _ = member_row(hub, "lf-a")
    assert pair.a.post(hub, "/v1/identifiers/erase", {"customer_refs": ["a-lf"]}).status_code == 200
    points = wallet_points(hub, member)
    assert points[("local", pair.a.id)] == 0  # A's points went to its forfeited account
    assert points[("local", pair.b.id)] == 30  # B's stay, spendable at B
    assert send(hub, pair.b, [event("lf-rb", "lf", "redeem", 30)]).status_code == 200


def test_settlements_stay_reproducible_after_erasures(hub: Hub) -> None:
    pair = brands(hub)
    enrol(hub, pair.a, "st", "a-st", SHARE)
    enrol(hub, pair.b, "st", "b-st", SHARE)
    send(hub, pair.a, [event("st-a", "st", "earn", 100, occurred_at="2026-01-01T00:00:00Z")])
    send(hub, pair.b, [event("st-rb", "st", "redeem", 70)])
    last_month = datetime.now(UTC).replace(day=1) - timedelta(days=3)
    move_uses_to(hub, last_month)
    run_job(hub, "settlement")
    start, end = period_of(last_month, "month")
    statements = hub.as_admin("GET", "/v1/rewards/settlements").json()["items"]
    (closed,) = [s for s in statements if s["period_start"].startswith(start.date().isoformat())]
    before = recompute(hub, start, end)
    for member, ref in ((pair.a, "a-st"), (pair.b, "b-st")):
        assert (
            member.post(hub, "/v1/identifiers/erase", {"customer_refs": [ref]}).status_code == 200
        )
    assert recompute(hub, start, end) == before  # the postings and uses are all kept
    again = hub.as_admin("GET", "/v1/rewards/settlements").json()["items"]
    assert [s for s in again if s["id"] == closed["id"]] == [closed]
    assert {"from": pair.a.id, "to": pair.b.id, "points": 70, "amount_minor": 70} in before


def test_retention_tombstones_members_no_brand_holds(hub: Hub) -> None:
    pair = brands(hub)
    enrol(hub, pair.a, "rt", "a-rt", SHARE)
    assert send(hub, pair.a, [event("rt-a", "rt", "earn", 5)]).status_code == 200
    _, key, _ = member_row(hub, "rt-a")
    # Records removed without an erasure request (a replace upload, offboarding).
    execute_sql(hub.database_url, "DELETE FROM identifier_records WHERE customer_ref = 'a-rt'")
    run = run_job(hub, "retention_purge")
    assert run["counts"]["reward_members_tombstoned"] >= 1
    _, new_key, tombstoned = member_row(hub, "rt-a")
    assert new_key != key
    assert tombstoned is not None


# -- 3. withdrawal and erasure reach the feed ------------------------------------------------


def shared_pair(hub: Hub, tag: str) -> Brands:
    pair = brands(hub)
    enrol(hub, pair.a, tag, f"a-{tag}", SHARE)
    enrol(hub, pair.b, tag, f"b-{tag}", SHARE)
    assert send(hub, pair.a, [event(f"{tag}-1", tag, "earn", 10)]).status_code == 200
    run_job(hub, "rewards_sync")
    items = feed(hub, pair.b)["items"]
    assert [(i["customer_ref"], i["kind"]) for i in items] == [(f"b-{tag}", "earn")]
    return pair


def test_a_withdrawal_at_the_source_reaches_every_reader_once_and_stops_the_flow(
    hub: Hub,
) -> None:
    pair = shared_pair(hub, "wf")
    cursor = feed(hub, pair.b)["next_cursor"]
    pair.a.consents(hub, "a-wf", ["analytics", "joint_offers"])  # rewards_sharing withdrawn
    assert send(hub, pair.a, [event("wf-2", "wf", "earn", 10)]).status_code == 200
    run_job(hub, "rewards_sync")
    run_job(hub, "rewards_sync")  # again: nothing twice
    items = feed(hub, pair.b, cursor)["items"]
    assert [(i["customer_ref"], i["kind"], i["points"], i["source_partner_id"]) for i in items] == [
        ("b-wf", "withdrawn", 0, pair.a.id)
    ]
    assert feed(hub, pair.a)["items"] == []  # A never received anything of its own member


def test_an_erasure_at_the_source_reaches_the_reader_and_its_webhook(hub: Hub) -> None:
    pair = shared_pair(hub, "ef")
    webhook = hub.as_admin(
        "PATCH", f"/v1/partners/{pair.b.id}", json={"webhook_url": "http://127.0.0.1:9/hook"}
    )
    assert webhook.status_code == 200, webhook.text
    cursor = feed(hub, pair.b)["next_cursor"]
    assert pair.a.post(hub, "/v1/identifiers/erase", {"customer_refs": ["a-ef"]}).status_code == 200
    run_job(hub, "rewards_sync")
    items = feed(hub, pair.b, cursor)["items"]
    assert [(i["customer_ref"], i["kind"]) for i in items] == [("b-ef", "withdrawn")]
    delivered = delivered_items(hub, pair.b.id)
    assert [(i["customer_ref"], i["kind"]) for i in delivered] == [("b-ef", "withdrawn")]


def test_withdrawn_items_outlive_feed_retention_until_the_reader_has_passed_them(
    hub: Hub,
) -> None:
    pair = shared_pair(hub, "kp")
    pair.a.consents(hub, "a-kp", ["analytics"])
    run_job(hub, "rewards_sync")
    execute_sql(
        hub.database_url,
        "UPDATE reward_feed SET created_at = :old WHERE customer_ref = 'b-kp'",
        old=datetime.now(UTC) - timedelta(days=3650),
    )
    run_job(hub, "retention_purge")
    kinds = [i["kind"] for i in feed(hub, pair.b)["items"]]
    assert kinds == ["withdrawn"]  # the old earn went; the unread withdrawal stays
    page = feed(hub, pair.b)
    feed(hub, pair.b, page["next_cursor"])  # the reader moves past it
    run_job(hub, "retention_purge")
    assert feed(hub, pair.b)["items"] == []


def test_the_sync_reads_withdrawals_past_grants_and_batch_ends_each_once(
    backend: str, tmp_path: Path
) -> None:
    """Withdrawals (a consent update, an erasure) scattered among many grants, read two at a
    time: each reaches the reader once, the grants are never read (a first load publishes one
    per person), and the cursor ends at the last consent event."""
    with launch_jobs_hub(backend, tmp_path, HUB_REWARDS_SYNC_BATCH="2") as hub:
        pair = brands(hub)
        for n in range(5):
            enrol(hub, pair.a, f"wb{n}", f"a-wb{n}", SHARE)
            enrol(hub, pair.b, f"wb{n}", f"b-wb{n}", SHARE)
            earn = event(f"wb-{n}", f"wb{n}", "earn", 10)
            assert send(hub, pair.a, [earn]).status_code == 200
        assert run_job(hub, "rewards_sync")["counts"]["feed_items"] == 5
        cursor = feed(hub, pair.b)["next_cursor"]

        def grants(tag: str) -> None:  # people A holds alone: consent events that grant
            pair.a.upload(hub, [rec(email(f"{tag}{i}"), f"a-{tag}{i}", SHARE) for i in range(7)])

        grants("g1-")
        pair.a.consents(hub, "a-wb0", ["analytics"])
        grants("g2-")
        for ref in ("a-wb1", "a-wb2"):
            pair.a.consents(hub, ref, ["joint_offers"])
        grants("g3-")
        erased = pair.a.post(hub, "/v1/identifiers/erase", {"customer_refs": ["a-wb3"]})
        assert erased.status_code == 200, erased.text
        grants("g4-")
        pair.a.consents(hub, "a-wb4", [*SHARE, "joint_offers"])  # a grant: not a withdrawal

        run = run_job(hub, "rewards_sync")
        assert run["counts"]["consent_events"] == 4  # the withdrawals, not the 28 grants
        assert run["counts"]["withdrawn_items"] == 4
        items = feed(hub, pair.b, cursor)["items"]
        assert sorted((i["customer_ref"], i["kind"]) for i in items) == [
            (f"b-wb{n}", "withdrawn") for n in range(4)
        ]
        last = execute_sql(hub.database_url, "SELECT max(seq) FROM consent_events")[0][0]
        runs = hub.as_admin("GET", "/v1/jobs/rewards_sync/runs").json()["items"]
        assert max(r["cursor"].get("consent", 0) for r in runs) == last
        again = run_job(hub, "rewards_sync")
        assert again["counts"]["consent_events"] == 0
        assert feed(hub, pair.b, cursor)["items"] == items
