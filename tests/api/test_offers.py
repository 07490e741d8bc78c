"""Joint offers: proposal and approval, activation on the consented overlap, audiences that
hold only the caller's own references, filters that never touch the other side, and the
pull-back of people after consent withdrawal or erasure."""

from __future__ import annotations

import csv
import io
import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.api.matching_helpers import Member, email, members, rec
from tests.conftest import Hub, execute_sql


def seed(hub: Hub, a: Member, b: Member) -> None:
    """40 shared people with joint_offers on both sides; A's tier and B's city vary."""
    a.upload(
        hub,
        [rec(email(f"o{n}"), f"a{n:02d}", tier="gold" if n < 25 else "silver") for n in range(40)]
        + [rec(email(f"only-a{n}"), f"a-only{n}") for n in range(10)],
    )
    b.upload(
        hub,
        [rec(email(f"o{n}"), f"b{n:02d}", city="paris" if n % 2 else "rome") for n in range(40)]
        + [rec(email(f"only-b{n}"), f"b-only{n}") for n in range(10)],
    )


@pytest.fixture
def pair(hub: Hub) -> tuple[Member, Member, str]:
    a, b, partnership = members(hub, min_audience=10)
    seed(hub, a, b)
    return a, b, partnership


def propose(hub: Hub, proposer: Member, other: Member, partnership: str, **extra: Any) -> Any:
    return proposer.post(
        hub,
        "/v1/offers",
        {
            "partnership_id": partnership,
            "title": "Fly and stay: 2,000 bonus points",
            "points": {proposer.id: 1000, other.id: 1000},
            "holdout": 0,  # audiences near min_audience: no control group unless asked
            **extra,
        },
    )


def audience(hub: Hub, member: Member, offer: str) -> list[str]:
    refs: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 7}
        if cursor:
            params["cursor"] = cursor
        page = member.get(hub, f"/v1/offers/{offer}/audience", **params)
        assert page.status_code == 200, page.text
        body = page.json()
        refs += [item["customer_ref"] for item in body["items"]]
        cursor = body["next_cursor"]
        if not cursor:
            return refs


def test_an_offer_activates_on_approval_and_each_side_gets_only_its_own_refs(
    hub: Hub, pair: Any
) -> None:
    a, b, partnership = pair
    proposed = propose(hub, a, b, partnership)
    assert proposed.status_code == 201, proposed.text
    offer = proposed.json()
    assert offer["status"] == "proposed"
    assert list(offer["approvals"]) == [a.id]
    assert a.get(hub, f"/v1/offers/{offer['id']}/audience").status_code == 409
    approved = b.post(hub, f"/v1/offers/{offer['id']}/approve")
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "active"
    assert approved.json()["audience_size"] == 40
    a_refs, b_refs = audience(hub, a, offer["id"]), audience(hub, b, offer["id"])
    assert a_refs == [f"a{n:02d}" for n in range(40)]
    assert b_refs == [f"b{n:02d}" for n in range(40)]
    # Approving again is harmless; the proposer's approval was implicit.
    assert b.post(hub, f"/v1/offers/{offer['id']}/approve").json()["status"] == "active"
    assert a.post(hub, f"/v1/offers/{offer['id']}/approve").status_code == 200
    listed = a.get(hub, "/v1/offers").json()["items"]
    assert offer["id"] in {o["id"] for o in listed}


def test_a_sides_filters_never_change_the_other_sides_audience(hub: Hub, pair: Any) -> None:
    a, b, partnership = pair
    plain = propose(hub, a, b, partnership).json()
    b.post(hub, f"/v1/offers/{plain['id']}/approve")
    filtered = propose(hub, a, b, partnership, filters={a.id: {"tier": ["gold"]}}).json()
    approved = b.post(hub, f"/v1/offers/{filtered['id']}/approve", {"filters": {"city": ["paris"]}})
    assert approved.status_code == 200, approved.text
    # A's audience: its gold people only, whatever B filtered on.
    assert audience(hub, a, filtered["id"]) == [f"a{n:02d}" for n in range(25)]
    # B's audience: its Paris people only, whatever A filtered on.
    assert audience(hub, b, filtered["id"]) == [f"b{n:02d}" for n in range(40) if n % 2]
    assert audience(hub, b, plain["id"]) == [f"b{n:02d}" for n in range(40)]
    # Neither side sees the other's filters or audience size.
    seen_by_a = a.get(hub, f"/v1/offers/{filtered['id']}").json()
    assert seen_by_a["filters"] == {"tier": ["gold"]}
    assert seen_by_a["audience_size"] == 25
    seen_by_b = b.get(hub, f"/v1/offers/{filtered['id']}").json()
    assert seen_by_b["filters"] == {"city": ["paris"]}
    assert seen_by_b["audience_size"] == 20
    assert "gold" not in json.dumps(seen_by_b)


