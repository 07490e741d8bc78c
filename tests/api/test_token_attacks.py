"""Every way of presenting a token the hub did not issue, or no longer honours, is refused."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey

from hub.core.keyring import load_keyring
from tests.conftest import Hub


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def valid_claims(hub: Hub, client_id: str, partner_id: str) -> dict[str, Any]:
    metadata = hub.http.get("/.well-known/oauth-authorization-server").json()
    now = int(time.time())
    return {
        "iss": metadata["issuer"],
        "aud": metadata["resource"],
        "sub": client_id,
        "client_id": client_id,
        "partner_id": partner_id,
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "jti": f"forged-{now}-{time.perf_counter_ns()}",
        "scope": "overlap:read",
    }


def sign_with_hub_key(hub: Hub, claims: dict[str, Any], typ: str = "at+jwt") -> str:
    """Sign with the hub's real key: isolates the claim checks from the signature check."""
    keyring = load_keyring(hub.data_dir / "keyring.json", create=False)
    header = {"alg": "RS256", "typ": typ, "kid": keyring.active_signing().kid}
    return jwt.encode(header, claims, keyring.signing_key)


ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def key_client(hub: Hub, category: str, key: RSAKey) -> dict[str, Any]:
    """A private_key_jwt client that registered the public part of ``key``."""
    partner = hub.create_partner(category)
    jwks = {"keys": [key.as_dict(private=False)]}
    return hub.create_client(partner["id"], ["overlap:read"], "private_key_jwt", jwks=jwks)


def post_assertion(hub: Hub, client_id: str, key: RSAKey, jti: str, exp_in: int = 120) -> Any:
    """Ask for a token with an RFC 7523 client assertion signed by ``key``."""
    issuer = hub.http.get("/.well-known/oauth-authorization-server").json()["issuer"]
    now = int(time.time())
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": f"{issuer}/oauth/token",
        "iat": now,
        "exp": now + exp_in,
        "jti": jti,
    }
    assertion = jwt.encode({"alg": "RS256", "kid": key.kid or "k1"}, claims, key)
    form = {
        "grant_type": "client_credentials",
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": assertion,
    }
    return hub.http.post("/oauth/token", data=form)


def me_status(hub: Hub, token: str) -> tuple[int, dict[str, Any], str]:
    response = hub.http.get("/v1/me", headers={"Authorization": f"Bearer {token}"})
    return response.status_code, response.json(), response.headers.get("www-authenticate", "")


@pytest.fixture(scope="module")
def partner(hub: Hub) -> tuple[dict[str, Any], dict[str, Any]]:
    partner = hub.create_partner("airline")
    client = hub.create_client(partner["id"], ["overlap:read"])
    return partner, client


def test_a_token_signed_by_the_hub_with_valid_claims_is_accepted(hub: Hub, partner: Any) -> None:
    # The control case: the forging helper works, so the refusals below are meaningful.
    p, c = partner
    status, body, _ = me_status(
        hub, sign_with_hub_key(hub, valid_claims(hub, c["client_id"], p["id"]))
    )
    assert status == 200, body


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        # Times as offsets from when the test runs (not when it is collected: a long run
        # outlived a fixed "ten minutes from now").
        ({"exp": -300}, "expired"),
        ({"nbf": 600}, "not yet valid"),
        ({"iss": "https://attacker.example"}, "wrong issuer"),
        ({"aud": "https://another-api.example"}, "wrong audience"),
    ],
)
def test_claims_the_hub_would_never_issue_are_refused(
    hub: Hub, partner: Any, change: dict[str, Any], reason: str
) -> None:
    p, c = partner
    now = int(time.time())
    timed = {k: now + v if k in ("exp", "nbf") else v for k, v in change.items()}
    claims = {**valid_claims(hub, c["client_id"], p["id"]), **timed}
    status, body, challenge = me_status(hub, sign_with_hub_key(hub, claims))
    assert status == 401, reason
    assert body["type"] == "urn:hub:problem:unauthorized"
    assert 'error="invalid_token"' in challenge


def test_a_token_that_is_not_an_access_token_is_refused(hub: Hub, partner: Any) -> None:
    p, c = partner
    token = sign_with_hub_key(hub, valid_claims(hub, c["client_id"], p["id"]), typ="JWT")
    assert me_status(hub, token)[0] == 401


def test_a_tampered_payload_fails_the_signature(hub: Hub, partner: Any) -> None:
    p, c = partner
    token = sign_with_hub_key(hub, valid_claims(hub, c["client_id"], p["id"]))
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["scope"] = "overlap:read admin"
    forged = f"{header}.{b64(json.dumps(claims).encode())}.{signature}"
    assert me_status(hub, forged)[0] == 401


