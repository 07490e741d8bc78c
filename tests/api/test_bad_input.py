"""Malformed, oversized, mistyped or unauthorised input: a 4xx problem detail, nothing written."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Hub, table_counts

PROBLEM = "application/problem+json"


def assert_problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["status"] == status
    assert body["detail"]
    assert body["fix"]
    assert body["title"]
    assert body["type"].startswith("urn:hub:problem:")
    assert response.headers["x-request-id"] == body["request_id"]
    return dict(body)


@pytest.fixture(scope="module")
def partner_id(hub: Hub) -> str:
    return str(hub.create_partner("airline")["id"])


BAD_PARTNER_BODIES = [
    (b'{"name": "x", "category": ', "malformed JSON"),
    (b"[1, 2, 3]", "not an object"),
    (b'{"name": 42, "category": "airline"}', "wrong type"),
    (b'{"name": "x"}', "missing field"),
    (b'{"name": "x", "category": "airline", "is_admin": true}', "unknown field"),
    (b'{"name": "", "category": "airline"}', "empty name"),
    (b'{"name": "x", "category": "Not A Slug!"}', "bad category"),
    (b"\xff\xfe not utf-8", "not UTF-8"),
]


@pytest.mark.parametrize(
    ("body", "why"), BAD_PARTNER_BODIES, ids=[b[1] for b in BAD_PARTNER_BODIES]
)
def test_a_malformed_body_is_a_400_and_writes_nothing(hub: Hub, body: bytes, why: str) -> None:
    before = table_counts(hub.database_url)
    response = hub.as_admin(
        "POST",
        "/v1/partners",
        content=body,
        headers={"content-type": "application/json"},
    )
    assert_problem(response, 400)
    assert table_counts(hub.database_url) == before, why


def test_unknown_fields_are_named_in_the_error(hub: Hub) -> None:
    response = hub.as_admin(
        "POST", "/v1/partners", json={"name": "x", "category": "airline", "tier": 1}
    )
    body = assert_problem(response, 400)
    assert "tier" in body["detail"]


def test_wrong_content_type_is_a_415(hub: Hub) -> None:
    before = table_counts(hub.database_url)
    response = hub.as_admin(
        "POST",
        "/v1/partners",
        content=b"name=x&category=airline",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    body = assert_problem(response, 415)
    assert "application/json" in body["fix"]
    assert table_counts(hub.database_url) == before


def test_an_oversized_body_is_a_413(hub: Hub) -> None:
    before = table_counts(hub.database_url)
    huge = b'{"name": "' + b"x" * 2_000_000 + b'", "category": "airline"}'
    response = hub.as_admin(
        "POST",
        "/v1/partners",
        content=huge,
        headers={"content-type": "application/json"},
    )
    assert_problem(response, 413)
    assert table_counts(hub.database_url) == before


def test_rule_violations_are_422_with_every_bad_field(hub: Hub, partner_id: str) -> None:
    other = hub.create_partner("airline")["id"]
    before = table_counts(hub.database_url)
    competitors = hub.as_admin(
        "POST", "/v1/partnerships", json={"members": [partner_id, other], "purposes": ["analytics"]}
    )
    body = assert_problem(competitors, 422)
    assert body["errors"][0]["field"] == "members"
    assert "allow_competitors" in body["fix"]
    low = hub.create_partner("hotel")["id"]
    threshold = hub.as_admin(
        "POST",
        "/v1/partnerships",
        json={"members": [partner_id, low], "purposes": ["analytics"], "min_audience": 5},
    )
    assert assert_problem(threshold, 422)["errors"][0]["field"] == "min_audience"
    assert table_counts(hub.database_url)["partnerships"] == before["partnerships"]


@pytest.mark.parametrize(
    "url",
    [
        "http://hooks.example.com/x",  # not https
        "https://10.1.2.3/hook",  # private
        "https://192.168.0.10/hook",
        "https://169.254.169.254/latest/meta-data",  # cloud metadata
        "https://[::1]/hook",  # loopback over https
        "https://user:pass@hooks.example.com/x",
        "ftp://hooks.example.com/x",
        "not a url",
    ],
)
def test_webhook_urls_into_private_ranges_are_refused(hub: Hub, partner_id: str, url: str) -> None:
    response = hub.as_admin("PATCH", f"/v1/partners/{partner_id}", json={"webhook_url": url})
    # test.toml allows http to loopback only; https to loopback is still this machine.
    if url == "https://[::1]/hook":
        assert response.status_code == 200
        return
    body = assert_problem(response, 422)
    assert body["errors"][0]["field"] == "webhook_url"
    assert hub.as_admin("GET", f"/v1/partners/{partner_id}").json()["webhook_url"] != url


def test_loopback_http_webhook_is_allowed_only_where_configured(hub: Hub, partner_id: str) -> None:
    response = hub.as_admin(
        "PATCH", f"/v1/partners/{partner_id}", json={"webhook_url": "http://127.0.0.1:9/hook"}
    )
    assert response.status_code == 200


def test_unknown_route_is_a_404_problem(hub: Hub) -> None:
    assert_problem(hub.as_admin("GET", "/v1/nothing-here"), 404)


def test_unknown_partner_is_a_404_problem(hub: Hub) -> None:
    assert_problem(hub.as_admin("GET", "/v1/partners/01a20000-0000-7000-8000-000000000000"), 404)


def test_an_id_that_is_not_a_uuid_is_a_400(hub: Hub) -> None:
    response = hub.as_admin("GET", "/v1/partners/not-a-uuid")
    assert response.status_code in (400, 404)
    assert response.headers["content-type"].startswith(PROBLEM)


def test_wrong_method_is_a_405_with_allow(hub: Hub) -> None:
    response = hub.as_admin("PUT", "/v1/partners")
    assert_problem(response, 405)
    assert "allow" in response.headers


@pytest.mark.parametrize(
    "params", [{"limit": 0}, {"limit": 100000}, {"limit": "ten"}, {"cursor": "!!!"}]
)
def test_bad_pagination_parameters_are_400(hub: Hub, params: dict[str, Any]) -> None:
    assert_problem(hub.as_admin("GET", "/v1/partners", params=params), 400)


def test_a_conflicting_create_is_409_and_writes_nothing(hub: Hub) -> None:
    name = hub.create_partner("coffee")["name"]
    before = table_counts(hub.database_url)
    response = hub.as_admin(
        "POST", "/v1/partners", json={"name": name.upper(), "category": "coffee"}
    )
    assert_problem(response, 409)
    assert table_counts(hub.database_url) == before


def test_oauth_errors_answer_in_rfc6749_form(hub: Hub) -> None:
    json_body = hub.http.post("/oauth/token", json={"grant_type": "client_credentials"})
    assert json_body.status_code == 400
    assert json_body.json()["error"] == "invalid_request"
    no_grant = hub.http.post(
        "/oauth/token", data={"grant_type": "password"}, auth=(hub.admin_id, hub.admin_secret)
    )
    assert no_grant.json()["error"] == "unsupported_grant_type"
    unknown = hub.http.post(
        "/oauth/token", data={"grant_type": "client_credentials"}, auth=("cl_nobody", "x")
    )
    assert unknown.status_code == 401
    assert unknown.json()["error"] == "invalid_client"
    assert unknown.headers["cache-control"] == "no-store"
    twice = hub.http.post(
        "/oauth/token",
        content=b"grant_type=client_credentials&grant_type=client_credentials",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert twice.json()["error"] == "invalid_request"


def test_a_retried_create_with_the_same_idempotency_key_applies_once(hub: Hub) -> None:
    body = {"name": "Retry Air", "category": "airline"}
    headers = {"Idempotency-Key": "7c1f0b9e-retry-1"}
    first = hub.as_admin("POST", "/v1/partners", json=body, headers=headers)
    assert first.status_code == 201
    before = table_counts(hub.database_url)
    again = hub.as_admin("POST", "/v1/partners", json=body, headers=headers)
    assert again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert table_counts(hub.database_url) == before
    different = hub.as_admin(
        "POST", "/v1/partners", json={**body, "name": "Other"}, headers=headers
    )
    body_409 = assert_problem(different, 409)
    assert "different request" in body_409["detail"]
    assert table_counts(hub.database_url) == before


def test_idempotency_keys_are_per_client(hub: Hub) -> None:
    _, _, headers = hub.partner_with_token("hotel")
    key = {"Idempotency-Key": "shared-key-1"}
    first = hub.as_admin(
        "POST", "/v1/partners", json={"name": "Key Inn", "category": "hotel"}, headers=key
    )
    assert first.status_code == 201
    # Another client using the same key value neither sees nor disturbs the admin's record.
    other = hub.http.post(
        "/v1/partners", json={"name": "Key Inn 2", "category": "hotel"}, headers={**headers, **key}
    )
    assert other.status_code == 403
    assert "idempotent-replayed" not in other.headers


def test_a_failed_request_does_not_burn_its_idempotency_key(hub: Hub) -> None:
    headers = {"Idempotency-Key": "after-error-1"}
    bad = hub.as_admin(
        "POST", "/v1/partners", json={"name": "", "category": "airline"}, headers=headers
    )
    assert bad.status_code == 400
    good = hub.as_admin(
        "POST", "/v1/partners", json={"name": "Fixed Air", "category": "airline"}, headers=headers
    )
    assert good.status_code == 201, good.text
