"""Resource-side authentication: verify bearer tokens once, cache the claims, guard by scope.

Access tokens are RFC 9068 JWTs signed by the hub. A token's signature and claims are verified
once and the result cached until ``exp``; every request still checks expiry and the revocation
cache (revoked jti, revoked client, suspended partner), which costs a few set lookups.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Literal, get_args
from uuid import UUID

import msgspec
from joserfc import jwt
from joserfc.errors import JoseError
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from hub.core.asgi import header_bytes
from hub.core.errors import Forbidden, TooManyRequests, Unauthorized
from hub.core.keyring import SIGNING_ALG, Keyring
from hub.core.revocations import RevocationCache

ADMIN_SCOPE = "admin"
AUDIT_READ_SCOPE = "audit:read"
# Every scope a client may be granted (DESIGN.md "Auth"); `admin` only for coalition admins.
ScopeName = Literal[
    "identifiers:write",
    "overlap:read",
    "offers:read",
    "offers:write",
    "rewards:write",
    "rewards:read",
    "audit:read",
    "admin",
]
ALL_SCOPES: tuple[str, ...] = get_args(ScopeName)
PARTNER_SCOPES = tuple(s for s in ALL_SCOPES if s != ADMIN_SCOPE)
LEEWAY_SECONDS = 30


class Principal(msgspec.Struct, frozen=True):
    """Who is calling: the verified claims of its access token."""

    client_id: str
    partner_id: str | None
    scopes: frozenset[str]
    jti: str
    exp: int
    partner_epoch: int
    claims: dict[str, Any]

    @property
    def is_admin(self) -> bool:
        return ADMIN_SCOPE in self.scopes

    @property
    def partner(self) -> UUID:
        """The caller's partner, for endpoints behind ``requires_partner``."""
        if self.partner_id is None:
            raise Forbidden("This endpoint acts for a partner; a coalition-admin client has none.")
        return UUID(self.partner_id)

    @property
    def actor(self) -> str:
        return f"client:{self.client_id}"


class TokenVerifier:
    """Verifies hub access tokens and keeps the verified ones until they expire."""

    def __init__(
        self,
        keyring: Keyring,
        revocations: RevocationCache,
        *,
        issuer: str,
        audience: str,
        cache_size: int = 50_000,
        leeway_seconds: int = LEEWAY_SECONDS,
    ) -> None:
        self.keyring = keyring
        self.leeway_seconds = leeway_seconds
        self.revocations = revocations
        self.issuer = issuer
        self.audience = audience
        self.cache_size = cache_size
        self._cache: dict[str, Principal] = {}
        self._claims = jwt.JWTClaimsRegistry(
            leeway=leeway_seconds,
            iss={"essential": True, "value": issuer},
            aud={"essential": True, "value": audience},
            sub={"essential": True},
            client_id={"essential": True},
            exp={"essential": True},
            iat={"essential": True},
            jti={"essential": True},
        )

    def verify(self, token: str) -> Principal:
        principal = self._cache.get(token)
        if principal is None:
            principal = self._verify_signature_and_claims(token)
            self._remember(token, principal)
        if principal.exp + self.leeway_seconds < time.time():
            self._cache.pop(token, None)
            raise Unauthorized("The access token has expired.")
        reason = self.revocations.is_revoked(
            principal.jti, principal.client_id, principal.partner_id, principal.partner_epoch
        )
        if reason:
            raise Unauthorized(f"The access token is no longer valid: {reason}.")
        return principal

    def forget(self, token: str) -> None:
        self._cache.pop(token, None)

    def _remember(self, token: str, principal: Principal) -> None:
        if len(self._cache) >= self.cache_size:
            now = time.time()
            for key in [k for k, p in self._cache.items() if p.exp < now]:
                del self._cache[key]
            while len(self._cache) >= self.cache_size:
                self._cache.pop(next(iter(self._cache)))
        self._cache[token] = principal

    def _decode(self, token: str) -> jwt.Token:
        # Only RS256: refuses "alg": "none" and HS256 signed with the public key.
        return jwt.decode(token, self.keyring.verification_keys, algorithms=[SIGNING_ALG])

    def _verify_signature_and_claims(self, token: str) -> Principal:
        try:
            try:
                decoded = self._decode(token)
            except JoseError:
                # An unknown kid may be a key another process just rotated in.
                if not self.keyring.reload_if_changed():
                    raise
                decoded = self._decode(token)
            if decoded.header.get("typ", "").lower() not in {"at+jwt", "application/at+jwt"}:
                raise Unauthorized("The token is not an access token (typ must be at+jwt).")
            self._claims.validate(decoded.claims)
        except JoseError as exc:
            raise Unauthorized(f"The access token is invalid: {exc.description}") from exc
        except (ValueError, TypeError) as exc:
            raise Unauthorized("The access token is not a well-formed JWT.") from exc
        claims = decoded.claims
        partner_id = claims.get("partner_id")
        return Principal(
            client_id=str(claims["client_id"]),
            partner_id=str(partner_id) if partner_id else None,
            scopes=frozenset(str(claims.get("scope", "")).split()),
            jti=str(claims["jti"]),
            exp=int(claims["exp"]),
            partner_epoch=int(claims.get("partner_epoch", 0)),
            claims=dict(claims),
        )


