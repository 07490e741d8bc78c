"""What the Schemathesis run (tests/api/test_schemathesis.py) found, pinned as plain tests: each
answered 500 before, each is a 4xx in the documented shape now, and nothing is written."""

from __future__ import annotations

from tests.api.matching_helpers import email
from tests.conftest import Hub, table_counts

EVERY_PARTNER_SCOPE = ["identifiers:write", "rewards:write", "rewards:read"]


def test_an_unknown_scope_that_is_not_ascii_is_invalid_scope(hub: Hub) -> None:
    partner = hub.create_partner("coffee")
    client = hub.create_client(partner["id"])
    response = hub.http.post(
        "/oauth/token",
        data={"grant_type": "client_credentials", "scope": "x\u00bf\u00fd\x0f overlap:read"},
        auth=(client["client_id"], client["client_secret"]),
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_scope"
    assert "not printable ASCII" in response.json()["error_description"]


def test_an_id_type_that_is_an_object_is_a_422_per_item(hub: Hub) -> None:
    _, _, headers = hub.partner_with_token("airline", EVERY_PARTNER_SCOPE)
    before = table_counts(hub.database_url)
    event = {
        "event_id": "e-1",
        "id_type": {"email": True},
        "id_hash": email("x"),
        "kind": "earn",
        "points": 5,
        "occurred_at": "2026-01-01T00:00:00+00:00",
    }
    events = hub.http.post("/v1/rewards/events", json={"events": [event]}, headers=headers)
    assert events.status_code == 422, events.text
    assert {"index": 0, "field": "id_type", "reason": "email or phone"} in events.json()["errors"]
    record = {"id_type": ["email"], "id_hash": email("x"), "customer_ref": "c-1"}
    records = hub.http.post("/v1/identifiers", json={"records": [record]}, headers=headers)
    assert records.status_code == 422, records.text
    assert records.json()["errors"][0]["field"] == "id_type"
    after = table_counts(hub.database_url)
    assert {t: n for t, n in after.items() if t != "audit_log"} == {
        t: n for t, n in before.items() if t != "audit_log"
    }
