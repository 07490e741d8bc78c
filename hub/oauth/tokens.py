"""Issuing access tokens as RFC 9068 JWTs signed with the keyring's active signing key."""

from __future__ import annotations

import secrets
import time
from typing import Any

from joserfc import jwt

from hub.core.keyring import SIGNING_ALG, Keyring


class AccessTokenIssuer:
    def __init__(self, keyring: Keyring, *, issuer: str, audience: str, ttl_seconds: int) -> None:
        self.keyring = keyring
        self.issuer = issuer
        self.audience = audience
        self.ttl_seconds = ttl_seconds

    def issue(
        self, client_id: str, partner_id: str | None, scope: str, partner_epoch: int = 0
    ) -> dict[str, Any]:
        """Return the token response body (RFC 6749 §5.1) plus the claims, for the audit."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": client_id,
            "client_id": client_id,
            "iat": now,
            "nbf": now,
            "exp": now + self.ttl_seconds,
            "jti": secrets.token_urlsafe(18),
            "scope": scope,
        }
        if partner_id is not None:
            claims["partner_id"] = partner_id
            claims["partner_epoch"] = partner_epoch
        kid, key = self.keyring.signer
        header = {"alg": SIGNING_ALG, "typ": "at+jwt", "kid": kid}
        token = jwt.encode(header, claims, key, algorithms=[SIGNING_ALG])
        return {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": self.ttl_seconds,
            "scope": scope,
            "_claims": claims,
        }
