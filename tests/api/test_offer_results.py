"""Measured joint offers through the API, on both databases: holdouts stored per person and
side at activation, held-out people never in an audience nor funded, arms that only shrink
(consent changes, key rotations), and results (lift per side, segments, suppression, noise
and budget, differencing, stored answers) that only members and admins read."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.api.matching_helpers import Member, email, rec
from tests.conftest import Hub, execute_sql, run_cli
from tests.rewards.helpers import SCOPES, SHARE, brands, event, ledger_problems, send

PEOPLE = 300


@dataclass
class World:
    a: Member
    b: Member
    partnership: str
    offer: dict[str, Any]
    title: str
    tag: str

    def ref(self, side: Member, n: int) -> str:
        return f"{'a' if side is self.a else 'b'}-{self.tag}{n}"

    def arms(self, hub: Hub) -> dict[str, dict[str, str]]:
        """side ("a"/"b") -> customer_ref -> arm, read from the database (tests only: the API
        never tells anyone who is held out)."""
        out: dict[str, dict[str, str]] = {"a": {}, "b": {}}
        for table, arm in (("offer_audiences", "treated"), ("offer_controls", "control")):
            rows = execute_sql(
                hub.database_url,
                f"SELECT t.customer_ref FROM {table} t JOIN offers o ON o.id = t.offer_id "
                "WHERE o.title = :title",
                title=self.title,
            )
            for (ref,) in rows:
                out[ref[0]][ref] = arm
        return out

    def results(self, hub: Hub, member: Member | None = None, **params: Any) -> Any:
        path = f"/v1/offers/{self.offer['id']}/results"
        if member is None:
            return hub.as_admin("GET", path, params=params)
        return member.get(hub, path, **params)


def world(hub: Hub, holdout: float = 0.2, people: int = PEOPLE, **terms: Any) -> World:
    """A and B share ``people`` members (every consent), A's tier is gold for every third;
    an active offer with the given holdout, approved by B."""
    terms.setdefault("min_audience", 10)
    pair = brands(hub, **terms)
    tag = uuid.uuid4().hex[:6]
    tiers = ["gold" if n % 3 == 0 else "silver" for n in range(people)]
    pair.a.upload(
        hub, [rec(email(f"m{tag}{n}"), f"a-{tag}{n}", SHARE, tier=tiers[n]) for n in range(people)]
    )
    pair.b.upload(hub, [rec(email(f"m{tag}{n}"), f"b-{tag}{n}", SHARE) for n in range(people)])
    title = f"Fly and stay {tag}"
    proposed = pair.a.post(
        hub,
        "/v1/offers",
        {
            "partnership_id": pair.partnership,
            "title": title,
            "points": {pair.a.id: 300, pair.b.id: 100},
            "holdout": holdout,
        },
    )
    assert proposed.status_code == 201, proposed.text
    approved = pair.b.post(hub, f"/v1/offers/{proposed.json()['id']}/approve")
    assert approved.status_code == 200, approved.text
    return World(pair.a, pair.b, pair.partnership, approved.json(), title, tag)


def now() -> str:
    return datetime.now(UTC).isoformat()


def earns(
    hub: Hub, w: World, side: Member, numbers: list[int], points: int = 100, **extra: Any
) -> None:
    """An earn now at ``side`` for each numbered member (a new event id each)."""
    events = [
        event(f"{w.tag}-{uuid.uuid4().hex[:8]}", f"{w.tag}{n}", "earn", points, **extra)
        | {"occurred_at": now()}
        for n in numbers
    ]
    for start in range(0, len(events), 1000):
        send_ok(hub, side, events[start : start + 1000])


def send_ok(hub: Hub, side: Member, events: list[dict[str, Any]]) -> None:
    response = send(hub, side, events)
    assert response.status_code == 200, response.text


def number(ref: str, tag: str) -> int:
    return int(ref.split(tag, 1)[1])


def earn_under(w: World, event_id: str, ref: str, offer: str) -> dict[str, Any]:
    """An earn of 500 points now under ``offer`` for the member A knows as ``ref``."""
    n = number(ref, w.tag)
    return event(event_id, f"{w.tag}{n}", "earn", 500, offer_id=offer, occurred_at=now())


def side_of(results: dict[str, Any], member: Member) -> dict[str, Any]:
    return next(s for s in results["sides"] if s["partner_id"] == member.id)


# -- holdouts ----------------------------------------------------------------------------------


def test_activation_stores_both_arms_and_shows_only_the_split_sizes(hub: Hub) -> None:
    w = world(hub, holdout=0.2)
    arms = w.arms(hub)
    for side, member in (("a", w.a), ("b", w.b)):
        treated = sorted(r for r, arm in arms[side].items() if arm == "treated")
        control = sorted(r for r, arm in arms[side].items() if arm == "control")
        assert len(treated) + len(control) == PEOPLE
        # ~20 % held out: 60 expected, sd 6.9
        assert 25 <= len(control) <= 95
        shown = member.get(hub, f"/v1/offers/{w.offer['id']}").json()
        assert shown["holdout"] == 0.2
        assert (shown["audience_size"], shown["control_size"]) == (len(treated), len(control))
        listed = member.get(hub, f"/v1/offers/{w.offer['id']}/audience", limit=500).json()
        assert sorted(i["customer_ref"] for i in listed["items"]) == treated
    # Both sides of a group are in the same arm.
    assert {r[2:]: arm for r, arm in arms["a"].items()} == {
        r[2:]: arm for r, arm in arms["b"].items()
    }
    admin_view = hub.as_admin("GET", f"/v1/offers/{w.offer['id']}").json()
    assert admin_view["control_size"] is None


def test_a_held_out_person_is_never_funded(hub: Hub) -> None:
    w = world(hub, holdout=0.3)
    arms = w.arms(hub)
    held = next(r for r, arm in arms["a"].items() if arm == "control")
    treated = next(r for r, arm in arms["a"].items() if arm == "treated")
    offer = w.offer["id"]
    refused = w.a.post(
        hub,
        "/v1/rewards/events",
        {"events": [earn_under(w, f"h-{w.tag}", held, offer)]},
    )
    assert refused.status_code == 422, refused.text
    reason = refused.json()["errors"][0]["reason"]
    assert reason == "the member is not in your audience of this offer"
    funded = w.a.post(
        hub,
        "/v1/rewards/events",
        {"events": [earn_under(w, f"t-{w.tag}", treated, offer)]},
    )
    assert funded.status_code == 200, funded.text
    assert ledger_problems(hub.database_url) == []


def test_zero_holdout_is_allowed_and_out_of_range_is_a_problem(hub: Hub) -> None:
    w = world(hub, holdout=0.0, people=40)
    assert set(w.arms(hub)["a"].values()) == {"treated"}
    for bad in (-0.1, 0.51, "a lot"):
        response = w.a.post(
            hub,
            "/v1/offers",
            {
                "partnership_id": w.partnership,
                "title": "bad",
                "points": {w.a.id: 1, w.b.id: 1},
                "holdout": bad,
            },
        )
        assert response.status_code in (400, 422), response.text
        assert "holdout" in response.text


def test_arms_only_shrink_when_consent_changes_and_survive_a_key_rotation(hub: Hub) -> None:
    w = world(hub, holdout=0.3)
    before = w.arms(hub)
    leaving = [
        next(r for r, arm in before["a"].items() if arm == "treated"),
        next(r for r, arm in before["a"].items() if arm == "control"),
    ]
    for ref in leaving:
        w.a.consents(hub, ref, ["analytics", "rewards_sharing"])  # joint_offers withdrawn
    assert w.results(hub, w.a).status_code == 200  # a read reconciles first
    after = w.arms(hub)
    gone = {ref[2:] for ref in leaving}
    assert after["a"] == {r: arm for r, arm in before["a"].items() if r[2:] not in gone}
    assert after["b"] == {r: arm for r, arm in before["b"].items() if r[2:] not in gone}
    # Consent given again: nobody comes back (arms never grow).
    for ref in leaving:
        w.a.consents(hub, ref, SHARE)
    w.results(hub, w.a)
    assert w.arms(hub) == after

    start = int(hub.app.state.keyring.match_version)
    added = run_cli(hub, "admin", "keys", "add-match-key", "--json")
    assert added.exit_code == 0, added.output
    deadline = time.monotonic() + 5
    while hub.app.state.keyring.match_version != start + 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    rotated = run_cli(hub, "admin", "keys", "rotate-match-key", "--json")
    assert rotated.exit_code == 0, rotated.output
    assert json.loads(rotated.output)["remaining"] == 0
    w.results(hub, w.a)
    assert w.arms(hub) == after  # re-keyed records: the same groups, nobody re-assigned
    refreshed = w.a.get(hub, f"/v1/offers/{w.offer['id']}").json()
    treated = sum(1 for arm in after["a"].values() if arm == "treated")
    assert (refreshed["audience_size"], refreshed["control_size"]) == (
        treated,
        len(after["a"]) - treated,
    )


# -- results ---------------------------------------------------------------------------------


def expected(arms: dict[str, str], counted: dict[str, tuple[int, int]], arm: str) -> dict[str, Any]:
    people = [r for r, a in arms.items() if a == arm]
    responders = [r for r in people if r in counted]
    return {
        "people": len(people),
        "responders": len(responders),
        "points": sum(min(counted[r][0], 10_000) for r in responders),
        "amount_minor": sum(min(counted[r][1], 100_000) for r in responders),
    }


def test_results_measure_each_side_from_the_arms_and_the_window(hub: Hub) -> None:
    w = world(hub, holdout=0.2)
    arms = w.arms(hub)
    a_arms = arms["a"]
    counted: dict[str, tuple[int, int]] = {}
    # Treated respond 2 in 3, control 1 in 2: a lift the answer must show exactly.
    responding = [
        number(r, w.tag)
        for r, arm in a_arms.items()
        if (arm == "treated" and number(r, w.tag) % 3 != 0)
        or (arm == "control" and number(r, w.tag) % 2 == 1)
    ]
    earns(hub, w, w.a, responding, points=100, amount_minor=2500)
    for n in responding:
        counted[f"a-{w.tag}{n}"] = (100, 2500)
    # A big spender: the points and amount sums are clamped per person.
    big = responding[0]
    earns(hub, w, w.a, [big], points=20_000, amount_minor=500_000)
    counted[f"a-{w.tag}{big}"] = (20_100, 502_500)
    # Not counted: an adjustment, activity before the window, activity at the other side
    # (it counts for that side only).
    activated = datetime.fromisoformat(w.offer["activated_at"])
    quiet = [number(r, w.tag) for r in a_arms if number(r, w.tag) % 3 == 0][:5]
    early = (activated - timedelta(hours=1)).isoformat()
    send_ok(
        hub,
        w.a,
        [event(f"{w.tag}-adj{n}", f"{w.tag}{n}", "adjust", 50, occurred_at=now()) for n in quiet]
        + [event(f"{w.tag}-early{n}", f"{w.tag}{n}", "earn", 70, occurred_at=early) for n in quiet],
    )
    b_responding = [n for n in range(PEOPLE) if n % 2 == 0]
    earns(hub, w, w.b, b_responding, points=40)

    results = w.results(hub, w.a)
    assert results.status_code == 200, results.text
    body = results.json()
    assert "two-proportion" in body["method"]
    assert body["noise"] is False
    assert body["epsilon_spent"] == 0.0
    a_side = side_of(body, w.a)
    for arm in ("treated", "control"):
        want = expected(a_arms, counted, arm)
        got = {k: a_side[arm][k] for k in want}
        assert got == want
        assert a_side[arm]["response_rate"] == pytest.approx(want["responders"] / want["people"])
    p_t = a_side["treated"]["response_rate"]
    p_c = a_side["control"]["response_rate"]
    lift = a_side["lift"]
    assert lift["absolute"] == pytest.approx(p_t - p_c)
    assert lift["relative"] == pytest.approx((p_t - p_c) / p_c)
    low, high = lift["absolute_ci"]
    assert low < p_t - p_c < high
    assert 0.0 <= lift["p_value"] <= 1.0
    b_side = side_of(body, w.b)
    b_counted = {f"b-{w.tag}{n}": (40, 0) for n in b_responding}
    for arm in ("treated", "control"):
        want = expected(arms["b"], b_counted, arm)
        assert {k: b_side[arm][k] for k in want} == want
    # Aggregates only: no customer_ref anywhere in the answer.
    assert w.tag not in results.text
    # The admin reads the same figures; the read was audited for both members.
    admin = w.results(hub)
    assert admin.status_code == 200, admin.text
    assert side_of(admin.json(), w.a)["treated"] == a_side["treated"]
    entries = hub.as_admin("GET", "/v1/audit", params={"limit": 50}).json()["items"]
    reads = [e for e in entries if e["target_id"] == w.offer["id"]]
    assert any(e["action"] == "offer.results_read" for e in reads)
    assert ledger_problems(hub.database_url) == []


def test_segment_lift_breaks_down_by_the_callers_own_attribute_only(hub: Hub) -> None:
    w = world(hub, holdout=0.3)
    earns(hub, w, w.a, [n for n in range(PEOPLE) if n % 2 == 0])
    body = w.results(hub, w.a, by="self.tier").json()
    a_side = side_of(body, w.a)
    segments = {s["values"]["self.tier"]: s for s in a_side["segments"]}
    assert set(segments) == {"gold", "silver"}
    arms = w.arms(hub)["a"]
    for tier, chosen in (("gold", lambda n: n % 3 == 0), ("silver", lambda n: n % 3 != 0)):
        people = [r for r, arm in arms.items() if arm == "treated" and chosen(number(r, w.tag))]
        assert segments[tier]["treated"]["people"] == len(people)
    assert "segments" not in side_of(body, w.b)
    refused = w.results(hub, w.a, by="partner.tier")
    assert refused.status_code == 422, refused.text
    assert w.results(hub, w.b, by="self.nothing").status_code == 422
    assert w.results(hub, by=f"{w.a.id}.tier").status_code == 200


def test_small_counts_are_suppressed_and_suppress_the_lift(hub: Hub) -> None:
    w = world(hub, holdout=0.2)
    arms = w.arms(hub)["a"]
    control = [number(r, w.tag) for r, arm in arms.items() if arm == "control"][:3]
    treated = [number(r, w.tag) for r, arm in arms.items() if arm == "treated"][:100]
    earns(hub, w, w.a, control + treated)
    a_side = side_of(w.results(hub, w.a).json(), w.a)
    assert a_side["control"]["responders"] is None
    assert a_side["control"]["points"] is None
    assert a_side["control"]["people"] is not None
    assert a_side["treated"]["responders"] == 100
    assert a_side["lift"]["suppressed"] is True
    assert a_side["lift"]["absolute"] is None


def test_a_partner_outside_the_partnership_gets_404(hub: Hub) -> None:
    w = world(hub, holdout=0.2, people=120)
    _, _, outsider = hub.partner_with_token("coffee", SCOPES)
    response = hub.http.get(f"/v1/offers/{w.offer['id']}/results", headers=outsider)
    assert response.status_code == 404, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    unknown = w.a.get(hub, f"/v1/offers/{uuid.uuid4()}/results")
    assert unknown.status_code == 404


def test_differencing_refuses_an_answer_a_few_people_apart(hub: Hub) -> None:
    w = world(hub, holdout=0.2)
    earns(hub, w, w.a, list(range(0, PEOPLE, 2)))
    first = w.results(hub, w.a)
    assert first.status_code == 200, first.text
    again = w.results(hub, w.b)  # nothing changed: served again, whoever asks
    assert again.status_code == 200
    assert side_of(again.json(), w.a) == side_of(first.json(), w.a)
    earns(hub, w, w.a, [1, 3])  # two more responders
    refused = w.results(hub, w.a)
    assert refused.status_code == 422, refused.text
    assert refused.json()["type"] == "urn:hub:problem:privacy-refusal"
    earns(hub, w, w.a, list(range(5, PEOPLE, 2)))  # the other odd ones: ~30 more in control
    assert w.results(hub, w.a).status_code == 200


def test_with_epsilon_a_read_is_noised_and_charged_and_an_empty_budget_refuses(hub: Hub) -> None:
    w = world(hub, holdout=0.2, epsilon=1.0, epsilon_budget=1.5)
    earns(hub, w, w.a, list(range(0, PEOPLE, 2)))
    first = w.results(hub, w.a)
    assert first.status_code == 200, first.text
    assert first.json()["noise"] is True
    assert first.json()["epsilon_spent"] == 1.0
    budget = w.a.get(hub, f"/v1/partnerships/{w.partnership}/budget").json()
    assert budget["spent"] == pytest.approx(1.0)
    # The same question at the same data: served again, free, with the same noisy figures.
    again = w.results(hub, w.a)
    assert again.json()["epsilon_spent"] == 0.0
    assert again.json()["sides"] == first.json()["sides"]
    budget = w.a.get(hub, f"/v1/partnerships/{w.partnership}/budget").json()
    assert budget["spent"] == pytest.approx(1.0)
    earns(hub, w, w.a, list(range(1, PEOPLE, 2)))
    spent = w.results(hub, w.a)
    assert spent.status_code == 429, spent.text
    assert "Retry-After" in spent.headers


def test_amount_minor_is_checked_and_part_of_the_events_identity(hub: Hub) -> None:
    w = world(hub, holdout=0.0, people=40)
    base = event(f"{w.tag}-amt", f"{w.tag}1", "earn", 10, occurred_at=now())
    for bad, field_reason in (
        ({**base, "amount_minor": -1}, "amount_minor"),
        ({**base, "amount_minor": "12"}, "amount_minor"),
        ({**base, "amount_minor": 1.5}, "amount_minor"),
        ({**base, "kind": "adjust", "amount_minor": 5}, "amount_minor"),
    ):
        response = w.a.post(hub, "/v1/rewards/events", {"events": [bad]})
        assert response.status_code == 422, response.text
        assert response.json()["errors"][0]["field"] == field_reason
    ok = w.a.post(hub, "/v1/rewards/events", {"events": [{**base, "amount_minor": 1999}]})
    assert ok.status_code == 200, ok.text
    replay = w.a.post(hub, "/v1/rewards/events", {"events": [{**base, "amount_minor": 1999}]})
    assert replay.status_code == 200
    other = w.a.post(hub, "/v1/rewards/events", {"events": [{**base, "amount_minor": 2000}]})
    assert other.status_code == 409, other.text


def test_a_control_below_min_audience_keeps_the_offer_from_activating(hub: Hub) -> None:
    pair = brands(hub, min_audience=10)
    tag = uuid.uuid4().hex[:6]
    for side, prefix in ((pair.a, "a"), (pair.b, "b")):
        side.upload(hub, [rec(email(f"m{tag}{n}"), f"{prefix}-{tag}{n}", SHARE) for n in range(30)])
    proposed = pair.a.post(
        hub,
        "/v1/offers",
        {
            "partnership_id": pair.partnership,
            "title": f"tiny {tag}",
            "points": {pair.a.id: 1, pair.b.id: 1},
            "holdout": 0.1,  # about 3 of 30 held out: below min_audience
        },
    )
    refused = pair.b.post(hub, f"/v1/offers/{proposed.json()['id']}/approve")
    assert refused.status_code == 422, refused.text
    assert "control group" in refused.json()["detail"]
    assert pair.a.get(hub, f"/v1/offers/{proposed.json()['id']}").json()["status"] == "proposed"


def test_results_are_not_served_while_the_partnership_is_not_active(hub: Hub) -> None:
    w = world(hub, holdout=0.2, people=120)
    changed = hub.as_admin(
        "PATCH", f"/v1/partnerships/{w.partnership}", json={"status": "suspended"}
    )
    assert changed.status_code == 200, changed.text
    refused = w.results(hub, w.a)
    assert refused.status_code == 409, refused.text
    assert "not active" in refused.json()["detail"]
