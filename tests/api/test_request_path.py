"""The request path every API call takes (hub/core/request.py, hub/core/responses.py) and the
cached answers of GET /v1/me: what each caller is told, and what still refuses a caller."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar, Response, get, post
from litestar.datastructures import Cookie, ResponseHeader
from litestar.testing import TestClient

from hub.app import create_app
from hub.core.responses import HubResponse
from hub.migrate import upgrade
from tests.conftest import Hub, bootstrap_admin, hub_settings


def me(hub: Hub, headers: dict[str, str]) -> dict[str, Any]:
    response = hub.http.get("/v1/me", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert int(response.headers["content-length"]) == len(response.content)
    return dict(response.json())


def test_me_tells_each_client_of_a_partner_its_own_identity_and_follows_changes(hub: Hub) -> None:
    partner = hub.create_partner("airline")
    first = hub.create_client(partner["id"], ["overlap:read", "identifiers:write"])
    second = hub.create_client(partner["id"], ["offers:read"])
    first_headers = {
        "Authorization": f"Bearer {hub.token(first['client_id'], first['client_secret'])}"
    }
    narrow = hub.token(first["client_id"], first["client_secret"], scope="overlap:read")
    second_headers = {
        "Authorization": f"Bearer {hub.token(second['client_id'], second['client_secret'])}"
    }

    # Twice each: the second answer comes from the cache, and must be the same.
    for _ in range(2):
        answer = me(hub, first_headers)
        assert answer["client_id"] == first["client_id"]
        assert answer["scopes"] == ["identifiers:write", "overlap:read"]
        assert answer["partner"]["id"] == partner["id"]
        assert answer["partnerships"] == []
        other = me(hub, second_headers)
        assert other["client_id"] == second["client_id"]
        assert other["scopes"] == ["offers:read"]
        # The same client with a token of fewer scopes is told those scopes.
        assert me(hub, {"Authorization": f"Bearer {narrow}"})["scopes"] == ["overlap:read"]

    renamed = hub.as_admin(
        "PATCH", f"/v1/partners/{partner['id']}", json={"name": f"renamed-{partner['id'][:8]}"}
    )
    assert renamed.status_code == 200, renamed.text
    # The change was committed in this process: both clients see it at once.
    assert me(hub, first_headers)["partner"]["name"] == renamed.json()["name"]
    assert me(hub, second_headers)["partner"]["name"] == renamed.json()["name"]


def test_a_revoked_token_is_refused_although_its_answer_is_cached(hub: Hub) -> None:
    partner = hub.create_partner("hotel")
    revoked_client = hub.create_client(partner["id"], ["overlap:read"])
    kept_client = hub.create_client(partner["id"], ["overlap:read"])
    token = hub.token(revoked_client["client_id"], revoked_client["client_secret"])
    headers = {"Authorization": f"Bearer {token}"}
    kept = {
        "Authorization": "Bearer "
        + hub.token(kept_client["client_id"], kept_client["client_secret"])
    }
    for _ in range(3):  # verified once, then from the verified-token and /v1/me caches
        assert me(hub, headers)["client_id"] == revoked_client["client_id"]
    me(hub, kept)

    auth = (revoked_client["client_id"], revoked_client["client_secret"])
    assert hub.http.post("/oauth/revoke", data={"token": token}, auth=auth).status_code == 200

    refused = hub.http.get("/v1/me", headers=headers)
    assert refused.status_code == 401
    assert refused.headers["content-type"] == "application/problem+json"
    assert "revoked" in refused.json()["detail"]
    assert refused.headers["x-request-id"] == refused.json()["request_id"]
    # The partner's other client, whose answer sits in the same cache entry, is still served.
    assert me(hub, kept)["client_id"] == kept_client["client_id"]


def test_a_suspended_partners_clients_are_refused_at_once(hub: Hub) -> None:
    partner, client, headers = hub.partner_with_token("grocery")
    assert me(hub, headers)["client_id"] == client["client_id"]
    suspended = hub.as_admin("PATCH", f"/v1/partners/{partner['id']}", json={"status": "suspended"})
    assert suspended.status_code == 200, suspended.text
    refused = hub.http.get("/v1/me", headers=headers)
    assert refused.status_code == 401
    assert "suspended" in refused.json()["detail"]


def test_requests_are_counted_logged_and_carry_their_request_id(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    database_url = f"sqlite:///{tmp_path / 'hub.db'}"
    upgrade(database_url)
    admin_id, admin_secret = bootstrap_admin(database_url, tmp_path)
    settings = hub_settings(
        database_url,
        tmp_path,
        HUB_LOGGING_ACCESS_LOG="true",
        HUB_LOGGING_LEVEL="INFO",
    )
    with TestClient(create_app(settings), base_url="http://localhost") as client:
        capsys.readouterr()
        token = client.post(
            "/oauth/token",
            data={"grant_type": "client_credentials"},
            auth=(admin_id, admin_secret),
        ).json()["access_token"]
        bearer = {"Authorization": f"Bearer {token}"}

        ok = client.get("/v1/me", headers={**bearer, "X-Request-ID": "trace-me-1"})
        assert ok.status_code == 200
        assert ok.headers["x-request-id"] == "trace-me-1"
        assert ok.json()["partner"] is None  # the coalition admin's client has no partner

        missing = client.get("/v1/me", headers={"X-Request-ID": "trace-me-2"})
        assert missing.status_code == 401
        assert missing.headers["x-request-id"] == "trace-me-2"
        assert missing.json()["request_id"] == "trace-me-2"

        # A write with a body of the wrong type still meets the 415 check.
        wrong = client.post(
            "/v1/partners", content=b"name=x", headers={**bearer, "Content-Type": "text/plain"}
        )
        assert wrong.status_code == 415
        assert wrong.headers["x-request-id"] == wrong.json()["request_id"]
        # And a repeated Idempotency-Key replays the first answer.
        body = {"name": "replayed-partner", "category": "airline"}
        key = {**bearer, "Idempotency-Key": "request-path-1"}
        created = client.post("/v1/partners", json=body, headers=key)
        replayed = client.post("/v1/partners", json=body, headers=key)
        assert created.status_code == replayed.status_code == 201
        assert replayed.headers["idempotent-replayed"] == "true"
        assert replayed.json() == created.json()

        metrics = client.get("/metrics").text
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line]
    access = [line for line in lines if line.get("event") == "request"]
    by_id = {line.get("request_id"): line for line in access}
    assert by_id["trace-me-1"]["route"] == "/v1/me"
    assert by_id["trace-me-1"]["status"] == 200
    assert by_id["trace-me-1"]["client_id"] == admin_id
    assert by_id["trace-me-2"]["status"] == 401
    assert by_id["trace-me-2"]["client_id"] is None
    statuses = {(line["method"], line["route"], line["status"]) for line in access}
    assert ("POST", "/v1/partners", 415) in statuses
    assert ("POST", "/v1/partners", 201) in statuses
    for status in ("200", "401"):
        assert f'hub_requests_total{{method="GET",path="/v1/me",status_code="{status}"}}' in metrics
    assert 'hub_requests_total{method="POST",path="/v1/partners",status_code="415"}' in metrics


@get("/data", sync_to_thread=False)
def data_route() -> dict[str, Any]:
    return {"a": [1, 2.5, None], "b": "é"}


@post("/created", sync_to_thread=False)
def created_route() -> dict[str, str]:
    return {"made": "yes"}


@get("/headers", sync_to_thread=False, response_headers=[ResponseHeader(name="x-extra", value="1")])
def headers_route() -> dict[str, str]:
    return {"with": "headers"}


@get("/cookie", sync_to_thread=False, response_cookies=[Cookie(key="c", value="v")])
def cookie_route() -> dict[str, str]:
    return {"with": "cookie"}


@get("/text", sync_to_thread=False, media_type="text/plain")
def text_route() -> str:
    return "plain"


@get("/empty", sync_to_thread=False, status_code=204)
def empty_route() -> None:
    return None


@get("/explicit", sync_to_thread=False)
def explicit_route() -> Response[dict[str, str]]:
    return Response({"explicit": "yes"}, headers={"x-own": "2"}, status_code=202)


@get("/bytes", sync_to_thread=False)
def bytes_route() -> Response[dict[str, str]]:
    return HubResponse(b'{"pre":"encoded"}')


ROUTES = [
    data_route,
    created_route,
    headers_route,
    cookie_route,
    text_route,
    empty_route,
    explicit_route,
]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/data"),
        ("POST", "/created"),
        ("GET", "/headers"),
        ("GET", "/cookie"),
        ("GET", "/text"),
        ("GET", "/empty"),
        ("GET", "/explicit"),
        ("HEAD", "/data"),
    ],
)
def test_hub_responses_are_the_answers_litestar_would_send(method: str, path: str) -> None:
    def answer(app: Litestar) -> tuple[int, list[tuple[str, str]], bytes]:
        with TestClient(app) as client:
            response = client.request(method, path)
        return response.status_code, sorted(response.headers.multi_items()), response.content

    plain = answer(Litestar(route_handlers=ROUTES))
    hub = answer(Litestar(route_handlers=ROUTES, response_class=HubResponse))
    assert hub == plain


def test_a_pre_encoded_body_is_sent_as_it_is() -> None:
    with TestClient(Litestar(route_handlers=[bytes_route])) as client:
        response = client.get("/bytes")
    assert response.status_code == 200
    assert response.content == b'{"pre":"encoded"}'
    assert response.headers["content-type"] == "application/json"
    assert response.headers["content-length"] == str(len(b'{"pre":"encoded"}'))