def test_an_audience_below_the_threshold_cannot_activate(hub: Hub, pair: Any) -> None:
    a, b, partnership = pair
    offer = propose(hub, a, b, partnership, filters={a.id: {"tier": ["silver"]}}).json()
    # 15 silver people on A's side, but B keeps only Paris among 40... fine; B filters harder:
    refused = b.post(hub, f"/v1/offers/{offer['id']}/approve", {"filters": {"city": ["nowhere"]}})
    assert refused.status_code == 422, refused.text
    assert refused.json()["type"] == "urn:hub:problem:privacy-refusal"
    after = b.get(hub, f"/v1/offers/{offer['id']}").json()
    assert after["status"] == "proposed"
    assert list(after["approvals"]) == [a.id]
    entries = hub.as_admin("GET", "/v1/audit", params={"limit": 50}).json()["items"]
    assert any(
        e["action"] == "offer.activation_refused" and e["target_id"] == offer["id"] for e in entries
    )
    ok = b.post(hub, f"/v1/offers/{offer['id']}/approve")
    assert ok.status_code == 200, ok.text
    assert ok.json()["status"] == "active"
    assert len(audience(hub, a, offer["id"])) == 15


def test_withdrawal_and_erasure_pull_people_out_of_both_audiences(hub: Hub, pair: Any) -> None:
    a, b, partnership = pair
    offer = propose(hub, a, b, partnership).json()
    b.post(hub, f"/v1/offers/{offer['id']}/approve")
    start_a = a.get(hub, f"/v1/offers/{offer['id']}/audience/changes").json()
    assert start_a["items"] == []
    assert start_a["has_more"] is False
    cursor_a = start_a["next_cursor"]
    cursor_b = b.get(hub, f"/v1/offers/{offer['id']}/audience/changes").json()["next_cursor"]
    b.consents(hub, "b03", ["analytics"])  # B's person 3 withdraws joint_offers
    erased = a.post(hub, "/v1/identifiers/erase", {"customer_refs": ["a07"]})
    assert erased.status_code == 200
    changes_a = a.get(hub, f"/v1/offers/{offer['id']}/audience/changes", cursor=cursor_a).json()
    assert sorted(c["customer_ref"] for c in changes_a["items"]) == ["a03", "a07"]
    assert all(c["change"] == "removed" for c in changes_a["items"])
    changes_b = b.get(hub, f"/v1/offers/{offer['id']}/audience/changes", cursor=cursor_b).json()
    assert sorted(c["customer_ref"] for c in changes_b["items"]) == ["b03", "b07"]
    assert "a03" not in audience(hub, a, offer["id"])
    assert len(audience(hub, a, offer["id"])) == 38
    # Nothing new since the last cursor.
    again = a.get(
        hub, f"/v1/offers/{offer['id']}/audience/changes", cursor=changes_a["next_cursor"]
    ).json()
    assert again["items"] == []


def test_the_maintenance_loop_pulls_people_out_without_a_read(hub: Hub, pair: Any) -> None:
    a, b, partnership = pair
    title = f"maintenance {uuid.uuid4()}"
    offer = propose(hub, a, b, partnership, title=title).json()
    b.post(hub, f"/v1/offers/{offer['id']}/approve")
    query = (
        "SELECT count(*) FROM offer_audiences JOIN offers ON offers.id = offer_audiences.offer_id"
        " WHERE offers.title = :title AND offer_audiences.customer_ref IN ('a11', 'b11')"
    )
    assert execute_sql(hub.database_url, query, title=title)[0][0] == 2
    a.post(hub, "/v1/identifiers/erase", {"customer_refs": ["a11"]})
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        left = execute_sql(hub.database_url, query, title=title)[0][0]
        if left == 0:
            break
        time.sleep(0.1)
    assert left == 0


