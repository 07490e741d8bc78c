"""POST /v1/rewards/events and GET /v1/rewards/balances: idempotent, all-or-nothing events on a
double-entry ledger whose wallets follow consent; the ledger balances after every test."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from hub.core.db import normalise_url
from tests.api.matching_helpers import email
from tests.conftest import Hub, table_counts
from tests.rewards.helpers import (
    NO_SHARE,
    SHARE,
    Brands,
    balance,
    brands,
    enrol,
    event,
    ledger_problems,
    send,
)


@pytest.fixture(autouse=True)
def ledger_balances_after_each_test(hub: Hub) -> Iterator[None]:
    yield
    assert ledger_problems(hub.database_url) == []


@pytest.fixture
def pair(hub: Hub) -> Brands:
    return brands(hub)


def test_earned_points_go_to_the_wallet_consent_allows(hub: Hub, pair: Brands) -> None:
    enrol(hub, pair.a, "s1", "a-s1", SHARE)  # shares rewards at A
    enrol(hub, pair.b, "s1", "b-s1", SHARE)  # and at B
    enrol(hub, pair.a, "l1", "a-l1", NO_SHARE)  # does not share at A
    response = send(hub, pair.a, [event("e1", "s1", "earn", 100), event("e2", "l1", "earn", 40)])
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["applied"] == 2
    assert [r["wallet"] for r in body["results"]] == ["coalition", "local"]
    # A sees both; B sees the sharing member's coalition points, and nothing local to A.
    assert balance(hub, pair.a, "s1") == {
        "points": 100,
        "local_points": 0,
        "coalition_points": 100,
    }
    assert balance(hub, pair.b, "s1")["coalition_points"] == 100
    assert balance(hub, pair.a, "l1") == {
        "points": 40,
        "local_points": 40,
        "coalition_points": None,
    }
    # B holds no record of l1: a 404, as for a digest nobody knows.
    assert (
        pair.b.get(hub, "/v1/rewards/balances", id_type="email", id_hash=email("ml1")).status_code
        == 404
    )


def test_a_replay_returns_the_first_result_and_a_changed_body_is_a_conflict(
    hub: Hub, pair: Brands
) -> None:
    enrol(hub, pair.a, "r1", "a-r1", SHARE)
    first = send(hub, pair.a, [event("same", "r1", "earn", 10)]).json()
    again = send(hub, pair.a, [event("same", "r1", "earn", 10)])
    assert again.status_code == 200
    assert again.json()["replayed"] == 1
    assert again.json()["results"][0] | {"status": "applied"} == first["results"][0]
    before = table_counts(hub.database_url)
    conflict = send(hub, pair.a, [event("fresh", "r1", "earn", 5), event("same", "r1", "earn", 11)])
    assert conflict.status_code == 409, conflict.text
    assert conflict.json()["errors"] == [
        {"index": 1, "field": "event_id", "reason": "already used for a different event"}
    ]
    assert table_counts(hub.database_url) == before  # "fresh" was not applied either
    assert balance(hub, pair.a, "r1")["points"] == 10
    # The same id at another brand is another event.
    enrol(hub, pair.b, "r1", "b-r1", SHARE)
    assert send(hub, pair.b, [event("same", "r1", "earn", 11)]).json()["applied"] == 1


def test_a_refused_request_leaves_no_member_it_named_for_the_first_time(
    hub: Hub, pair: Brands
) -> None:
    """On PostgreSQL new members are committed before the events (so other brands need not
    wait for this request); a refusal must still leave nothing behind."""
    enrol(hub, pair.a, "nm-old", "a-nm-old", SHARE)
    enrol(hub, pair.a, "nm-new", "a-nm-new", SHARE)
    assert send(hub, pair.a, [event("nm-seed", "nm-old", "earn", 5)]).status_code == 200
    before = table_counts(hub.database_url)
    refused = send(
        hub,
        pair.a,
        [event("nm-earn", "nm-new", "earn", 40), event("nm-spend", "nm-old", "redeem", 6)],
    )
    assert refused.status_code == 422, refused.text
    assert refused.json()["errors"][0]["index"] == 1
    assert table_counts(hub.database_url) == before  # the new member is gone again
    # The same events, the redeem within the balance: applied, the member created.
    applied = send(
        hub,
        pair.a,
        [event("nm-earn", "nm-new", "earn", 40), event("nm-spend", "nm-old", "redeem", 5)],
    )
    assert applied.status_code == 200, applied.text
    assert balance(hub, pair.a, "nm-new")["points"] == 40
    assert balance(hub, pair.a, "nm-old")["points"] == 0


def test_a_redeem_beyond_what_may_be_spent_refuses_the_whole_request(
    hub: Hub, pair: Brands
) -> None:
    enrol(hub, pair.a, "o1", "a-o1", SHARE)
    enrol(hub, pair.b, "o1", "b-o1", NO_SHARE)  # at B the member does not share
    assert send(hub, pair.a, [event("earn", "o1", "earn", 50)]).status_code == 200
    before = table_counts(hub.database_url)
    refused = send(
        hub, pair.a, [event("more", "o1", "earn", 5), event("spend", "o1", "redeem", 80)]
    )
    assert refused.status_code == 422, refused.text
    assert refused.json()["errors"][0]["index"] == 1
    assert "55" in refused.json()["errors"][0]["reason"]
    assert table_counts(hub.database_url) == before
    # At B the coalition points are not spendable (no consent there), and B has no local lot.
    at_b = send(hub, pair.b, [event("b-spend", "o1", "redeem", 1)])
    assert at_b.status_code == 422
    assert send(hub, pair.a, [event("spend-ok", "o1", "redeem", 50)]).status_code == 200
    assert balance(hub, pair.a, "o1")["points"] == 0


def test_redeems_spend_the_oldest_lots_first_across_brands(hub: Hub, pair: Brands) -> None:
    enrol(hub, pair.a, "f1", "a-f1", SHARE)
    enrol(hub, pair.b, "f1", "b-f1", SHARE)
    send(hub, pair.a, [event("a-earn", "f1", "earn", 30, occurred_at="2026-01-01T00:00:00Z")])
    send(hub, pair.b, [event("b-earn", "f1", "earn", 30, occurred_at="2026-02-01T00:00:00Z")])
    # B redeems 40: 30 from A's older lot, 10 from its own.
    assert send(hub, pair.b, [event("b-redeem", "f1", "redeem", 40)]).status_code == 200
    from tests.conftest import execute_sql

    rows = execute_sql(
        hub.database_url,
        "SELECT l.points, l.remaining FROM reward_lots l JOIN reward_events e ON e.id = "
        "l.event_ref WHERE e.event_id IN ('a-earn', 'b-earn') ORDER BY l.earned_at",
    )
    assert [tuple(r) for r in rows] == [(30, 0), (30, 20)]
    assert balance(hub, pair.a, "f1")["coalition_points"] == 20


def test_adjustments_are_signed(hub: Hub, pair: Brands) -> None:
    enrol(hub, pair.a, "j1", "a-j1", NO_SHARE)
    assert send(hub, pair.a, [event("j+", "j1", "adjust", 25)]).json()["results"][0]["wallet"] == (
        "local"
    )
    assert send(hub, pair.a, [event("j-", "j1", "adjust", -20)]).status_code == 200
    assert balance(hub, pair.a, "j1")["points"] == 5
    assert send(hub, pair.a, [event("j--", "j1", "adjust", -6)]).status_code == 422


def test_balances_by_customer_ref_sum_a_persons_identifiers(hub: Hub, pair: Brands) -> None:
    from tests.api.matching_helpers import email, phone, rec

    pair.a.upload(
        hub,
        [
            rec(email("mp1"), "a-person", SHARE),
            rec(phone(771), "a-person", SHARE, id_type="phone"),
        ],
    )
    by_phone = event("ph", "unused", "earn", 7)
    by_phone["id_type"], by_phone["id_hash"] = "phone", phone(771)
    assert send(hub, pair.a, [event("em", "p1", "earn", 5), by_phone]).status_code == 200
    response = pair.a.get(hub, "/v1/rewards/balances", customer_ref="a-person")
    assert response.json() == {
        "points": 12,
        "local_points": 0,
        "coalition_points": 12,
    }
    unknown = pair.a.get(hub, "/v1/rewards/balances", customer_ref="nobody")
    assert unknown.status_code == 404


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"kind": "gift"}, "kind"),
        ({"points": 0}, "points"),
        ({"points": -5}, "points"),
        ({"points": 1.5}, "points"),
        ({"points": True}, "points"),
        ({"id_hash": "someone@example.org"}, "id_hash"),
        ({"id_hash": "abc"}, "id_hash"),
        ({"id_type": "fax"}, "id_type"),
        ({"occurred_at": "yesterday"}, "occurred_at"),
        ({"occurred_at": "2026-11-20T10:00:00"}, "occurred_at"),
        ({"event_id": ""}, "event_id"),
        ({"colour": "red"}, "colour"),
        ({"kind": "redeem", "offer_id": "00000000-0000-0000-0000-000000000000"}, "offer_id"),
    ],
)
def test_bad_events_are_refused_with_their_field(
    hub: Hub, pair: Brands, change: dict[str, Any], field: str
) -> None:
    bad = {**event("bad", "x", "earn", 10), **change}
    response = send(hub, pair.a, [event("good", "x", "earn", 1), bad])
    assert response.status_code == 422, response.text
    assert {(e["index"], e["field"]) for e in response.json()["errors"]} == {(1, field)}
    assert "someone@example.org" not in response.text


def test_limits_scopes_and_isolation(hub: Hub, pair: Brands) -> None:
    too_many = [event(f"e{i}", "x", "earn", 1) for i in range(1001)]
    assert send(hub, pair.a, too_many).status_code == 413
    twice = send(hub, pair.a, [event("d", "x", "earn", 1), event("d", "x", "earn", 1)])
    assert twice.status_code == 422
    _, _, reader_only = hub.partner_with_token("bank", ["rewards:read"])
    response = hub.http.post(
        "/v1/rewards/events", json={"events": [event("z", "x", "earn", 1)]}, headers=reader_only
    )
    assert response.status_code == 403
    admin = hub.as_admin("POST", "/v1/rewards/events", json={"events": []})
    assert admin.status_code == 403
    missing = pair.a.get(hub, "/v1/rewards/balances")
    assert missing.status_code == 400


def test_erasure_tombstones_the_member_and_keeps_the_postings(hub: Hub, pair: Brands) -> None:
    from tests.conftest import execute_sql

    enrol(hub, pair.a, "t1", "a-t1", SHARE)
    assert send(hub, pair.a, [event("t-earn", "t1", "earn", 60)]).status_code == 200
    member = execute_sql(
        hub.database_url,
        "SELECT m.id, m.match_key FROM reward_members m JOIN reward_events e "
        "ON e.member_id = m.id WHERE e.event_id = 't-earn'",
    )[0]
    postings = execute_sql(
        hub.database_url, "SELECT count(*) FROM reward_postings WHERE member_id = :m", m=member[0]
    )[0][0]
    erased = pair.a.post(hub, "/v1/identifiers/erase", {"customer_refs": ["a-t1"]})
    assert erased.status_code == 200, erased.text
    after = execute_sql(
        hub.database_url,
        "SELECT match_key, digest_enc, tombstoned_at FROM reward_members WHERE id = :m",
        m=member[0],
    )[0]
    assert bytes(after[0]) != bytes(member[1])
    assert after[1] is None
    assert after[2] is not None
    assert (
        execute_sql(
            hub.database_url,
            "SELECT count(*) FROM reward_postings WHERE member_id = :m",
            m=member[0],
        )[0][0]
        == postings
    )
    # The brand holds it no more; uploaded again, it is a new member with nothing from before.
    gone = pair.a.get(hub, "/v1/rewards/balances", id_type="email", id_hash=email("mt1"))
    assert gone.status_code == 404
    enrol(hub, pair.a, "t1", "a-t1", SHARE)
    assert send(hub, pair.a, [event("t-new", "t1", "earn", 1)]).status_code == 200
    assert balance(hub, pair.a, "t1")["points"] == 1


def test_a_match_key_rotation_keeps_every_balance(hub: Hub, pair: Brands) -> None:
    import time

    from tests.conftest import execute_sql, run_cli

    enrol(hub, pair.a, "k1", "a-k1", SHARE)
    assert send(hub, pair.a, [event("k-earn", "k1", "earn", 10)]).status_code == 200
    start = int(hub.app.state.keyring.match_version)
    assert run_cli(hub, "admin", "keys", "add-match-key").exit_code == 0
    deadline = time.monotonic() + 5
    while hub.app.state.keyring.match_version == start and time.monotonic() < deadline:
        time.sleep(0.05)
    rotated = run_cli(hub, "admin", "keys", "rotate-match-key", "--json")
    assert rotated.exit_code == 0, rotated.output
    versions = {
        v
        for (v,) in execute_sql(
            hub.database_url,
            "SELECT DISTINCT key_version FROM reward_members WHERE digest_enc IS NOT NULL",
        )
    }
    assert versions == {start + 1}
    assert balance(hub, pair.a, "k1")["points"] == 10
    assert send(hub, pair.a, [event("k-more", "k1", "earn", 1)]).status_code == 200
    assert balance(hub, pair.a, "k1")["points"] == 11


def test_events_of_one_request_apply_in_their_order(hub: Hub, pair: Brands) -> None:
    enrol(hub, pair.a, "q1", "a-q1", SHARE)
    ordered = send(
        hub,
        pair.a,
        [
            event("q-e1", "q1", "earn", 10),
            event("q-r1", "q1", "redeem", 10),
            event("q-e2", "q1", "earn", 5),
            event("q-r2", "q1", "redeem", 3),
            event("q-r3", "q1", "redeem", 2),
        ],
    )
    assert ordered.status_code == 200, ordered.text
    assert balance(hub, pair.a, "q1")["points"] == 0
    # A redeem before the earn that would fund it is refused, with the request.
    early = send(hub, pair.a, [event("q-r4", "q1", "redeem", 5), event("q-e3", "q1", "earn", 9)])
    assert early.status_code == 422
    assert early.json()["errors"][0]["index"] == 0
    assert balance(hub, pair.a, "q1")["points"] == 0


def test_a_request_interleaving_members_applies_as_if_event_by_event(
    hub: Hub, pair: Brands
) -> None:
    """Members' earns, redeems and adjustments shuffled together in one request: each spend
    sees exactly its member's earlier events (oldest lots first), as a model applying the
    request one event at a time says, both for the spends it refuses and for every lot's
    points left."""
    rng = random.Random(19)
    people = [f"il{n}" for n in range(6)]
    for person in people:
        enrol(hub, pair.a, person, f"a-{person}", SHARE)
    lots: dict[str, list[list[Any]]] = {person: [] for person in people}  # [event_id, left]
    events: list[dict[str, Any]] = []
    refused: dict[int, int] = {}  # index -> points the member could have spent

    def spend(person: str, points: int) -> bool:
        held = lots[person]
        if sum(left for _, left in held) < points:
            return False
        for lot in held:
            take = min(points, lot[1])
            lot[1] -= take
            points -= take
        return True

    for n in range(400):
        person, event_id = rng.choice(people), f"il-{n}"
        kind = rng.choice(["earn", "earn", "redeem", "redeem", "adjust"])
        points = rng.randint(1, 25) * (rng.choice([1, -1]) if kind == "adjust" else 1)
        if points > 0 and kind != "redeem":
            lots[person].append([event_id, points])
        elif not spend(person, abs(points)):
            if rng.random() < 0.8:  # most spends beyond the balance are not sent at all
                continue
            refused[len(events)] = sum(left for _, left in lots[person])
        events.append(event(event_id, person, kind, points))
    assert len(refused) >= 3
    assert len({e["kind"] for e in events}) == 3

    before = table_counts(hub.database_url)
    answer = send(hub, pair.a, events)
    assert answer.status_code == 422, answer.text
    errors = answer.json()["errors"]
    assert [e["index"] for e in errors] == sorted(refused)
    for error in errors:
        assert f"may spend {refused[error['index']]} points" in error["reason"], error
    assert table_counts(hub.database_url) == before

    sent = [e for i, e in enumerate(events) if i not in refused]
    applied = send(hub, pair.a, sent)
    assert applied.status_code == 200, applied.text
    assert applied.json()["applied"] == len(sent)
    engine = create_engine(normalise_url(hub.database_url))
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT e.event_id, l.remaining FROM reward_lots l "
                    "JOIN reward_events e ON e.id = l.event_ref "
                    "WHERE e.event_id LIKE 'il-%'"
                )
            ).all()
    finally:
        engine.dispose()
    expected = {event_id: left for held in lots.values() for event_id, left in held}
    assert dict(rows) == expected
    for person in people:
        assert balance(hub, pair.a, person)["points"] == sum(left for _, left in lots[person])
