"""GET /v1/partnerships/{id}/overlap and /budget, GET /v1/coalition/overlap-matrix: consent,
thresholds, complementary suppression, noise budgets, differencing, isolation and audit."""

from __future__ import annotations

import re
import time
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from matching import array_files
from tests.api.matching_helpers import (
    Member,
    email,
    file_backed,
    members,
    move_answers_back,
    overlap,
    phone,
    rec,
)
from tests.conftest import Hub


def seed(hub: Hub, a: Member, b: Member) -> None:
    """30 groups for analytics (and joint_offers) consent; see each line for why."""
    a_records = []
    for n in range(40):
        tier = "gold" if n < 20 else "silver" if n < 35 else "bronze"
        a_records.append(rec(email(n), f"a{n:02d}", tier=tier))
    a_records.append(rec(phone(0), "a00", id_type="phone", tier="gold"))  # a00: email and phone
    b_records = []
    for n in range(30):  # shared with a00..a29
        b_records.append(rec(email(n), f"b{n:02d}", city="paris" if n < 15 else "london"))
    # a00's phone belongs to another B person: a00, b00 and bx form one group, counted once.
    b_records.append(rec(phone(0), "bx"))
    # Shared keys without analytics consent on B's side only: never counted for analytics.
    b_records += [rec(email(n), f"b{n:02d}", ["rewards_sharing"]) for n in range(30, 35)]
    b_records += [rec(email(1000 + n), f"b-other{n}") for n in range(20)]  # not shared
    a.upload(hub, a_records)
    b.upload(hub, b_records)


@pytest.fixture
def pair(hub: Hub) -> tuple[Member, Member, str]:
    a, b, partnership = members(hub)
    seed(hub, a, b)
    return a, b, partnership


def cells(body: dict[str, Any]) -> dict[tuple[str | None, ...], dict[str, Any]]:
    return {tuple(c["values"].values()): c for c in body["breakdown"]}


def test_overlap_counts_groups_with_consent_on_both_sides(hub: Hub, pair: Any) -> None:
    a, b, partnership = pair
    for asker in (a, b):
        response = overlap(hub, asker, partnership)
        assert response.status_code == 200, response.text
        assert response.json() == {
            "purpose": "analytics",
            "count": 30,
            "suppressed": False,
            "min_audience": 10,
            "noise": False,
        }


def test_breakdowns_by_either_side_and_by_a_pair(hub: Hub, pair: Any) -> None:
    a, b, partnership = pair
    by_tier = overlap(hub, a, partnership, by="self.tier").json()
    assert by_tier["count"] == 30
    assert {k: c["count"] for k, c in cells(by_tier).items()} == {("gold",): 20, ("silver",): 10}
    # The same question from the other member: its partner's tier.
    from_b = overlap(hub, b, partnership, by="partner.tier").json()
    assert {k: c["count"] for k, c in cells(from_b).items()} == {("gold",): 20, ("silver",): 10}
    by_city = overlap(hub, a, partnership, by="partner.city").json()
    assert {k: c["count"] for k, c in cells(by_city).items()} == {
        ("paris",): 15,
        ("london",): 15,
    }
    # tier x city: gold/paris 15, gold/london 5, silver/london 10. gold/london is below the
    # threshold; suppressing it alone would leave it recoverable from its row (gold = 20 from
    # the 1-D answer) and column, so its neighbours are suppressed too.
    pair_body = overlap(hub, a, partnership, by="self.tier,partner.city").json()
    table = cells(pair_body)
    assert set(table) == {("gold", "paris"), ("gold", "london"), ("silver", "london")}
    assert table[("gold", "london")] == {
        "values": {"self.tier": "gold", "partner.city": "london"},
        "count": None,
        "suppressed": True,
    }
    assert table[("gold", "paris")]["suppressed"]
    assert table[("silver", "london")]["suppressed"]
    assert pair_body["count"] == 30


