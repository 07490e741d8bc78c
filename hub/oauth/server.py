"""The hub's OAuth 2.0 authorization server (authlib), adapted to Litestar.

authlib's hooks are synchronous, so every OAuth request runs in a worker thread with a session
of a small synchronous engine on the same database (see ``HubAuthorizationServer.respond``).
Differences from authlib's defaults, all deliberate:

* clients authenticate with ``client_secret_basic``, ``client_secret_post`` or
  ``private_key_jwt`` (RFC 7523; a replayed assertion ``jti`` fails);
* a requested scope beyond the client's grant is refused with ``invalid_scope`` instead of
  being silently narrowed;
* access tokens are RFC 9068 JWTs; revocation is a ``jti`` denylist (authlib's
  ``JWTRevocationEndpoint`` refuses JWTs);
* failed client authentication is throttled per client id and per address.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from authlib.common.encoding import json_loads
from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749 import (
    AuthorizationServer,
    ClientMixin,
    InvalidClientError,
    InvalidScopeError,
    OAuth2Request,
)
from authlib.oauth2.rfc6749.grants import ClientCredentialsGrant
from authlib.oauth2.rfc6749.requests import BasicOAuth2Payload
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7523 import JWTBearerClientAssertion
from authlib.oauth2.rfc7662 import IntrospectionEndpoint
from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from sqlalchemy import delete, func, or_, select
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from hub.core import audit, revocations
from hub.core.audit import AuditEvent
from hub.core.auth import ADMIN_SCOPE, ALL_SCOPES
from hub.core.keyring import SIGNING_ALG, Keyring
from hub.core.revocations import Revocation, RevocationCache
from hub.core.secrets import SecretHasher
from hub.oauth.models import AuthFailure, UsedAssertion
from hub.oauth.tokens import AccessTokenIssuer
from hub.settings import Settings
from partners.clients.models import ACTIVE as CLIENT_ACTIVE
from partners.clients.models import OAuthClient
from partners.partners.models import ACTIVE as PARTNER_ACTIVE
from partners.partners.models import Partner

AUTH_METHODS = ["client_secret_basic", "client_secret_post", "private_key_jwt"]
ASSERTION_ALGS = ["RS256", "PS256", "ES256", "EdDSA"]
CLIENT_ID_MAX = 64  # the column's length
TOKEN_PATH, INTROSPECT_PATH, REVOKE_PATH = "/oauth/token", "/oauth/introspect", "/oauth/revoke"


class HubOAuth2Request(OAuth2Request):  # type: ignore[misc]
    """A form-encoded OAuth request, read by the Litestar controller before entering authlib."""

    def __init__(self, method: str, uri: str, headers: Any, form: dict[str, str], remote: str):
        super().__init__(method, uri, headers=headers)
        self._form = form
        self.payload = BasicOAuth2Payload(form)
        self.remote = remote
        self.db: Session | None = None
        self.basic_client_id: str | None = None
        self.malformed_basic = False  # Basic credentials that are not base64 of id:secret
        self.revoked_jti: str | None = None

    @property
    def form(self) -> dict[str, str]:
        return self._form

    @property
    def args(self) -> dict[str, str]:
        return {}


class RegisteredClient(ClientMixin):  # type: ignore[misc]
    """authlib's view of an ``OAuthClient`` row (the domain model stays framework-free)."""

    def __init__(
        self,
        row: OAuthClient,
        hasher: SecretHasher,
        on_verify: Callable[[], None],
        partner_epoch: int = 0,
    ) -> None:
        self.row = row
        self.partner_epoch = partner_epoch
        self._on_verify = on_verify
        self.client_id = row.client_id
        self.partner_id = str(row.partner_id) if row.partner_id else None
        self.scopes = list(row.scopes)
        self.jwks = row.jwks
        self._hasher = hasher

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> None:
        return None

    def get_allowed_scope(self, scope: str | None) -> str:
        if not scope:
            return " ".join(sorted(self.scopes))
        requested = set(scope.split())
        beyond = requested - set(self.scopes)
        if beyond:
            raise InvalidScopeError(
                description=f"The client was not granted: {' '.join(sorted(beyond))}."
            )
        return " ".join(sorted(requested))

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return False

    def check_client_secret(self, client_secret: str) -> bool:
        if self.row.secret_hash is None:
            return False
        self._on_verify()
        return self._hasher.verify(self.row.secret_hash, client_secret)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        # One registered method per client, for every endpoint (token, introspection, revocation).
        return bool(method == self.row.auth_method)

    def check_response_type(self, response_type: str) -> bool:
        return False

    def check_grant_type(self, grant_type: str) -> bool:
        return bool(grant_type == "client_credentials")