class ClientRateLimiter:
    """A token bucket per client: ``per_minute`` sustained, ``burst`` at once."""

    def __init__(self, per_minute: int, burst: int, max_clients: int = 100_000) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self.max_clients = max_clients
        self._buckets: dict[str, tuple[float, float]] = {}

    def _prune(self, now: float) -> None:
        # A bucket that has refilled completely carries no information: forget it.
        full_after = self.burst / self.rate
        for client_id in [c for c, (_, last) in self._buckets.items() if now - last > full_after]:
            del self._buckets[client_id]

    def check(self, client_id: str) -> None:
        now = time.monotonic()
        if len(self._buckets) >= self.max_clients:
            self._prune(now)
        tokens, last = self._buckets.get(client_id, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens < 1.0:
            self._buckets[client_id] = (tokens, now)
            wait = (1.0 - tokens) / self.rate
            raise TooManyRequests(
                f"Client {client_id} exceeded its rate limit of "
                f"{int(self.rate * 60)} requests per minute.",
                retry_after=int(wait) + 1,
            )
        self._buckets[client_id] = (tokens - 1.0, now)


def bearer_token(scope: Any) -> str:
    """The bearer token of an ASGI request (RFC 6750 §2.1)."""
    authorization = header_bytes(scope, b"authorization")
    if authorization is None:
        raise Unauthorized(
            "This endpoint needs an access token and the request carried none.", error=None
        )
    return parse_bearer(authorization)


def parse_bearer(authorization: bytes) -> str:
    """The token of an ``Authorization: Bearer <token>`` header value (RFC 6750 §2.1)."""
    if not authorization:
        raise Unauthorized(
            "This endpoint needs an access token and the request carried none.", error=None
        )
    scheme, _, token = authorization.decode("latin-1").partition(" ")
    token = token.strip()
    if not token or scheme.lower() != "bearer":
        raise Unauthorized(
            "The Authorization header must be 'Bearer <access token>'.", error="invalid_request"
        )
    return token


Guard = Callable[[ASGIConnection[Any, Any, Any, Any], BaseRouteHandler], None]


def principal_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal:
    return principal_of_scope(connection.scope)


def principal_of_scope(scope: Any) -> Principal:
    """The caller's principal, which the request middleware put in the ASGI scope."""
    user = scope.get("user")
    if not isinstance(user, Principal):
        raise Unauthorized("This endpoint needs an access token.", error=None)
    return user


class ScopeGuard:
    """Guard: the token must carry at least one of ``any_of``.

    The scopes are data, not a closure, so the OpenAPI document reads each operation's security
    requirement from its guards (hub/core/openapi.py) and the two cannot drift apart.
    """

    __slots__ = ("any_of",)

    def __init__(self, *any_of: str) -> None:
        self.any_of = any_of

    def __call__(self, connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        if set(self.any_of) & principal_of(connection).scopes:
            return
        if len(self.any_of) == 1:
            raise Forbidden(
                f"This endpoint needs the '{self.any_of[0]}' scope.", scope=self.any_of[0]
            )
        raise Forbidden(
            f"This endpoint needs one of the scopes: {', '.join(self.any_of)}.",
            scope=" ".join(self.any_of),
        )


def requires_scope(scope: str) -> ScopeGuard:
    """Guard: the token must carry ``scope``."""
    return ScopeGuard(scope)


def requires_any_scope(*scopes: str) -> ScopeGuard:
    """Guard: the token must carry at least one of ``scopes``."""
    return ScopeGuard(*scopes)


requires_admin = requires_scope(ADMIN_SCOPE)


def requires_partner(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Guard: the caller must be a partner's client (not a coalition-admin client)."""
    if principal_of(connection).partner_id is None:
        raise Forbidden(
            "This endpoint acts for a partner; a coalition-admin client belongs to none.",
            fix="Call it with a token of one of the partner's clients.",
        )
