"""One overlap matrix covers at most matching.matrix_max_partners partners.

Found by the 50k-case Schemathesis run (issue 15): with 4,500 active (throwaway) partners,
each GET /v1/coalition/overlap-matrix set out to count ten million pairs and answer twenty
million cells, and the run stalled on it. Past the bound the matrix is a 422 that says how to
name the partners to compare; named partners give their own matrix; a partner that holds no
records is counted without the engine."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.api.matching_helpers import email, members, rec
from tests.conftest import Hub, launch_hub, table_counts

PATH = "/v1/coalition/overlap-matrix"


@pytest.fixture(scope="module")
def small(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    data_dir = tmp_path_factory.mktemp(f"matrix-bound-{backend}")
    with launch_hub(backend, data_dir, HUB_MATCHING_MATRIX_MAX_PARTNERS="3") as hub:
        yield hub


def problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    return dict(response.json())


def test_past_the_bound_the_matrix_says_how_to_name_partners(small: Hub) -> None:
    hub = small
    a, b, _ = members(hub)
    a.upload(hub, [rec(email(f"bound{n}"), f"a{n}") for n in range(12)])
    b.upload(hub, [rec(email(f"bound{n}"), f"b{n}") for n in range(12)])
    quiet = [hub.create_partner("bank")["id"] for _ in range(2)]  # four active partners now
    before = table_counts(hub.database_url)
    body = problem(hub.as_admin("GET", PATH), 422)
    assert "4 active partners" in body["detail"]
    assert "at most 3" in body["detail"]
    assert "?partner=" in body["fix"]
    after = table_counts(hub.database_url)
    assert {k: v for k, v in after.items() if k != "audit_log"} == {
        k: v for k, v in before.items() if k != "audit_log"
    }

    named = hub.as_admin("GET", PATH, params={"partner": [a.id, b.id, quiet[0]]})
    assert named.status_code == 200, named.text
    matrix = named.json()
    assert {p["id"] for p in matrix["partners"]} == {a.id, b.id, quiet[0]}
    assert len(matrix["cells"]) == 6  # ordered pairs of three
    counts = {(c["a"], c["b"]): c["count"] for c in matrix["cells"]}
    assert counts[(a.id, b.id)] == 12
    assert counts[(a.id, quiet[0])] is None  # no records: nothing to count, shown suppressed
    suppressed = {(c["a"], c["b"]): c["suppressed"] for c in matrix["cells"]}
    assert suppressed[(a.id, quiet[0])] is True


def test_named_partners_must_be_active_and_within_the_bound(small: Hub) -> None:
    hub = small
    ids = [hub.create_partner("hotel")["id"] for _ in range(4)]
    too_many = problem(hub.as_admin("GET", PATH, params={"partner": ids}), 422)
    assert "4 partners were named" in too_many["detail"]
    stranger = "0190f2c4-0000-7000-8000-000000000000"
    unknown = problem(hub.as_admin("GET", PATH, params={"partner": [ids[0], stranger]}), 422)
    assert [e["reason"] for e in unknown["errors"]] == [f"{stranger}: no active partner"]
    malformed = problem(hub.as_admin("GET", PATH, params={"partner": "not-a-uuid"}), 400)
    assert malformed["status"] == 400