class ClientCredentials(ClientCredentialsGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = AUTH_METHODS


class PrivateKeyJWT(JWTBearerClientAssertion):  # type: ignore[misc]
    """``private_key_jwt`` (RFC 7523 §2.2) with replay protection in the database."""

    CLIENT_AUTH_METHOD = "private_key_jwt"

    def __init__(self, server: HubAuthorizationServer) -> None:
        super().__init__(validate_jti=True, leeway=30)
        self.server = server

    def get_audiences(self) -> list[str]:
        issuer = self.server.settings.oauth.issuer.rstrip("/")
        return [issuer, issuer + TOKEN_PATH, issuer + INTROSPECT_PATH, issuer + REVOKE_PATH]

    def resolve_client_public_key(self, client: RegisteredClient) -> KeySet:
        # A client registered for a secret has no keys: joserfc would raise MissingKeyError,
        # which authlib lets through (a 500 that was never counted as a failed authentication).
        if client.row.auth_method != self.CLIENT_AUTH_METHOD or not client.jwks:
            raise InvalidClientError(
                description="The client is not registered for private_key_jwt authentication."
            )
        try:
            return KeySet.import_key_set(client.jwks)  # type: ignore[arg-type]
        except (JoseError, ValueError, TypeError, KeyError) as exc:
            raise InvalidClientError(
                description="The client's registered keys are unusable."
            ) from exc

    def process_assertion_claims(self, assertion: str, resolve_key: Any) -> Any:
        try:
            token = jwt.decode(assertion, resolve_key, algorithms=ASSERTION_ALGS)
        except JoseError as exc:
            raise InvalidClientError(
                description=f"Invalid client assertion: {exc.description}"
            ) from exc
        self.verify_claims(token.claims)
        return token.claims

    def validate_jti(self, claims: dict[str, Any], jti: str) -> bool:
        if not isinstance(jti, str) or not 0 < len(jti) <= 200:
            raise InvalidClientError(description="The assertion's jti must be 1 to 200 characters.")
        now = int(time.time())
        max_age = self.server.settings.oauth.assertion_max_age_seconds
        if int(claims["exp"]) > now + max_age:
            # The jti is remembered until exp: a far exp would make the memory unbounded.
            raise InvalidClientError(
                description=f"The assertion must expire within {max_age} seconds."
            )
        # Remembered as long as authlib would still accept the assertion (exp + leeway).
        keep_until = int(claims["exp"]) + self.leeway
        return self.server.remember_assertion(str(claims["sub"]), jti, keep_until)


class VerifiedToken:
    """A hub access token whose signature verified, for introspection and revocation."""

    def __init__(self, claims: dict[str, Any], revoked: bool) -> None:
        self.claims = claims
        self.client_id = str(claims.get("client_id", ""))
        self.revoked = revoked

    def is_expired(self) -> bool:
        return int(self.claims.get("exp", 0)) < time.time()

    def is_revoked(self) -> bool:
        return self.revoked

    def check_client(self, client: RegisteredClient) -> bool:
        return self.client_id == client.client_id or ADMIN_SCOPE in client.scopes


class HubTokenLookup:
    """What introspection (RFC 7662) and revocation (RFC 7009) share: every client auth
    method, the hub's own JWT lookup, and a ``token_type_hint`` that is only advisory (an
    unknown one is ignored, not an error: RFC 7662 §2.1, RFC 7009 §2.1)."""

    CLIENT_AUTH_METHODS = AUTH_METHODS
    server: HubAuthorizationServer

    def check_params(self, request: HubOAuth2Request, client: Any) -> None:
        if "token" not in request.form:
            super().check_params(request, client)  # type: ignore[misc]

    def query_token(self, token_string: str, token_type_hint: str | None) -> VerifiedToken | None:
        return self.server.read_token(token_string)


class Introspection(HubTokenLookup, IntrospectionEndpoint):  # type: ignore[misc]
    def check_permission(
        self, token: VerifiedToken, client: RegisteredClient, request: Any
    ) -> bool:
        # A partner's client sees only its own tokens; a coalition admin sees any.
        return token.check_client(client)

    def introspect_token(self, token: VerifiedToken) -> dict[str, Any]:
        keys = ("scope", "client_id", "sub", "aud", "iss", "exp", "iat", "nbf", "jti")
        body = {k: token.claims[k] for k in keys if k in token.claims}
        body["token_type"] = "Bearer"  # noqa: S105 - a token type, not a secret
        if token.claims.get("partner_id"):
            body["partner_id"] = token.claims["partner_id"]
        return body


class Revocation7009(HubTokenLookup, RevocationEndpoint):  # type: ignore[misc]
    def revoke_token(self, token: VerifiedToken, request: HubOAuth2Request) -> None:
        self.server.deny_token(token, request)


class ThrottledError(OAuth2Error):  # type: ignore[misc]
    error = "invalid_client"
    status_code = 429

    def __init__(self, retry_after: int) -> None:
        super().__init__(
            description=f"Too many failed client authentications; retry in {retry_after} s."
        )
        self.retry_after = retry_after

    def get_headers(self) -> list[tuple[str, str]]:
        return [*super().get_headers(), ("Retry-After", str(self.retry_after))]


OAuthResponse = tuple[int, dict[str, Any], list[tuple[str, str]]]
# What RFC 6749 §5.2 allows in error_description (authlib raises on anything else).
DESCRIBABLE = re.compile(r"[\x20\x21\x23-\x5b\x5d-\x7e]{1,64}")


class HubAuthorizationServer(AuthorizationServer):  # type: ignore[misc]
    def __init__(
        self,
        settings: Settings,
        keyring: Keyring,
        sessions: sessionmaker[Session],
        hasher: SecretHasher,
        revocation_cache: RevocationCache,
    ) -> None:
        super().__init__(scopes_supported=list(ALL_SCOPES))
        self.settings = settings
        self.keyring = keyring
        self.sessions = sessions
        self.hasher = hasher
        self.revocation_cache = revocation_cache
        # authlib's query_client has no request argument: the request's session is per thread.
        self._local = threading.local()
        self.issuer = AccessTokenIssuer(
            keyring,
            issuer=settings.oauth.issuer,
            audience=settings.oauth.resource,
            ttl_seconds=settings.oauth.access_token_ttl_seconds,
        )
        self.register_grant(ClientCredentials)
        self.register_client_auth_method("private_key_jwt", PrivateKeyJWT(self))
        self.register_token_generator("client_credentials", self._generate_token)
        self.register_endpoint(Introspection)
        self.register_endpoint(Revocation7009)

    # -- entry point ------------------------------------------------------------------------
    def respond(self, endpoint: str, request: HubOAuth2Request) -> OAuthResponse:
        """Run one OAuth request in its own transaction (called off the event loop)."""
        with self.sessions() as session:
            request.db = session
            self._local.db = session
            try:
                if endpoint == "token":
                    result: OAuthResponse = self.create_token_response(request)
                else:
                    result = self.create_endpoint_response(endpoint, request)
            except DataError:
                # A value the database cannot hold (a NUL byte, an over-long field).
                session.rollback()
                return (
                    400,
                    {
                        "error": "invalid_request",
                        "error_description": "A parameter holds a value the hub cannot "
                        "store (control characters or too long).",
                    },
                    [],
                )
            if result[0] == 200:
                session.commit()
                if request.revoked_jti:
                    self.revocation_cache.note(revocations.TOKEN, request.revoked_jti)
            else:
                session.rollback()
            return result

    # -- authlib hooks ----------------------------------------------------------------------
    def create_oauth2_request(self, request: HubOAuth2Request) -> HubOAuth2Request:
        return request

    def handle_response(self, status: int, body: Any, headers: Any) -> OAuthResponse:
        return status, body, list(headers)

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        return None

    def query_client(self, client_id: str) -> RegisteredClient | None:
        if not (0 < len(client_id) <= CLIENT_ID_MAX and client_id.isprintable()):
            # No client has such an id, and PostgreSQL would refuse a NUL in the query: an
            # unknown client (a failed, throttled authentication), not a database error.
            return None
        # A short session of its own: the request's session stays unopened until it writes,
        # so the SQLite write lock is never held while other short sessions need it.
        with self.sessions() as session:
            found = session.execute(
                select(OAuthClient, Partner.token_epoch)
                .outerjoin(Partner, Partner.id == OAuthClient.partner_id)
                .where(OAuthClient.client_id == client_id, OAuthClient.status == CLIENT_ACTIVE)
                .where(or_(OAuthClient.partner_id.is_(None), Partner.status == PARTNER_ACTIVE))
            ).one_or_none()
        if found is None:
            return None
        row, epoch = found
        return RegisteredClient(row, self.hasher, self._mark_verified, partner_epoch=epoch or 0)

    def _mark_verified(self) -> None:
        self._local.verified_secret = True

    def validate_requested_scope(self, scope: str | None) -> None:
        unknown = set((scope or "").split()) - set(ALL_SCOPES)
        if unknown:
            # RFC 6749 §5.2 allows only printable ASCII but '"' and '\' in error_description
            # (authlib raises on anything else): other names are not echoed.
            shown = sorted(name for name in unknown if DESCRIBABLE.fullmatch(name))
            raise InvalidScopeError(
                description=f"Unknown scope: {' '.join(shown) or '(not printable ASCII)'}; "
                f"the scopes are {' '.join(ALL_SCOPES)}."
            )

    def authenticate_client(
        self, request: HubOAuth2Request, methods: list[str], endpoint: str = "token"
    ) -> RegisteredClient:
        keys = self._throttle_keys(request)
        self._check_throttle(keys)
        self._local.verified_secret = False
        try:
            if request.malformed_basic:
                raise InvalidClientError(
                    status_code=401,
                    description="The Basic credentials are not base64 of 'client_id:secret'.",
                )
            client: RegisteredClient = super().authenticate_client(request, methods, endpoint)
        except OAuth2Error:
            self._fail_authentication(keys)
            raise
        except (JoseError, ValueError, TypeError, LookupError) as exc:
            # A client assertion authlib could not take apart: a failed authentication too.
            self._fail_authentication(keys)
            raise InvalidClientError(
                description="The client assertion cannot be verified."
            ) from exc
        return client

    def _fail_authentication(self, keys: list[str]) -> None:
        """Every kind of failed client authentication counts toward the throttle."""
        if not self._local.verified_secret:
            # Unknown client ids fail as slowly as wrong secrets: timing reveals no ids.
            self.hasher.verify(self.hasher.dummy_hash, "not-a-secret")
        self._record_failure(keys)

    def save_token(self, token: dict[str, Any], request: HubOAuth2Request) -> None:
        claims = token.pop("_claims")
        assert request.db is not None
        audit.append_sync(
            request.db,
            AuditEvent(
                actor=f"client:{claims['client_id']}",
                partner_id=claims.get("partner_id"),
                action="token.issued",
                target_type="token",
                target_id=claims["jti"],
                details={
                    "scope": claims["scope"],
                    "exp": claims["exp"],
                    "auth_method": request.auth_method,
                },
            ),
        )

    # -- helpers used by the endpoints ---------------------------------------------------------
    @property
    def _current_db(self) -> Session:
        db: Session | None = getattr(self._local, "db", None)
        if db is None:
            raise RuntimeError("query_client called outside a request")
        return db

    def _generate_token(
        self,
        grant_type: str,
        client: RegisteredClient,
        user: Any = None,
        scope: str | None = None,
        expires_in: int | None = None,
        include_refresh_token: bool = False,
    ) -> dict[str, Any]:
        granted = client.get_allowed_scope(scope)
        return self.issuer.issue(client.client_id, client.partner_id, granted, client.partner_epoch)

    def read_token(self, token_string: str) -> VerifiedToken | None:
        try:
            decoded = jwt.decode(
                token_string, self.keyring.verification_keys, algorithms=[SIGNING_ALG]
            )
        except (JoseError, ValueError, TypeError):
            return None
        claims = decoded.claims
        if claims.get("iss") != self.settings.oauth.issuer:
            return None
        db = self._current_db
        subjects = [
            (revocations.TOKEN, str(claims.get("jti"))),
            (revocations.CLIENT, str(claims.get("client_id"))),
            (revocations.PARTNER, str(claims.get("partner_id"))),
        ]
        floor = (Revocation.kind == revocations.PARTNER_FLOOR) & (
            Revocation.subject == str(claims.get("partner_id"))
        )
        revoked = db.scalar(
            select(func.count())
            .select_from(Revocation)
            .where(
                or_(
                    *[(Revocation.kind == k) & (Revocation.subject == s) for k, s in subjects],
                    floor & (Revocation.not_before > int(claims.get("partner_epoch", 0))),
                )
            )
        )
        return VerifiedToken(dict(claims), revoked=bool(revoked))

    def deny_token(self, token: VerifiedToken, request: HubOAuth2Request) -> None:
        assert request.db is not None
        jti = str(token.claims["jti"])
        if not token.revoked:
            exists = request.db.scalar(
                select(Revocation.id).where(
                    Revocation.kind == revocations.TOKEN, Revocation.subject == jti
                )
            )
            if exists is None:
                request.db.add(
                    Revocation(
                        kind=revocations.TOKEN, subject=jti, expires_at=int(token.claims["exp"])
                    )
                )
                client = request.client
                audit.append_sync(
                    request.db,
                    AuditEvent(
                        actor=f"client:{client.client_id}",
                        partner_id=client.partner_id,
                        action="token.revoked",
                        target_type="token",
                        target_id=jti,
                        details={"token_client_id": token.client_id},
                    ),
                )
        # Refused at once in this process (after the commit, in respond); others at their poll.
        request.revoked_jti = jti

    def remember_assertion(self, client_id: str, jti: str, exp: int) -> bool:
        """Record an assertion jti; False if it was used before (a replay)."""
        with self.sessions() as session:
            session.execute(delete(UsedAssertion).where(UsedAssertion.expires_at < time.time()))
            session.add(UsedAssertion(client_id=client_id, jti=jti, expires_at=exp))
            try:
                session.commit()
            except IntegrityError:
                session.rollback()
                return False
        return True

    def _throttle_keys(self, request: HubOAuth2Request) -> list[str]:
        client_id = request.basic_client_id
        client_id = client_id or request.form.get("client_id")
        assertion = request.form.get("client_assertion")
        if not client_id and assertion:
            try:
                payload = jws.extract_compact(assertion.encode()).payload
                sub = json_loads(payload).get("sub")
                client_id = sub if isinstance(sub, str) else None
            except (JoseError, ValueError, AttributeError):
                client_id = None
        keys = [f"addr:{request.remote}"]
        if client_id:
            # Per client *and* address: a stranger who knows a client id cannot lock it out.
            # Escaped to ASCII: a key with a NUL could be neither counted nor stored.
            shown = client_id[:60].encode("unicode_escape").decode("ascii")[:120]
            keys.append(f"client:{shown}@{request.remote}")
        return keys

    def _check_throttle(self, keys: list[str]) -> None:
        window = self.settings.oauth.failed_auth_window_seconds
        since = datetime.now(UTC) - timedelta(seconds=window)
        with self.sessions() as session:
            counts = session.execute(
                select(AuthFailure.key, func.count(), func.min(AuthFailure.at))
                .where(AuthFailure.key.in_(keys), AuthFailure.at >= since)
                .group_by(AuthFailure.key)
            ).all()
        limits = self.settings.oauth
        for key, count, oldest in counts:
            limit = (
                limits.failed_auth_limit_per_address
                if key.startswith("addr:")
                else (limits.failed_auth_limit)
            )
            if count >= limit:
                oldest = oldest if oldest.tzinfo else oldest.replace(tzinfo=UTC)
                wait = int((oldest - since).total_seconds()) + 1
                raise ThrottledError(retry_after=max(1, wait))

    def _record_failure(self, keys: list[str]) -> None:
        window = self.settings.oauth.failed_auth_window_seconds
        with self.sessions() as session:
            session.execute(
                delete(AuthFailure).where(
                    AuthFailure.at < datetime.now(UTC) - timedelta(seconds=2 * window)
                )
            )
            session.add_all([AuthFailure(key=key) for key in keys])
            session.commit()


def metadata(settings: Settings) -> dict[str, Any]:
    """RFC 8414 authorization server metadata."""
    issuer = settings.oauth.issuer.rstrip("/")
    return {
        "issuer": settings.oauth.issuer,
        "token_endpoint": issuer + TOKEN_PATH,
        "jwks_uri": issuer + "/.well-known/jwks.json",
        "introspection_endpoint": issuer + INTROSPECT_PATH,
        "revocation_endpoint": issuer + REVOKE_PATH,
        "grant_types_supported": ["client_credentials"],
        "response_types_supported": [],
        "scopes_supported": list(ALL_SCOPES),
        "token_endpoint_auth_methods_supported": AUTH_METHODS,
        "token_endpoint_auth_signing_alg_values_supported": ASSERTION_ALGS,
        "introspection_endpoint_auth_methods_supported": AUTH_METHODS,
        "revocation_endpoint_auth_methods_supported": AUTH_METHODS,
        "revocation_endpoint_auth_signing_alg_values_supported": ASSERTION_ALGS,
        "introspection_endpoint_auth_signing_alg_values_supported": ASSERTION_ALGS,
        "resource": settings.oauth.resource,
    }