def test_a_token_signed_by_another_key_with_the_hubs_kid_is_refused(hub: Hub, partner: Any) -> None:
    p, c = partner
    keyring = load_keyring(hub.data_dir / "keyring.json", create=False)
    attacker = RSAKey.generate_key(2048)
    header = {"alg": "RS256", "typ": "at+jwt", "kid": keyring.active_signing().kid}
    token = jwt.encode(header, valid_claims(hub, c["client_id"], p["id"]), attacker)
    assert me_status(hub, token)[0] == 401


def test_alg_none_is_refused(hub: Hub, partner: Any) -> None:
    p, c = partner
    header = b64(json.dumps({"alg": "none", "typ": "at+jwt"}).encode())
    payload = b64(json.dumps(valid_claims(hub, c["client_id"], p["id"])).encode())
    assert me_status(hub, f"{header}.{payload}.")[0] == 401


def test_hs256_signed_with_the_public_key_is_refused(hub: Hub, partner: Any) -> None:
    p, c = partner
    keyring = load_keyring(hub.data_dir / "keyring.json", create=False)
    public_pem = RSAKey.import_key(keyring.active_signing().jwk).as_pem(private=False)
    kid = keyring.active_signing().kid
    header = b64(json.dumps({"alg": "HS256", "typ": "at+jwt", "kid": kid}).encode())
    payload = b64(json.dumps(valid_claims(hub, c["client_id"], p["id"])).encode())
    signature = hmac.new(public_pem, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    assert me_status(hub, f"{header}.{payload}.{b64(signature)}")[0] == 401


@pytest.mark.parametrize("value", ["", "Bearer", "Basic abc", "Bearer not.a.jwt", "Bearer a.b"])
def test_malformed_authorization_headers_are_refused(hub: Hub, value: str) -> None:
    response = hub.http.get("/v1/me", headers={"Authorization": value} if value else {})
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_a_scope_the_client_was_not_granted_is_invalid_scope(hub: Hub, partner: Any) -> None:
    _, c = partner
    for scope in ("overlap:read rewards:write", "admin", "no-such-scope"):
        response = hub.http.post(
            "/oauth/token",
            data={"grant_type": "client_credentials", "scope": scope},
            auth=(c["client_id"], c["client_secret"]),
        )
        assert response.status_code == 400, scope
        assert response.json()["error"] == "invalid_scope", scope
    narrowed = hub.http.post(
        "/oauth/token",
        data={"grant_type": "client_credentials", "scope": "overlap:read"},
        auth=(c["client_id"], c["client_secret"]),
    )
    assert narrowed.status_code == 200


def test_a_replayed_client_assertion_is_refused(hub: Hub) -> None:
    key = RSAKey.generate_key(2048, parameters={"kid": "k1"})
    client = key_client(hub, "hotel", key)
    first = post_assertion(hub, client["client_id"], key, jti="assertion-1")
    assert first.status_code == 200, first.text
    replay = post_assertion(hub, client["client_id"], key, jti="assertion-1")
    assert replay.status_code in (400, 401)
    assert replay.json()["error"] == "invalid_client"


def test_an_assertion_signed_by_an_unregistered_key_is_refused(hub: Hub) -> None:
    registered = RSAKey.generate_key(2048, parameters={"kid": "k1"})
    attacker = RSAKey.generate_key(2048, parameters={"kid": "k1"})
    client = key_client(hub, "coffee", registered)
    response = post_assertion(hub, client["client_id"], attacker, jti="x1")
    assert response.json()["error"] == "invalid_client"


def test_a_suspended_partners_token_stops_working_at_once(hub: Hub) -> None:
    partner, client, headers = hub.partner_with_token("bank_card")
    assert hub.http.get("/v1/me", headers=headers).status_code == 200

    suspended = hub.as_admin("PATCH", f"/v1/partners/{partner['id']}", json={"status": "suspended"})
    assert suspended.json()["status"] == "suspended"
    refused = hub.http.get("/v1/me", headers=headers)
    assert refused.status_code == 401
    assert "suspended" in refused.json()["detail"]
    new_token = hub.http.post(
        "/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=(client["client_id"], client["client_secret"]),
    )
    assert new_token.json()["error"] == "invalid_client"

    hub.as_admin("PATCH", f"/v1/partners/{partner['id']}", json={"status": "active"})
    fresh = hub.token(client["client_id"], client["client_secret"])
    assert hub.http.get("/v1/me", headers={"Authorization": f"Bearer {fresh}"}).status_code == 200
    # A token from before the suspension does not come back to life with the reactivation.
    stale = hub.http.get("/v1/me", headers=headers)
    assert stale.status_code == 401
    assert "suspended" in stale.json()["detail"]
    introspected = hub.http.post(
        "/oauth/introspect",
        data={"token": headers["Authorization"].split()[1]},
        auth=(client["client_id"], client["client_secret"]),
    )
    assert introspected.json() == {"active": False}


def test_a_revoked_clients_token_stops_working_at_once(hub: Hub) -> None:
    partner, client, headers = hub.partner_with_token("hotel")
    response = hub.as_admin("DELETE", f"/v1/partners/{partner['id']}/clients/{client['client_id']}")
    assert response.status_code == 200
    assert response.json()["status"] == "revoked"
    assert hub.http.get("/v1/me", headers=headers).status_code == 401
    again = hub.http.post(
        "/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=(client["client_id"], client["client_secret"]),
    )
    assert again.json()["error"] == "invalid_client"


def test_a_wrong_secret_is_invalid_client(hub: Hub, partner: Any) -> None:
    _, c = partner
    response = hub.http.post(
        "/oauth/token", data={"grant_type": "client_credentials"}, auth=(c["client_id"], "nope")
    )
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


def test_an_assertion_jti_is_remembered_as_long_as_the_assertion_verifies(hub: Hub) -> None:
    from tests.conftest import execute_sql

    key = RSAKey.generate_key(2048, parameters={"kid": "k1"})
    client = key_client(hub, "airline", key)
    before = int(time.time())
    response = post_assertion(hub, client["client_id"], key, jti="remember-me", exp_in=60)
    assert response.status_code == 200
    ((kept_until,),) = execute_sql(
        hub.database_url,
        "SELECT expires_at FROM oauth_used_assertions WHERE jti = 'remember-me'",
    )
    # authlib accepts an assertion until exp + its 30 s leeway; the jti must be kept as long.
    assert kept_until >= before + 60 + 30


def stranger(hub: Hub, address: str) -> httpx.Client:
    """A client on another loopback address (Linux routes all of 127/8 here): its failures
    are throttled apart from the rest of the module's requests."""
    return httpx.Client(base_url=hub.url, transport=httpx.HTTPTransport(local_address=address))


def test_an_assertion_naming_a_secret_client_is_a_throttled_invalid_client(hub: Hub) -> None:
    # authlib found no key for a client_secret client and raised MissingKeyError: a 500 that
    # was never counted as a failed authentication, so it could be repeated without end.
    partner = hub.create_partner("coffee")
    client = hub.create_client(partner["id"])  # client_secret_basic
    attacker = RSAKey.generate_key(2048, parameters={"kid": "k1"})
    issuer = hub.http.get("/.well-known/oauth-authorization-server").json()["issuer"]
    limit = hub.app.state.settings.oauth.failed_auth_limit
    statuses = []
    with stranger(hub, "127.0.0.3") as http:
        for n in range(limit + 1):
            now = int(time.time())
            claims = {
                "iss": client["client_id"],
                "sub": client["client_id"],
                "aud": f"{issuer}/oauth/token",
                "iat": now,
                "exp": now + 60,
                "jti": f"secret-client-{n}",
            }
            form = {
                "grant_type": "client_credentials",
                "client_assertion_type": ASSERTION_TYPE,
                "client_assertion": jwt.encode({"alg": "RS256", "kid": "k1"}, claims, attacker),
            }
            response = http.post("/oauth/token", data=form)
            assert response.json()["error"] == "invalid_client", response.text
            statuses.append(response.status_code)
    assert statuses[:limit] == [400] * limit
    assert statuses[limit] == 429


def test_malformed_basic_credentials_count_toward_the_throttle(hub: Hub) -> None:
    limit = hub.app.state.settings.oauth.failed_auth_limit_per_address
    form = {"grant_type": "client_credentials"}
    with stranger(hub, "127.0.0.4") as http:
        statuses = [
            http.post("/oauth/token", data=form, headers={"Authorization": "Basic /w=="})
            for _ in range(limit + 1)
        ]
    assert [r.status_code for r in statuses[:limit]] == [401] * limit
    assert statuses[limit].status_code == 429
    assert statuses[limit].json()["error"] == "invalid_client"


def test_a_client_id_with_a_nul_is_a_throttled_invalid_client(hub: Hub) -> None:
    # PostgreSQL refuses NUL in a query: this once answered invalid_request, uncounted.
    limit = hub.app.state.settings.oauth.failed_auth_limit
    form = {"grant_type": "client_credentials", "client_id": "cl_a\x00b", "client_secret": "x"}
    with stranger(hub, "127.0.0.5") as http:
        statuses = [http.post("/oauth/token", data=form) for _ in range(limit + 1)]
    assert all(r.json()["error"] == "invalid_client" for r in statuses)
    assert [r.status_code for r in statuses][-1] == 429
