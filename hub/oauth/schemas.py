"""Documented shapes of the OAuth endpoints' forms and answers (RFC 6749, 7523, 7662, 7009).

The endpoints read their forms themselves (authlib checks them); these types only document them
in the OpenAPI document (route opts of hub/core/openapi.py). Forms accept unknown parameters, as
RFC 6749 §3.2 asks of a server ("parameters sent without a value MUST be treated as if they were
omitted", unrecognised ones ignored).
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


class ClientAuthenticationForm(msgspec.Struct, kw_only=True):
    """Client authentication in the body: client_secret_post (client_id and client_secret) or
    private_key_jwt (client_assertion_type and client_assertion, RFC 7523). With
    client_secret_basic the credentials go in the Authorization header instead."""

    client_id: str | msgspec.UnsetType = msgspec.UNSET
    client_secret: str | msgspec.UnsetType = msgspec.UNSET
    client_assertion_type: Literal[JWT_BEARER] | msgspec.UnsetType = msgspec.UNSET  # type: ignore[valid-type]
    client_assertion: str | msgspec.UnsetType = msgspec.UNSET


class TokenForm(ClientAuthenticationForm, kw_only=True):
    """Client credentials grant (RFC 6749 §4.4.2)."""

    grant_type: Literal["client_credentials"]
    scope: (
        Annotated[
            str,
            msgspec.Meta(
                description="Space-separated scopes, at most those granted to the client "
                "(default: all of them).",
                examples=["overlap:read identifiers:write"],
            ),
        ]
        | msgspec.UnsetType
    ) = msgspec.UNSET


class TokenLookupForm(ClientAuthenticationForm, kw_only=True):
    """A token to introspect (RFC 7662 §2.1) or revoke (RFC 7009 §2.1)."""

    token: str
    token_type_hint: (
        Annotated[str, msgspec.Meta(description="Advisory; an unknown hint is ignored.")]
        | msgspec.UnsetType
    ) = msgspec.UNSET


class TokenOut(msgspec.Struct):
    """An RFC 9068 JWT access token (RFC 6749 §5.1)."""

    access_token: str
    token_type: Literal["Bearer"]
    expires_in: int
    scope: str


class IntrospectionOut(msgspec.Struct, kw_only=True):
    """RFC 7662 §2.2: only ``active`` when the token is not active or not the caller's."""

    active: bool
    scope: str | msgspec.UnsetType = msgspec.UNSET
    client_id: str | msgspec.UnsetType = msgspec.UNSET
    sub: str | msgspec.UnsetType = msgspec.UNSET
    aud: str | list[str] | msgspec.UnsetType = msgspec.UNSET
    iss: str | msgspec.UnsetType = msgspec.UNSET
    exp: int | msgspec.UnsetType = msgspec.UNSET
    iat: int | msgspec.UnsetType = msgspec.UNSET
    nbf: int | msgspec.UnsetType = msgspec.UNSET
    jti: str | msgspec.UnsetType = msgspec.UNSET
    token_type: str | msgspec.UnsetType = msgspec.UNSET
    partner_id: str | msgspec.UnsetType = msgspec.UNSET


class RevocationOut(msgspec.Struct):
    """RFC 7009 §2.2: 200 whether or not the token was valid (an empty object)."""


class OAuthErrorOut(msgspec.Struct, kw_only=True):
    """RFC 6749 §5.2."""

    error: Annotated[str, msgspec.Meta(examples=["invalid_client"])]
    error_description: str | msgspec.UnsetType = msgspec.UNSET