def test_a_count_below_the_threshold_is_never_shown(hub: Hub) -> None:
    a, b, partnership = members(hub, min_audience=10)
    a.upload(hub, [rec(email(f"small{n}"), f"a{n}") for n in range(8)])
    b.upload(hub, [rec(email(f"small{n}"), f"b{n}") for n in range(8)])
    body = overlap(hub, a, partnership).json()
    assert body["count"] is None
    assert body["suppressed"] is True
    assert "8" not in str(body)
    # Still below the threshold after one more person: suppressed again, not refused (two
    # wholly suppressed answers show no number to subtract).
    a.upload(hub, [rec(email("small-next"), "a-next")])
    b.upload(hub, [rec(email("small-next"), "b-next")])
    again = overlap(hub, a, partnership)
    assert again.status_code == 200
    assert again.json()["suppressed"] is True
    # One more reaches the threshold, 10, within fewer than min_audience people of the
    # earlier (hidden) answers: refused, as any small difference from an answered question.
    a.upload(hub, [rec(email("small-last"), "a-last")])
    b.upload(hub, [rec(email("small-last"), "b-last")])
    assert overlap(hub, a, partnership).status_code == 422


def test_consent_on_one_side_only_does_not_count(hub: Hub) -> None:
    a, b, partnership = members(hub, min_audience=10)
    a.upload(hub, [rec(email(f"c{n}"), f"a{n}") for n in range(20)])
    b.upload(hub, [rec(email(f"c{n}"), f"b{n}", ["joint_offers"]) for n in range(20)])
    assert overlap(hub, a, partnership).json()["suppressed"] is True
    assert overlap(hub, a, partnership, purpose="joint_offers").json()["count"] == 20


def test_the_partnership_must_allow_the_purpose(hub: Hub) -> None:
    a, _, partnership = members(hub, purposes=["analytics"])
    response = overlap(hub, a, partnership, purpose="joint_offers")
    assert response.status_code == 422
    assert "does not allow the purpose" in response.json()["detail"]


