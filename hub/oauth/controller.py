"""HTTP side of the authorization server. Errors here answer in RFC 6749 form, not RFC 9457."""

from __future__ import annotations

import base64
import binascii
from typing import Any
from urllib.parse import unquote

from litestar import Controller, Request, Response, get, post
from litestar.concurrency import sync_to_thread
from litestar.exceptions import HTTPException

from hub.core.errors import HubError
from hub.core.openapi import (
    OPENAPI_ERROR_OPT,
    OPENAPI_FORM_OPT,
    OPENAPI_RESPONSE_OPT,
    OPENAPI_STATUSES_OPT,
)
from hub.oauth.schemas import (
    IntrospectionOut,
    OAuthErrorOut,
    RevocationOut,
    TokenForm,
    TokenLookupForm,
    TokenOut,
)
from hub.oauth.server import HubAuthorizationServer, HubOAuth2Request, metadata

FORM = "application/x-www-form-urlencoded"
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
# 400 invalid_request/unsupported_grant_type/invalid_scope, 401 invalid_client, 408 and 413 for
# the body, 429 for a client that failed authentication too often, 503 for a busy database.
OAUTH_STATUSES = (400, 401, 408, 413, 429, 503)


def documented(form: type, answer: type) -> dict[str, object]:
    """Route opts documenting an OAuth endpoint: a form in, JSON out, RFC 6749 errors."""
    return {
        OPENAPI_FORM_OPT: form,
        OPENAPI_RESPONSE_OPT: answer,
        OPENAPI_ERROR_OPT: OAuthErrorOut,
        OPENAPI_STATUSES_OPT: OAUTH_STATUSES,
    }


def oauth_error(status: int, error: str, description: str) -> Response[Any]:
    return Response(
        {"error": error, "error_description": description},
        status_code=status,
        headers=NO_STORE,
        media_type="application/json",
    )


def oauth_exception_handler(_: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    status = int(getattr(exc, "status_code", None) or getattr(exc, "status", None) or 400)
    if status >= 500:
        return oauth_error(500, "server_error", "The server failed to handle the request.")
    detail = getattr(exc, "detail", None) or "The request is not valid."
    return oauth_error(status, getattr(exc, "error", "invalid_request"), str(detail))


async def _oauth_request(request: Request[Any, Any, Any], path: str) -> HubOAuth2Request:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != FORM:
        raise HTTPException(
            status_code=400,
            detail=f"Send the parameters as {FORM} (RFC 6749 §4.4.2), not {content_type!r}.",
        )
    form = await request.form()
    params: dict[str, str] = {}
    for key in form:
        values = form.getall(key)
        if len(values) != 1 or not isinstance(values[0], str):
            # RFC 6749 §3.1: request parameters MUST NOT be included more than once.
            raise HTTPException(status_code=400, detail=f"Parameter {key!r} was sent twice.")
        params[key] = values[0]
    settings = request.app.state.settings
    uri = settings.oauth.issuer.rstrip("/") + path
    remote = request.client.host if request.client else "unknown"
    oauth_request = HubOAuth2Request("POST", uri, request.headers, params, remote)
    basic = _basic_client_id(request.headers.get("authorization"))
    # Malformed credentials fail in the server's client authentication, so they are throttled.
    oauth_request.malformed_basic = basic is MALFORMED
    oauth_request.basic_client_id = None if basic is MALFORMED else basic
    return oauth_request


MALFORMED = "\x00malformed"


def _basic_client_id(header: str | None) -> str | None:
    """The client id of HTTP Basic credentials (RFC 6749 §2.3.1), :data:`MALFORMED` for
    credentials that are not base64 of UTF-8 ``id:secret``, None without Basic credentials."""
    if not header or header[:6].lower() != "basic ":
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return MALFORMED
    client_id, _, _ = decoded.partition(":")
    return unquote(client_id) or None


async def _respond(request: Request[Any, Any, Any], endpoint: str, path: str) -> Response[Any]:
    server: HubAuthorizationServer = request.app.state.oauth_server
    oauth_request = await _oauth_request(request, path)
    status, body, headers = await sync_to_thread(server.respond, endpoint, oauth_request)
    merged = {**dict(headers), **NO_STORE}
    return Response(body, status_code=status, headers=merged, media_type="application/json")


class OAuthController(Controller):
    path = "/"
    tags = ["oauth"]
    exception_handlers = {
        HTTPException: oauth_exception_handler,
        HubError: oauth_exception_handler,
    }
    include_in_schema = True

    @post(
        "/oauth/token",
        status_code=200,
        opt=documented(TokenForm, TokenOut),
        summary="Client credentials grant (RFC 6749 §4.4)",
        description="Client authentication: client_secret_basic, client_secret_post or "
        "private_key_jwt (RFC 7523). Answers an RFC 9068 JWT access token.",
        request_max_body_size=16_384,
    )
    async def token(self, request: Request[Any, Any, Any]) -> Response[Any]:
        return await _respond(request, "token", "/oauth/token")

    @post(
        "/oauth/introspect",
        status_code=200,
        opt=documented(TokenLookupForm, IntrospectionOut),
        summary="Token introspection (RFC 7662)",
        description="A partner's client sees only its own tokens; others are 'active: false'.",
        request_max_body_size=16_384,
    )
    async def introspect(self, request: Request[Any, Any, Any]) -> Response[Any]:
        return await _respond(request, "introspection", "/oauth/introspect")

    @post(
        "/oauth/revoke",
        status_code=200,
        opt=documented(TokenLookupForm, RevocationOut),
        summary="Token revocation (RFC 7009)",
        description="Refused at once by this process and within seconds by every other.",
        request_max_body_size=16_384,
    )
    async def revoke(self, request: Request[Any, Any, Any]) -> Response[Any]:
        return await _respond(request, "revocation", "/oauth/revoke")

    @get("/.well-known/oauth-authorization-server", summary="RFC 8414 metadata")
    async def server_metadata(self, request: Request[Any, Any, Any]) -> dict[str, Any]:
        return metadata(request.app.state.settings)

    @get("/.well-known/jwks.json", summary="Public keys that verify access tokens")
    async def jwks(self, request: Request[Any, Any, Any]) -> dict[str, Any]:
        keyring = request.app.state.keyring
        keyring.reload_if_changed()
        return dict(keyring.public_jwks)
