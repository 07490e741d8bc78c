"""What operators and integrators rely on: health, metrics, the API document, rate limits,
request ids and throttled client authentication."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.conftest import Hub, launch_hub


@pytest.fixture(scope="module")
def limited(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    # 5 at once, then 5 per second: the admin's own set-up calls recover within a second.
    env = {"HUB_LIMITS_REQUESTS_PER_MINUTE": "300", "HUB_LIMITS_BURST": "5"}
    with launch_hub(backend, tmp_path_factory.mktemp(f"limited-{backend}"), **env) as running:
        yield running


def test_health_endpoints(hub: Hub) -> None:
    assert hub.http.get("/health/live").json() == {"status": "ok"}
    ready = hub.http.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json()["database"] == "ok"


def test_metrics_count_requests_by_route(hub: Hub) -> None:
    hub.as_admin("GET", "/v1/partners")
    hub.as_admin("GET", "/v1/partners/01a20000-0000-7000-8000-000000000000")
    text = hub.http.get("/metrics").text
    assert "hub_requests_total" in text
    assert "hub_request_duration_seconds" in text
    assert 'path="/v1/partners/{partner_id}"' in text  # grouped by route, no ids
    assert 'status_code="404"' in text


def test_the_openapi_document_lists_the_contract(hub: Hub) -> None:
    document = hub.http.get("/schema/openapi.json").json()
    paths = set(document["paths"])
    for path in (
        "/oauth/token",
        "/oauth/introspect",
        "/oauth/revoke",
        "/v1/me",
        "/v1/partners",
        "/v1/partners/{partner_id}",
        "/v1/partners/{partner_id}/clients",
        "/v1/partners/{partner_id}/clients/{client_id}",
        "/v1/partnerships",
        "/v1/partnerships/{partnership_id}",
        "/v1/partnerships/{partnership_id}/accept",
        "/v1/audit",
        "/v1/audit/head",
        "/.well-known/jwks.json",
        "/.well-known/oauth-authorization-server",
    ):
        assert path in paths, path
    assert hub.http.get("/schema").status_code == 200


def test_a_request_id_is_echoed_or_made(hub: Hub) -> None:
    mine = hub.http.get("/health/live", headers={"X-Request-ID": "brand-trace-42"})
    assert mine.headers["x-request-id"] == "brand-trace-42"
    made = hub.http.get("/health/live", headers={"X-Request-ID": "bad id with spaces"})
    assert made.headers["x-request-id"] != "bad id with spaces"
    assert len(made.headers["x-request-id"]) == 32


def test_a_client_over_its_rate_limit_gets_429_with_retry_after(limited: Hub) -> None:
    _, _, headers = limited.partner_with_token("airline")
    statuses = [limited.http.get("/v1/me", headers=headers).status_code for _ in range(8)]
    assert statuses[:5] == [200] * 5
    assert 429 in statuses[5:]
    refused = limited.http.get("/v1/me", headers=headers)
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.json()["retry_after"] == int(refused.headers["retry-after"])
    # Another client is not affected by the first one's use.
    _, _, other = limited.partner_with_token("hotel")
    assert limited.http.get("/v1/me", headers=other).status_code == 200


def test_failed_client_authentication_is_throttled(limited: Hub) -> None:
    time.sleep(1.5)  # let the admin's bucket refill after the previous test
    partner = limited.create_partner("coffee")
    client = limited.create_client(partner["id"])
    form = {"grant_type": "client_credentials"}
    failures = [
        limited.http.post(
            "/oauth/token", data=form, auth=(client["client_id"], f"guess-{i}")
        ).status_code
        for i in range(5)
    ]
    assert failures == [401] * 5
    throttled = limited.http.post("/oauth/token", data=form, auth=(client["client_id"], "guess-6"))
    assert throttled.status_code == 429
    assert throttled.json()["error"] == "invalid_client"
    assert int(throttled.headers["retry-after"]) >= 1
    # Even the right secret waits: guessing gains nothing.
    right = limited.http.post(
        "/oauth/token", data=form, auth=(client["client_id"], client["client_secret"])
    )
    assert right.status_code == 429