def test_bad_questions_get_problem_details(hub: Hub, pair: Any) -> None:
    a, _, partnership = pair
    cases = [
        ({"purpose": "marketing"}, 400),
        ({"by": "tier"}, 422),
        ({"by": "self.tier,self.tier"}, 422),
        ({"by": "self.tier,partner.city,partner.tier"}, 422),
        ({"by": "self.shoe_size"}, 422),
        ({"by": "stranger.tier"}, 422),
    ]
    for params, status in cases:
        response = a.get(
            hub, f"/v1/partnerships/{partnership}/overlap", **{"purpose": "analytics", **params}
        )
        assert response.status_code == status, (params, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["fix"]
    missing = a.get(hub, f"/v1/partnerships/{partnership}/overlap")
    assert missing.status_code == 400


def test_only_members_of_an_active_partnership_may_ask(hub: Hub, pair: Any) -> None:
    a, _, partnership = pair
    _, _, outsider = hub.partner_with_token("bank")
    response = hub.http.get(
        f"/v1/partnerships/{partnership}/overlap",
        params={"purpose": "analytics"},
        headers=outsider,
    )
    assert response.status_code == 404
    no_scope = hub.create_client(a.id, ["identifiers:write"])
    token = hub.token(no_scope["client_id"], no_scope["client_secret"])
    response = hub.http.get(
        f"/v1/partnerships/{partnership}/overlap",
        params={"purpose": "analytics"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 403
    assert (
        hub.as_admin(
            "GET", f"/v1/partnerships/{partnership}/overlap", params={"purpose": "analytics"}
        ).status_code
        == 403
    )
    c, _, proposed = members(hub, activate=False)
    response = overlap(hub, c, proposed)
    assert response.status_code == 409
    assert "active" in response.json()["detail"]


def test_a_differencing_attack_learns_nothing(hub: Hub) -> None:
    """Ask, add one shared person, ask again: refused; the count moves only by >= min."""
    a, b, partnership = members(hub, min_audience=10)
    a.upload(hub, [rec(email(f"d{n}"), f"a{n}") for n in range(30)])
    b.upload(hub, [rec(email(f"d{n}"), f"b{n}") for n in range(30)])
    assert overlap(hub, a, partnership).json()["count"] == 30
    a.upload(hub, [rec(email("target"), "a-target")])
    b.upload(hub, [rec(email("target"), "b-target")])
    refused = overlap(hub, a, partnership)
    assert refused.status_code == 422, refused.text
    body = refused.json()
    assert body["type"] == "urn:hub:problem:privacy-refusal"
    assert "would single them out. Answering would" in body["detail"]  # two sentences
    # The refusal names no count and no difference, only the threshold.
    assert not {"30", "31", "1"} & set(re.findall(r"\d+", body["detail"] + body["fix"]))
    # The other member asking the same question gets no further.
    assert overlap(hub, b, partnership).status_code == 422
    # A one-person consent withdrawal is a difference of one too.
    b.consents(hub, "b-target", ["rewards_sharing"])
    assert overlap(hub, a, partnership).json()["count"] == 30  # identical to the first answer
    b.consents(hub, "b0", [])
    assert overlap(hub, a, partnership).status_code == 422
    # Once at least min_audience people changed, the question is answered again.
    a.upload(hub, [rec(email(f"d{n}"), f"a{n}") for n in range(30, 45)])
    b.upload(hub, [rec(email(f"d{n}"), f"b{n}") for n in range(30, 45)])
    assert overlap(hub, a, partnership).json()["count"] == 44
    # A breakdown is a question of its own, refused by cell as well.
    a.upload(hub, [rec(email("t2"), "a-t2")])
    b.upload(hub, [rec(email("t2"), "b-t2")])
    assert overlap(hub, a, partnership).status_code == 422


def test_noise_spends_the_budget_and_an_empty_budget_refuses(hub: Hub) -> None:
    a, b, partnership = members(hub, epsilon=1.0, epsilon_budget=2.0, budget_period="day")
    a.upload(hub, [rec(email(f"n{n}"), f"a{n}") for n in range(40)])
    b.upload(hub, [rec(email(f"n{n}"), f"b{n}") for n in range(40)])
    before = a.get(hub, f"/v1/partnerships/{partnership}/budget").json()
    assert before["budget"] == 2.0
    assert before["spent"] == 0.0
    assert before["left"] == 2.0
    for _ in range(2):
        answer = overlap(hub, a, partnership)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["noise"] is True
        assert isinstance(body["count"], int)
        assert body["count"] >= 0
    refused = overlap(hub, b, partnership)
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) >= 1
    assert refused.json()["renews_at"][:19] == before["renews_at"][:19]
    after = b.get(hub, f"/v1/partnerships/{partnership}/budget").json()
    assert after["spent"] == 2.0
    assert after["left"] == 0.0
    assert after["queries"] == 2
    assert hub.as_admin("GET", f"/v1/partnerships/{partnership}/budget").json()["spent"] == 2.0
    # Renewal: once the period is over (here: the spending moved to yesterday), the budget is
    # whole again and the same question is answered.
    move_answers_back(hub, partnership, timedelta(days=1))
    renewed = b.get(hub, f"/v1/partnerships/{partnership}/budget").json()
    assert renewed["spent"] == 0.0
    assert renewed["left"] == 2.0
    assert overlap(hub, b, partnership).status_code == 200


def test_every_answer_and_refusal_is_audited_without_counts(hub: Hub) -> None:
    a, b, partnership = members(hub)
    a.upload(hub, [rec(email(f"u{n}"), f"a{n}") for n in range(25)])
    b.upload(hub, [rec(email(f"u{n}"), f"b{n}") for n in range(25)])
    assert overlap(hub, a, partnership, by="self.tier").status_code == 422  # no such attribute
    assert overlap(hub, a, partnership).status_code == 200
    a.upload(hub, [rec(email("u-extra"), "a-extra")])
    b.upload(hub, [rec(email("u-extra"), "b-extra")])
    assert overlap(hub, a, partnership).status_code == 422
    entries = hub.as_admin("GET", "/v1/audit", params={"limit": 200}).json()["items"]
    mine = [
        e for e in entries if e["target_id"] == partnership and e["action"].startswith("overlap")
    ]
    actions = [e["action"] for e in mine]
    assert "overlap.answered" in actions
    reasons = [e["details"]["reason"] for e in mine if e["action"] == "overlap.refused"]
    # The unknown attribute (a bad question) and the differencing refusal.
    assert sorted(reasons) == ["invalid-input", "privacy-refusal"]
    for entry in mine:
        assert entry["details"]["purpose"] == "analytics"
        assert "25" not in str(entry["details"])
        assert "26" not in str(entry["details"])


def test_the_admin_matrix_thresholds_every_pair(hub: Hub) -> None:
    a, b, partnership = members(hub, min_audience=10)
    a.upload(hub, [rec(email(f"m{n}"), f"a{n}") for n in range(60)])
    b.upload(hub, [rec(email(f"m{n}"), f"b{n}") for n in range(40)])
    response = hub.as_admin("GET", "/v1/coalition/overlap-matrix")
    assert response.status_code == 200, response.text
    body = response.json()
    ids = {p["id"] for p in body["partners"]}
    assert {a.id, b.id} <= ids
    pair = [c for c in body["cells"] if {c["a"], c["b"]} == {a.id, b.id}]
    assert len(pair) == 2
    assert all(c["count"] == 40 and c["partnership_id"] == partnership for c in pair)
    # Pairs without a partnership use the coalition default threshold (50).
    others = [c for c in body["cells"] if c["a"] == a.id and c["b"] != b.id]
    assert all(c["min_audience"] == 50 for c in others)
    assert all(c["count"] is None or c["count"] >= c["min_audience"] for c in body["cells"])
    assert a.get(hub, "/v1/coalition/overlap-matrix").status_code == 403


def versions_in(directory: Path) -> set[str]:
    """The version directories (the build lock and patch markers start with a dot)."""
    return {p.name for p in directory.iterdir() if not p.name.startswith(".")}


def test_erasure_reaches_the_cached_arrays(hub: Hub) -> None:
    a, b, partnership = members(hub)
    a.upload(hub, [rec(email(f"e{n}"), f"a{n}") for n in range(30)])
    b.upload(hub, [rec(email(f"e{n}"), f"b{n}") for n in range(30)])
    assert overlap(hub, a, partnership).json()["count"] == 30
    directory = hub.data_dir / "arrays" / a.id
    before = versions_in(directory)
    assert len(before) == 1
    erased = a.post(hub, "/v1/identifiers/erase", {"customer_refs": ["a1"]})
    assert erased.status_code == 200, erased.text
    deadline = time.monotonic() + 10
    while versions_in(directory) & before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not versions_in(directory) & before


def test_arrays_in_use_are_rebuilt_after_a_change_before_anyone_asks(hub: Hub) -> None:
    a, b, partnership = members(hub)
    a.upload(hub, [rec(email(f"w{n}"), f"a{n}") for n in range(30)])
    b.upload(hub, [rec(email(f"w{n}"), f"b{n}") for n in range(30)])
    assert overlap(hub, a, partnership).json()["count"] == 30
    directory = hub.data_dir / "arrays" / a.id
    (built,) = versions_in(directory)
    a.upload(hub, [rec(email(f"w{n}"), f"a{n}") for n in range(30, 40)])
    deadline = time.monotonic() + 10
    names = [built]
    while (names == [built] or not names) and time.monotonic() < deadline:
        names = [p.name for p in directory.iterdir() if not p.name.startswith(".")]
        time.sleep(0.1)
    assert names
    assert names != [built]


def test_arrays_built_for_a_question_are_served_from_their_files(
    hub: Hub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A build's arrays are answered from the memory-mapped files it saved (page cache the
    hub's processes share), not kept as heap copies in each process (the soak's serve
    processes grew to 1.8 GB). (Arrays this small are read, not mapped, unless the
    threshold says otherwise: here it maps everything.)"""
    monkeypatch.setattr(array_files, "MMAP_MIN_BYTES", 0)
    a, b, partnership = members(hub)
    a.upload(hub, [rec(email(f"f{n}"), f"a{n}") for n in range(30)])
    b.upload(hub, [rec(email(f"f{n}"), f"b{n}") for n in range(30)])
    cache = hub.app.state.array_cache
    builds = cache.builds
    assert overlap(hub, a, partnership).json()["count"] == 30
    assert cache.builds > builds  # built for this question, not found on disk
    for member in (a, b):
        loaded = cache._memory[UUID(member.id)]
        side = loaded.side
        for array in (side.hi, side.lo, side.person, side.consent):
            assert file_backed(array)
