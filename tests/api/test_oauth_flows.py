"""Token flows through HTTP with authlib's own OAuth 2.0 client, for every auth method."""

from __future__ import annotations

import time
from typing import Any

import pytest
from authlib.integrations.httpx_client import OAuth2Client
from authlib.oauth2.rfc7523 import PrivateKeyJWT
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey

from tests.conftest import Hub


def published_keys(hub: Hub) -> KeySet:
    return KeySet.import_key_set(hub.http.get("/.well-known/jwks.json").json())


def assert_valid_access_token(
    hub: Hub, token: str, client_id: str, partner_id: str
) -> dict[str, Any]:
    decoded = jwt.decode(token, published_keys(hub), algorithms=["RS256"])
    claims = decoded.claims
    assert decoded.header["typ"] == "at+jwt"
    metadata = hub.http.get("/.well-known/oauth-authorization-server").json()
    assert claims["iss"] == metadata["issuer"]
    assert claims["aud"] == metadata["resource"]
    assert claims["sub"] == client_id == claims["client_id"]
    assert claims["partner_id"] == partner_id
    assert claims["iat"] <= time.time() < claims["exp"]
    assert claims["jti"]
    return dict(claims)


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
def test_secret_client_gets_a_token_with_authlib(hub: Hub, method: str) -> None:
    partner = hub.create_partner("hotel")
    client = hub.create_client(partner["id"], ["overlap:read"], auth_method=method)
    with OAuth2Client(
        client["client_id"], client["client_secret"], token_endpoint_auth_method=method
    ) as oauth:
        token = oauth.fetch_token(f"{hub.url}/oauth/token", grant_type="client_credentials")
        claims = assert_valid_access_token(
            hub, token["access_token"], client["client_id"], partner["id"]
        )
        assert claims["scope"] == "overlap:read"
        assert token["token_type"] == "Bearer"
        me = oauth.get(f"{hub.url}/v1/me")
    assert me.status_code == 200
    assert me.json()["partner"]["id"] == partner["id"]


def test_private_key_jwt_client_gets_a_token_with_authlib(hub: Hub) -> None:
    key = RSAKey.generate_key(2048, parameters={"kid": "brand-key-1", "alg": "RS256"})
    partner = hub.create_partner("coffee")
    client = hub.create_client(
        partner["id"],
        ["rewards:read"],
        auth_method="private_key_jwt",
        jwks={"keys": [key.as_dict(private=False)]},
    )
    assert "client_secret" not in client or client["client_secret"] is None
    token_url = f"{hub.url}/oauth/token"
    with OAuth2Client(
        client["client_id"],
        key.as_dict(private=True),
        token_endpoint_auth_method=PrivateKeyJWT(token_url),
    ) as oauth:
        oauth.register_client_auth_method(PrivateKeyJWT(token_url))
        token = oauth.fetch_token(token_url, grant_type="client_credentials")
    claims = assert_valid_access_token(
        hub, token["access_token"], client["client_id"], partner["id"]
    )
    assert claims["scope"] == "rewards:read"


def test_metadata_describes_the_server(hub: Hub) -> None:
    metadata = hub.http.get("/.well-known/oauth-authorization-server").json()
    assert metadata["token_endpoint"] == f"{metadata['issuer']}/oauth/token"
    assert set(metadata["token_endpoint_auth_methods_supported"]) == {
        "client_secret_basic",
        "client_secret_post",
        "private_key_jwt",
    }
    assert metadata["grant_types_supported"] == ["client_credentials"]
    assert "admin" in metadata["scopes_supported"]


def test_introspection_shows_a_client_only_its_own_tokens(hub: Hub) -> None:
    partner_a = hub.create_partner("airline")
    a = hub.create_client(partner_a["id"], ["overlap:read"])
    partner_b = hub.create_partner("hotel")
    b = hub.create_client(partner_b["id"], ["overlap:read"])
    token_a = hub.token(a["client_id"], a["client_secret"])

    own = hub.http.post(
        "/oauth/introspect", data={"token": token_a}, auth=(a["client_id"], a["client_secret"])
    )
    assert own.status_code == 200
    assert own.json()["active"] is True
    assert own.json()["client_id"] == a["client_id"]
    assert own.json()["partner_id"] == partner_a["id"]

    other = hub.http.post(
        "/oauth/introspect", data={"token": token_a}, auth=(b["client_id"], b["client_secret"])
    )
    assert other.status_code == 200
    assert other.json() == {"active": False}

    by_admin = hub.http.post(
        "/oauth/introspect", data={"token": token_a}, auth=(hub.admin_id, hub.admin_secret)
    )
    assert by_admin.json()["active"] is True


def test_revoked_token_is_refused_at_once_and_introspects_inactive(hub: Hub) -> None:
    partner = hub.create_partner("bank_card")
    client = hub.create_client(partner["id"], ["overlap:read"])
    token = hub.token(client["client_id"], client["client_secret"])
    headers = {"Authorization": f"Bearer {token}"}
    assert hub.http.get("/v1/me", headers=headers).status_code == 200

    auth = (client["client_id"], client["client_secret"])
    revoked = hub.http.post("/oauth/revoke", data={"token": token}, auth=auth)
    assert revoked.status_code == 200

    refused = hub.http.get("/v1/me", headers=headers)
    assert refused.status_code == 401
    assert 'error="invalid_token"' in refused.headers["www-authenticate"]
    assert "revoked" in refused.json()["detail"]
    assert hub.http.post("/oauth/introspect", data={"token": token}, auth=auth).json() == {
        "active": False
    }
    # Revoking again (or an unknown token) is not an error (RFC 7009 §2.2).
    assert hub.http.post("/oauth/revoke", data={"token": token}, auth=auth).status_code == 200
    assert hub.http.post("/oauth/revoke", data={"token": "garbage"}, auth=auth).status_code == 200


def test_a_client_cannot_revoke_another_clients_token(hub: Hub) -> None:
    _, _, headers_a = hub.partner_with_token("airline")
    _, b, _ = hub.partner_with_token("hotel")
    token_a = headers_a["Authorization"].split()[1]
    response = hub.http.post(
        "/oauth/revoke", data={"token": token_a}, auth=(b["client_id"], b["client_secret"])
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"
    assert hub.http.get("/v1/me", headers=headers_a).status_code == 200


def test_token_issuance_and_revocation_are_audited(hub: Hub) -> None:
    _, client, headers = hub.partner_with_token("coffee")
    token = headers["Authorization"].split()[1]
    jti = jwt.decode(token, published_keys(hub)).claims["jti"]
    hub.http.post(
        "/oauth/revoke", data={"token": token}, auth=(client["client_id"], client["client_secret"])
    )
    issued = hub.as_admin("GET", "/v1/audit", params={"target_id": jti}).json()["items"]
    assert {e["action"] for e in issued} == {"token.issued", "token.revoked"}
    assert all(e["actor"] == f"client:{client['client_id']}" for e in issued)
