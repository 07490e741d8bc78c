"""Every time a client sends (the audit's since/until, an offer's window) at the edges of what
a datetime can hold: a 400 or 422 problem detail naming the field, never a 500, and nothing
written. (Unix time 253402300800 made the decoder raise a bare ValueError; a time of the year
9999 with a negative offset is in the year 10000 once in UTC; an offer window without an
offset was compared with an aware "now"; an offer ending in 9999 overflowed its measurement
window. The 50k-case Schemathesis run found the first family.)"""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.matching_helpers import members
from tests.conftest import Hub, table_counts

UNHOLDABLE = [
    "253402300800",  # 10000-01-01T00:00:00Z
    "253402300800.5",
    "-62135596801",  # before the year 1
    "1e300",
    "nan",
    "inf",
    "9999-12-31T23:59:59-05:00",  # the year 10000 in UTC
    "0001-01-01T00:00:00+05:00",  # the year 0 in UTC
    "10000-01-01T00:00:00Z",
    "2026-13-01T00:00:00Z",
    "",
    "yesterday",
]
HOLDABLE = [
    "253402300799",
    "253402300799.5",
    "253402214399.00003",  # the value of the Schemathesis finding
    "-62135596800",
    "9999-12-31T23:59:59Z",
    "9999-12-31T23:59:59",  # no offset: UTC
    "0001-01-01T00:00:00Z",
    "2026-12-03T10:00:00+14:00",
    "null",  # the schema's null: left out
]


def problem(response: Any, status: int, field: str) -> None:
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/problem+json")
    assert field in response.json()["detail"]


@pytest.mark.parametrize("name", ["since", "until"])
def test_audit_times_the_hub_cannot_hold_are_a_400(hub: Hub, name: str) -> None:
    for value in UNHOLDABLE:
        problem(hub.as_admin("GET", "/v1/audit", params={name: value, "limit": 1}), 400, name)
    for value in HOLDABLE:
        answer = hub.as_admin("GET", "/v1/audit", params={name: value, "limit": 1})
        assert answer.status_code == 200, (value, answer.text)


def test_audit_times_filter_in_utc(hub: Hub) -> None:
    everything = hub.as_admin("GET", "/v1/audit", params={"limit": 1}).json()["items"]
    assert everything
    newest = everything[0]["at"]  # e.g. 2026-12-03T22:57:16.736474Z
    same_instant = newest.replace("Z", "+00:00")
    after = hub.as_admin("GET", "/v1/audit", params={"since": same_instant, "limit": 1})
    assert [e["seq"] for e in after.json()["items"]] == [everything[0]["seq"]]
    naive = newest.removesuffix("Z")  # no offset: read as UTC, the same instant
    before = hub.as_admin("GET", "/v1/audit", params={"until": naive, "limit": 1})
    assert before.status_code == 200
    assert all(e["seq"] < everything[0]["seq"] for e in before.json()["items"])
    assert (
        hub.as_admin("GET", "/v1/audit", params={"until": "null", "limit": 1}).json()["items"]
        == hub.as_admin("GET", "/v1/audit", params={"limit": 1}).json()["items"]
    )


@pytest.mark.parametrize("field", ["starts_at", "ends_at"])
def test_offer_windows_outside_the_years_2000_to_2099_are_refused_and_nothing_is_kept(
    hub: Hub, field: str
) -> None:
    a, b, partnership = members(hub, min_audience=10)
    body = {"partnership_id": partnership, "title": "edges", "points": {a.id: 10, b.id: 10}}
    before = table_counts(hub.database_url)
    for value in ["9999-12-31T23:59:59-05:00", "0001-01-01T00:00:00+05:00"]:
        problem(a.post(hub, "/v1/offers", {**body, field: value}), 400, field)
    # Unix time past 9999 (the JSON decoder's own error, before any field is known to the hub)
    problem(a.post(hub, "/v1/offers", {**body, field: 253402300800}), 400, "out of range")
    for value in ["9999-12-31T23:59:59Z", "2100-01-01T00:00:00Z", "1999-12-31T23:59:59Z"]:
        refused = a.post(hub, "/v1/offers", {**body, field: value})
        if field == "ends_at" and value.startswith("1999"):
            problem(refused, 422, "ends_at")  # outside, and in the past
            continue
        problem(refused, 422, field)
        assert refused.json()["errors"][0]["field"] == field
    assert table_counts(hub.database_url) == before
    # A window without offsets is read as UTC (it was compared with an aware "now": a 500).
    made = a.post(
        hub,
        "/v1/offers",
        {**body, "starts_at": "2090-01-01T00:00:00", "ends_at": "2099-12-31T23:59:59"},
    )
    assert made.status_code == 201, made.text
    assert made.json()["starts_at"] == "2090-01-01T00:00:00Z"
    assert made.json()["ends_at"] == "2099-12-31T23:59:59Z"


def test_the_document_gives_the_times_the_audit_takes(hub: Hub) -> None:
    """What the parser accepts is what the document says: RFC 3339, or Unix seconds in the
    years 1 to 9999 (the first 50k-case run found the document a day narrower than the
    parser; the second, a since/until documented as a bare string)."""
    document = hub.http.get("/schema/openapi.json").json()
    parameters = document["paths"]["/v1/audit"]["get"]["parameters"]
    for name in ("since", "until"):
        (schema,) = [p["schema"] for p in parameters if p["name"] == name]
        assert schema["oneOf"][1] == {"type": "null"}
        text, unix = schema["oneOf"][0]["anyOf"]
        assert text == {"type": "string", "format": "date-time"}
        assert (unix["minimum"], unix["exclusiveMaximum"]) == (-62135596800, 253402300800)