def test_audience_downloads_as_ndjson_and_csv(hub: Hub, pair: Any) -> None:
    a, b, partnership = pair
    offer = propose(hub, a, b, partnership).json()
    b.post(hub, f"/v1/offers/{offer['id']}/approve")
    ndjson = a.get(hub, f"/v1/offers/{offer['id']}/audience", format="ndjson")
    assert ndjson.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in ndjson.text.splitlines()]
    assert [line["customer_ref"] for line in lines] == [f"a{n:02d}" for n in range(40)]
    by_accept = hub.http.get(
        f"/v1/offers/{offer['id']}/audience", headers={**b.headers, "Accept": "text/csv"}
    )
    rows = list(csv.reader(io.StringIO(by_accept.text)))
    assert rows[0] == ["customer_ref"]
    assert [r[0] for r in rows[1:]] == [f"b{n:02d}" for n in range(40)]


def test_offer_rules_and_isolation(hub: Hub, pair: Any) -> None:
    a, b, partnership = pair
    cases = [
        ({"points": {a.id: 10}}, 422),  # one member only
        ({"filters": {b.id: {"city": ["paris"]}}}, 422),  # the other member's filters
        ({"filters": {a.id: {"shoe_size": ["42"]}}}, 422),  # not an attribute of A's
        ({"ends_at": "2020-01-01T00:00:00Z"}, 422),
        ({"title": ""}, 400),
        ({"colour": "red"}, 400),
    ]
    for extra, status in cases:
        response = propose(hub, a, b, partnership, **extra)
        assert response.status_code == status, (extra, response.text)
        assert response.json()["fix"]
    offer = propose(hub, a, b, partnership).json()
    _, _, outsider = hub.partner_with_token("bank", ["offers:read", "offers:write"])
    for method, path in [
        ("GET", f"/v1/offers/{offer['id']}"),
        ("POST", f"/v1/offers/{offer['id']}/approve"),
        ("GET", f"/v1/offers/{offer['id']}/audience"),
        ("GET", f"/v1/offers/{offer['id']}/audience/changes"),
    ]:
        assert hub.http.request(method, path, headers=outsider).status_code == 404, path
    assert offer["id"] not in {
        o["id"] for o in hub.http.get("/v1/offers", headers=outsider).json()["items"]
    }
    # An admin reads offers but has no audience of its own.
    assert hub.as_admin("GET", f"/v1/offers/{offer['id']}").status_code == 200
    assert hub.as_admin("GET", f"/v1/offers/{offer['id']}/audience").status_code == 403
    analytics_only = members(hub, purposes=["analytics"])
    response = propose(hub, analytics_only[0], analytics_only[1], analytics_only[2])
    assert response.status_code == 403


@pytest.mark.parametrize("status", ["suspended", "ended"])
def test_an_audience_is_not_served_unless_the_partnership_is_active_but_removals_are(
    hub: Hub, pair: Any, status: str
) -> None:
    a, b, partnership = pair
    offer = propose(hub, a, b, partnership).json()
    b.post(hub, f"/v1/offers/{offer['id']}/approve")
    cursor = a.get(hub, f"/v1/offers/{offer['id']}/audience/changes").json()["next_cursor"]
    changed = hub.as_admin("PATCH", f"/v1/partnerships/{partnership}", json={"status": status})
    assert changed.status_code == 200, changed.text
    for params in ({}, {"format": "ndjson"}, {"format": "csv"}):
        refused = a.get(hub, f"/v1/offers/{offer['id']}/audience", **params)
        assert refused.status_code == 409, refused.text
        assert refused.headers["content-type"].startswith("application/problem+json")
        problem = refused.json()
        assert status in problem["detail"]
        assert "/audience/changes" in problem["fix"]
    # A withdrawal after the suspension still reaches the member through the changes.
    b.consents(hub, "b05", ["analytics"])
    changes = a.get(hub, f"/v1/offers/{offer['id']}/audience/changes", cursor=cursor)
    assert changes.status_code == 200, changes.text
    assert [c["customer_ref"] for c in changes.json()["items"]] == ["a05"]


