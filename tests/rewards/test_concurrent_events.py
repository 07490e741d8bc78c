"""Event requests of two brands naming the same new members at the same time, in opposite
orders, on PostgreSQL: both are applied, none is refused by a deadlock (503), and the ledger
balances. (The soak run found 503s here: new members were inserted in request order.)"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from tests.api.matching_helpers import email, rec
from tests.conftest import PG_URL, Hub, launch_hub
from tests.rewards.helpers import SHARE, Brands, brands, ledger_problems

pytestmark = pytest.mark.skipif(
    not PG_URL, reason="row locks and deadlocks are PostgreSQL's: set HUB_TEST_POSTGRES_URL"
)
PEOPLE, ROUNDS = 400, 4


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    with launch_hub("postgres", tmp_path_factory.mktemp("hub-postgres")) as running:
        yield running


def events(prefix: str, people: list[str]) -> dict[str, Any]:
    now = datetime.now(UTC).isoformat()
    return {
        "events": [
            {
                "event_id": f"{prefix}-{n}",
                "id_type": "email",
                "id_hash": email(person),
                "kind": "earn",
                "points": 10,
                "occurred_at": now,
            }
            for n, person in enumerate(people)
        ]
    }


def test_two_brands_creating_the_same_members_at_once_never_deadlock(hub: Hub) -> None:
    pair: Brands = brands(hub)
    statuses: list[int] = []
    for round_ in range(ROUNDS):
        people = [f"race{round_}-{n}" for n in range(PEOPLE)]
        for member, side in ((pair.a, "a"), (pair.b, "b")):
            member.upload(hub, [rec(email(p), f"{side}-{p}", SHARE) for p in people])
        start = threading.Barrier(2)

        def post(member: Any, prefix: str, order: list[str], start: threading.Barrier) -> None:
            body = events(prefix, order)
            start.wait()
            statuses.append(member.post(hub, "/v1/rewards/events", body).status_code)

        threads = [
            threading.Thread(target=post, args=(pair.a, f"a{round_}", people, start)),
            threading.Thread(target=post, args=(pair.b, f"b{round_}", people[::-1], start)),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert statuses == [200] * (2 * ROUNDS)
    assert ledger_problems(hub.database_url) == []


def test_an_earn_never_waits_for_a_spend_of_the_same_member_but_spends_queue(hub: Hub) -> None:
    """Spending is serialised per member (its lots are read, then taken from); an earn only
    adds a lot, so it must not queue behind a spender (the soak's 1,000-event requests of
    four brands naming the same coalition members waited 18 s at the median when every
    member named was locked)."""
    pair: Brands = brands(hub)
    pair.a.upload(hub, [rec(email("locked-1"), "a-locked-1", SHARE)])
    first = pair.a.post(hub, "/v1/rewards/events", events("seed", ["locked-1"]))
    assert first.status_code == 200, first.text
    with psycopg.connect(hub.database_url) as spender:  # holds the member as a spend does
        spender.execute("SELECT id FROM reward_members FOR NO KEY UPDATE")
        # Answered while the member is still held (an earn that waited for the lock would
        # hang until the rollback below, past the client's 30 s time-out).
        earn = pair.a.post(hub, "/v1/rewards/events", events("earn", ["locked-1"]))
        assert earn.status_code == 200, earn.text
        answers: list[Any] = []
        redeem = events("redeem", ["locked-1"])
        redeem["events"][0].update(kind="redeem", points=5)
        waiting = threading.Thread(
            target=lambda: answers.append(pair.a.post(hub, "/v1/rewards/events", redeem))
        )
        waiting.start()
        waiting.join(timeout=2)
        assert waiting.is_alive()  # the redeem queues for the member
        spender.rollback()
    waiting.join(timeout=30)
    assert answers
    assert answers[0].status_code == 200, answers[0].text
    assert ledger_problems(hub.database_url) == []


def test_two_brands_racing_to_spend_the_same_coalition_points_spend_them_once(hub: Hub) -> None:
    """A hostile pair of requests: both brands redeem a member's whole coalition balance at
    the same instant, while a third request earns for the same member. Exactly one redeem is
    applied, the other is refused whole, the earn is applied, and the balance equals what the
    ledger's postings say."""
    pair: Brands = brands(hub)
    for round_ in range(5):
        person = f"race-spend-{round_}"
        pair.a.upload(hub, [rec(email(person), f"a-{person}", SHARE)])
        pair.b.upload(hub, [rec(email(person), f"b-{person}", SHARE)])
        earned = pair.a.post(hub, "/v1/rewards/events", events(f"e-{round_}", [person]))
        assert earned.status_code == 200, earned.text  # 10 coalition points
        start = threading.Barrier(3)
        answers: dict[str, int] = {}

        def send(
            name: str,
            member: Any,
            body: dict[str, Any],
            start: threading.Barrier = start,
            answers: dict[str, int] = answers,
        ) -> None:
            start.wait()
            answers[name] = member.post(hub, "/v1/rewards/events", body).status_code

        spend_a, spend_b = (events(f"{side}-r-{round_}", [person]) for side in "ab")
        for body in (spend_a, spend_b):
            body["events"][0].update(kind="redeem", points=10)
        threads = [
            threading.Thread(target=send, args=("a", pair.a, spend_a)),
            threading.Thread(target=send, args=("b", pair.b, spend_b)),
            threading.Thread(target=send, args=("earn", pair.b, events(f"b-e-{round_}", [person]))),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert answers["earn"] == 200
        assert sorted([answers["a"], answers["b"]]) in ([200, 422], [200, 200])
        redeemed = 10 * [answers["a"], answers["b"]].count(200)
        # Both may pass only when the concurrent earn's 10 points were there for the second.
        balance = pair.a.get(
            hub, "/v1/rewards/balances", id_type="email", id_hash=email(person)
        ).json()
        assert balance["coalition_points"] == 20 - redeemed
        assert balance["coalition_points"] >= 0
        with psycopg.connect(hub.database_url) as conn:
            posted = conn.execute(
                "SELECT count(DISTINCT l.id), coalesce(sum(p.amount), 0) FROM reward_postings p "
                "JOIN reward_lots l ON l.id = p.lot_id JOIN reward_events e ON e.id = l.event_ref "
                "WHERE e.event_id IN (%s, %s)",
                (f"e-{round_}-0", f"b-e-{round_}-0"),  # the two earns' lots
            ).fetchone()
        assert posted is not None
        assert posted[0] == 2  # (the query once named no event: a sum of nothing is 0)
        assert posted[1] == balance["coalition_points"]
    assert ledger_problems(hub.database_url) == []


def _race_for_a_new_member(
    hub: Hub, tag: str, spend: int, *, alone: tuple[str, ...] = ()
) -> tuple[Brands, Any]:
    """A's request earns 10 for a member new to the ledger (``tag``), then redeems ``spend``
    of another member's 10 points, which a spender holds locked: A stops there, its new member
    made. Meanwhile B earns 10 for the same new member: answered 200 while A still waits.
    Then the spender lets go. A's answer is returned. A also earns for the new members
    ``alone``, whom no other brand holds."""
    pair: Brands = brands(hub)
    spender = f"{tag}-spender"
    pair.a.upload(hub, [rec(email(spender), f"a-{spender}", SHARE)])
    seeded = pair.a.post(hub, "/v1/rewards/events", events(f"seed-{spender}", [spender]))
    assert seeded.status_code == 200, seeded.text
    for side, label in ((pair.a, "a"), (pair.b, "b")):
        side.upload(hub, [rec(email(tag), f"{label}-{tag}", SHARE)])
    pair.a.upload(hub, [rec(email(person), f"a-{person}", SHARE) for person in alone])
    body = events(f"a-{tag}", [tag, spender, *alone])
    body["events"][1].update(kind="redeem", points=spend)
    answers: list[Any] = []
    with psycopg.connect(hub.database_url) as held:
        held.execute(
            "SELECT m.id FROM reward_members m JOIN reward_events e ON e.member_id = m.id "
            "WHERE e.event_id = %s FOR NO KEY UPDATE",
            (f"seed-{spender}-0",),
        )
        slow = threading.Thread(
            target=lambda: answers.append(pair.a.post(hub, "/v1/rewards/events", body))
        )
        slow.start()
        slow.join(timeout=2)
        assert slow.is_alive()  # A waits for the spender's lock, its new member made
        other = pair.b.post(hub, "/v1/rewards/events", events(f"b-{tag}", [tag]))
        assert other.status_code == 200, other.text
        assert slow.is_alive()
        held.rollback()
    slow.join(timeout=30)
    assert answers
    return pair, answers[0]


def test_a_request_that_creates_a_member_does_not_hold_it_from_other_brands(hub: Hub) -> None:
    """B's earn for a member A's running request created is answered before A ends: the member
    was committed on its own. (Inserted in A's transaction, B's insert of the same unique key
    waited for A's commit: the soak's 514 backend-seconds on new members.)"""
    pair, answer = _race_for_a_new_member(hub, "newcomer", spend=5)
    assert answer.status_code == 200, answer.text
    for side in (pair.a, pair.b):  # 10 points earned at each brand, shared by both
        balance = side.get(hub, "/v1/rewards/balances", id_type="email", id_hash=email("newcomer"))
        assert balance.json()["coalition_points"] == 20, balance.text
    assert ledger_problems(hub.database_url) == []


def test_a_refused_request_keeps_a_member_another_brand_used_meanwhile(hub: Hub) -> None:
    """A's request creates a new member and is then refused; B earned for that member while A
    was still running. The refusal removes what A created only where no one else uses it:
    B's points stay, the ledger balances."""
    pair, answer = _race_for_a_new_member(hub, "shared-new", spend=500, alone=("lonely-new",))
    assert answer.status_code == 422, answer.text
    balance = pair.b.get(hub, "/v1/rewards/balances", id_type="email", id_hash=email("shared-new"))
    assert balance.json()["coalition_points"] == 10, balance.text
    with psycopg.connect(hub.database_url) as conn:
        named = conn.execute(
            "SELECT count(*) FROM reward_events WHERE event_id LIKE 'a-shared-new-%'"
        ).fetchone()
        members = {
            ref: conn.execute(
                "SELECT count(*) FROM reward_members m JOIN identifier_records r "
                "ON r.match_key = m.match_key WHERE r.customer_ref = %s",
                (ref,),
            ).fetchone()
            for ref in ("b-shared-new", "a-lonely-new")
        }
    assert named == (0,)  # nothing of A's request was applied
    # B's member stays; A's other new member, named by no one else, is removed.
    assert members == {"b-shared-new": (1,), "a-lonely-new": (0,)}
    assert ledger_problems(hub.database_url) == []
