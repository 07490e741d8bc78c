"""GET /v1/coalition/overlap-matrix: the admin is not a way around a partnership's rules.

A pair with a partnership in any status is answered as that partnership answers (threshold,
noise charged to its budget, differencing) or refused; answers are stored with both sides'
data versions and served again for free until either side's data changes. Noise comes from an
injected stub (+7) so that it is observable: OpenDP cannot be seeded.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event

from matching import matrix as matrix_module
from tests.api.matching_helpers import Member, email, members, move_answers_back, overlap, rec
from tests.conftest import Hub

PLUS = 7


class AddSeven:
    """A noise mechanism that adds +7, whatever epsilon and sensitivity."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, value: int, epsilon: float, sensitivity: int, width: str = "i32") -> int:
        self.calls += 1
        return value + PLUS


@pytest.fixture
def plus_seven(hub: Hub) -> Iterator[AddSeven]:
    service = hub.app.state.overlap_service
    real = service.noise
    service.noise = stub = AddSeven()
    yield stub
    service.noise = real


def shared(hub: Hub, a: Member, b: Member, tag: str, n: int, start: int = 0) -> None:
    """``n`` people known to both sides, with every consent."""
    people = range(start, start + n)
    a.upload(hub, [rec(email(f"{tag}{i}"), f"a-{tag}{i}") for i in people])
    b.upload(hub, [rec(email(f"{tag}{i}"), f"b-{tag}{i}") for i in people])


def matrix(hub: Hub, purpose: str | None = None) -> dict[str, Any]:
    params = {"purpose": purpose} if purpose else {}
    response = hub.as_admin("GET", "/v1/coalition/overlap-matrix", params=params)
    assert response.status_code == 200, response.text
    return dict(response.json())


def cell(body: dict[str, Any], a: Member, b: Member) -> dict[str, Any]:
    """The pair's cell; both of its cells (a, b) and (b, a) show the same answer."""
    found = [c for c in body["cells"] if {c["a"], c["b"]} == {a.id, b.id}]
    assert len(found) == 2
    first, second = ({k: v for k, v in c.items() if k not in ("a", "b")} for c in found)
    assert first == second
    return first


def budget(hub: Hub, partnership: str) -> dict[str, Any]:
    response = hub.as_admin("GET", f"/v1/partnerships/{partnership}/budget")
    assert response.status_code == 200, response.text
    return dict(response.json())


def set_status(hub: Hub, partnership: str, status: str) -> None:
    response = hub.as_admin("PATCH", f"/v1/partnerships/{partnership}", json={"status": status})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("status", ["proposed", "suspended", "ended"])
def test_a_pair_with_a_partnership_in_any_status_is_noised_and_charged_to_its_budget(
    hub: Hub, plus_seven: AddSeven, status: str
) -> None:
    a, b, partnership = members(
        hub, activate=status != "proposed", epsilon=0.5, epsilon_budget=5.0, budget_period="day"
    )
    if status != "proposed":
        set_status(hub, partnership, status)
    shared(hub, a, b, f"noisy-{status}-", 30)

    first = cell(matrix(hub), a, b)
    assert first["count"] == 30 + PLUS
    assert first["noise"] is True
    assert first["partnership_id"] == partnership
    assert first["min_audience"] == 10
    assert first["refused"] is None
    assert first["answered_at"]
    spent = budget(hub, partnership)
    assert spent["spent"] == pytest.approx(0.5)
    assert spent["queries"] == 1

    # Unchanged data: the stored answer, served again without spending.
    assert cell(matrix(hub), a, b) == first
    assert budget(hub, partnership)["spent"] == pytest.approx(0.5)

    # A data change (at least min_audience people, so differencing allows it) spends again.
    shared(hub, a, b, f"noisy-{status}-", 15, start=30)
    again = cell(matrix(hub), a, b)
    assert again["count"] == 45 + PLUS
    assert again["answered_at"] != first["answered_at"]
    after = budget(hub, partnership)
    assert after["spent"] == pytest.approx(1.0)
    assert after["queries"] == 2


def test_a_partnerships_higher_min_audience_suppresses_the_pair(hub: Hub) -> None:
    a, b, partnership = members(hub, min_audience=80)
    set_status(hub, partnership, "suspended")
    shared(hub, a, b, "strict-", 60)  # above the coalition default (50), below the pair's 80
    answer = cell(matrix(hub), a, b)
    assert answer["min_audience"] == 80
    assert answer["partnership_id"] == partnership
    assert answer["count"] is None
    assert answer["suppressed"] is True
    assert answer["noise"] is False


def test_an_exhausted_budget_refuses_the_cell(hub: Hub, plus_seven: AddSeven) -> None:
    a, b, partnership = members(hub, epsilon=1.0, epsilon_budget=1.0, budget_period="day")
    shared(hub, a, b, "spent-", 30)
    # The members' own question spends the whole budget: one budget for both.
    assert overlap(hub, a, partnership).json()["count"] == 30 + PLUS
    assert budget(hub, partnership)["left"] == pytest.approx(0.0)
    answer = cell(matrix(hub), a, b)
    assert answer["refused"] == "budget-exhausted"
    assert answer["count"] is None
    assert "renews at" in answer["reason"]
    assert budget(hub, partnership)["spent"] == pytest.approx(1.0)  # a refusal spends nothing
    # A refusal is not served again: once the budget renews, the pair is answered.
    move_answers_back(hub, partnership, timedelta(days=1))
    renewed = cell(matrix(hub), a, b)
    assert renewed["refused"] is None
    assert renewed["count"] == 30 + PLUS