def test_concurrent_reads_after_a_withdrawal_remove_each_person_once(hub: Hub, pair: Any) -> None:
    """Many requests reconcile the same offer at once (audience pages, change feeds, the
    maintenance loop): each withdrawn person leaves the audience exactly once, the change feed
    lists them once, and the audience size the offer reports is the rows that are left."""
    a, b, partnership = pair
    title = f"concurrent {uuid.uuid4()}"
    offer = propose(hub, a, b, partnership, title=title, holdout=0.5).json()
    assert b.post(hub, f"/v1/offers/{offer['id']}/approve").status_code == 200
    cursor_a = a.get(hub, f"/v1/offers/{offer['id']}/audience/changes").json()["next_cursor"]
    before = set(audience(hub, a, offer["id"]))
    treated = sorted(ref for ref in before if ref.startswith("a") and ref[1:].isdigit())[:2]
    held = sorted({f"a{n:02d}" for n in range(40)} - before)[:1]  # A's control arm
    assert len(treated) == 2
    assert len(held) == 1
    withdrawn = set(treated + held)
    for ref in withdrawn:
        b.consents(hub, f"b{ref[1:]}", ["analytics"])  # B's same person withdraws joint_offers
    reads = [
        (a, f"/v1/offers/{offer['id']}/audience"),
        (b, f"/v1/offers/{offer['id']}/audience"),
        (a, f"/v1/offers/{offer['id']}"),
    ] * 4
    with ThreadPoolExecutor(max_workers=len(reads)) as pool:
        answers = list(pool.map(lambda read: read[0].get(hub, read[1]).status_code, reads))
    assert answers == [200] * len(reads)
    changes = a.get(hub, f"/v1/offers/{offer['id']}/audience/changes", cursor=cursor_a).json()
    removed = [c["customer_ref"] for c in changes["items"]]
    assert sorted(removed) == treated  # once each; a control person's removal is silent
    left = audience(hub, a, offer["id"])
    assert set(left) == before - withdrawn
    assert a.get(hub, f"/v1/offers/{offer['id']}").json()["audience_size"] == len(left)
    controls = execute_sql(
        hub.database_url,
        "SELECT count(*) FROM offer_controls JOIN offers ON offers.id = offer_controls.offer_id"
        " WHERE offers.title = :title",
        title=title,
    )[0][0]
    assert controls > 0  # the control arms were there to be reconciled too
    held_back = execute_sql(
        hub.database_url,
        "SELECT count(*) FROM offer_controls JOIN offers ON offers.id = offer_controls.offer_id"
        " WHERE offers.title = :title AND offer_controls.customer_ref IN (:a, :b)",
        title=title,
        a=held[0],
        b=f"b{held[0][1:]}",
    )[0][0]
    assert held_back == 0  # nor is any of them left in either control arm


def test_arms_never_grow_back_and_their_sizes_stay_exact(hub: Hub, pair: Any) -> None:
    """A person removed after a withdrawal stays out when they consent again, and a second
    withdrawal neither lists them again nor counts them twice: the recorded size is the
    arm's, as the audience read from the start shows it. The first read after the other
    side's withdrawal already leaves the person out (on SQLite it once served them from a
    snapshot older than the reconciliation it had just run)."""
    a, b, partnership = pair
    offer = propose(hub, a, b, partnership).json()
    b.post(hub, f"/v1/offers/{offer['id']}/approve")
    cursor = a.get(hub, f"/v1/offers/{offer['id']}/audience/changes").json()["next_cursor"]

    def size() -> int:
        held = audience(hub, a, offer["id"])  # the read reconciles first
        told = a.get(hub, f"/v1/offers/{offer['id']}").json()["audience_size"]
        assert told == len(held), (told, len(held))
        return told

    assert size() == 40
    b.consents(hub, "b03", ["analytics"])
    assert size() == 39
    b.consents(hub, "b03", ["analytics", "joint_offers"])  # eligible again: not re-added
    assert size() == 39
    assert "a03" not in audience(hub, a, offer["id"])
    b.consents(hub, "b03", ["analytics"])
    erased = b.post(hub, "/v1/identifiers/erase", {"customer_refs": ["b05"]})
    assert erased.status_code == 200
    assert size() == 38
    changes = a.get(hub, f"/v1/offers/{offer['id']}/audience/changes", cursor=cursor).json()
    assert sorted(c["customer_ref"] for c in changes["items"]) == ["a03", "a05"]