def test_the_matrix_obeys_the_differencing_rule(hub: Hub) -> None:
    a, b, partnership = members(hub, min_audience=10)
    shared(hub, a, b, "diff-", 30)
    assert overlap(hub, a, partnership).json()["count"] == 30
    shared(hub, a, b, "diff-target-", 1)  # one person more: the difference would single them out
    answer = cell(matrix(hub), a, b)
    assert answer["refused"] == "differencing"
    assert answer["count"] is None
    assert "31" not in answer["reason"]
    # The refusal was not stored: the members are refused the same question too.
    assert overlap(hub, b, partnership).status_code == 422


def test_a_purpose_the_partnership_does_not_allow_is_refused(hub: Hub) -> None:
    a, b, _ = members(hub, purposes=["analytics"])
    shared(hub, a, b, "purpose-", 60)
    assert cell(matrix(hub), a, b)["count"] == 60
    refused = cell(matrix(hub, "joint_offers"), a, b)
    assert refused["refused"] == "purpose-not-allowed"
    assert refused["count"] is None
    assert "joint_offers" in refused["reason"]


def test_a_pair_that_never_had_a_partnership_uses_the_coalition_default(hub: Hub) -> None:
    a_partner, _, a_headers = hub.partner_with_token("airline", ["identifiers:write"])
    b_partner, _, b_headers = hub.partner_with_token("hotel", ["identifiers:write"])
    c_partner, _, c_headers = hub.partner_with_token("coffee", ["identifiers:write"])
    a, b = Member(a_partner["id"], a_headers), Member(b_partner["id"], b_headers)
    c = Member(c_partner["id"], c_headers)
    shared(hub, a, b, "default-", 60)
    c.upload(hub, [rec(email(f"default-{i}"), f"c-{i}") for i in range(40)])
    # People with joint_offers consent only: counted for no pair without a partnership, since
    # the coalition's own view needs analytics consent on both sides.
    a.upload(hub, [rec(email(f"jo-{i}"), f"a-jo{i}", ["joint_offers"]) for i in range(60)])
    b.upload(hub, [rec(email(f"jo-{i}"), f"b-jo{i}", ["joint_offers"]) for i in range(60)])
    body = matrix(hub)
    answer = cell(body, a, b)
    assert answer["count"] == 60
    assert answer["min_audience"] == 50
    assert answer["partnership_id"] is None
    assert answer["noise"] is False
    small = cell(body, a, c)
    assert small["count"] is None
    assert small["suppressed"] is True
    assert cell(matrix(hub, "joint_offers"), a, b)["count"] == 60


def test_matrix_answers_are_audited_on_the_partnership(hub: Hub, plus_seven: AddSeven) -> None:
    a, b, partnership = members(hub, epsilon=0.5)
    shared(hub, a, b, "audit-", 30)
    matrix(hub)
    entries = hub.as_admin("GET", "/v1/audit", params={"limit": 200}).json()["items"]
    mine = [
        e for e in entries if e["target_id"] == partnership and e["action"] == "overlap.answered"
    ]
    assert [e["details"]["via"] for e in mine] == ["matrix"]
    assert "30" not in str(mine[0]["details"])
    assert any(e["action"] == "overlap.matrix" for e in entries)


def test_an_open_partnership_governs_the_pair_over_an_ended_one(hub: Hub) -> None:
    a, b, ended = members(hub, min_audience=80)
    set_status(hub, ended, "ended")
    shared(hub, a, b, "renewed-", 60)
    assert cell(matrix(hub), a, b)["partnership_id"] == ended
    proposed = hub.as_admin(
        "POST",
        "/v1/partnerships",
        json={"members": [a.id, b.id], "purposes": ["analytics"], "min_audience": 20},
    )
    assert proposed.status_code == 201, proposed.text
    answer = cell(matrix(hub), a, b)
    assert answer["partnership_id"] == proposed.json()["id"]
    assert answer["min_audience"] == 20
    assert answer["count"] == 60


def test_a_large_matrix_is_answered_in_short_transactions(
    hub: Hub, plus_seven: AddSeven, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Answers are stored a few pairs per transaction (a thousand partners are half a million
    pairs: in one transaction SQLite's write lock was held for minutes), and a partnership
    chunked apart from its pair still spends once per answer."""
    monkeypatch.setattr(matrix_module, "PAIRS_PER_TRANSACTION", 2)
    a, b, noisy = members(hub, epsilon=0.5, epsilon_budget=5.0, budget_period="day")
    c, d, _ = members(hub)
    shared(hub, a, b, "chunked-ab-", 30)
    shared(hub, c, d, "chunked-cd-", 25)
    engine = hub.app.state.overlap_service.session_maker.kw["bind"].sync_engine
    commits: list[int] = []

    def counted(_connection: Any) -> None:
        commits.append(1)

    event.listen(engine, "commit", counted)
    try:
        body = matrix(hub)
    finally:
        event.remove(engine, "commit", counted)
    entries = hub.as_admin("GET", "/v1/audit", params={"limit": 50}).json()["items"]
    answered = next(e for e in entries if e["action"] == "overlap.matrix")["details"]["answered"]
    assert answered >= 2
    # One transaction per two pairs answered, and one for the matrix's own audit entry.
    assert len(commits) >= -(-answered // 2) + 1
    assert cell(body, a, b)["count"] == 30 + PLUS
    assert cell(body, c, d)["count"] == 25
    assert budget(hub, noisy)["queries"] == 1
    # Both answers were stored: served again as they were, without spending.
    again = matrix(hub)
    assert cell(again, a, b) == cell(body, a, b)
    assert cell(again, c, d) == cell(body, c, d)
    assert budget(hub, noisy)["queries"] == 1
