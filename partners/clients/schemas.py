from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

import msgspec

from hub.core.auth import ScopeName

AuthMethod = Literal["client_secret_basic", "client_secret_post", "private_key_jwt"]
Scope = ScopeName


class ClientCreate(msgspec.Struct, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=100, pattern=r"^[^\x00-\x1f\x7f]+$")]
    scopes: Annotated[list[Scope], msgspec.Meta(min_length=1)]
    auth_method: AuthMethod = "client_secret_basic"
    # Public keys (RFC 7517 JWK Set) for private_key_jwt; never a private key.
    jwks: dict[str, Any] | None = None


class ClientCreated(msgspec.Struct):
    client_id: str
    name: str
    partner_id: UUID | None
    scopes: list[str]
    auth_method: str
    # Shown once, here; the hub keeps only a slow hash.
    client_secret: str | None = None


class ClientOut(msgspec.Struct):
    client_id: str
    name: str
    partner_id: UUID | None
    scopes: list[str]
    auth_method: str
    status: str
    created_at: datetime
    revoked_at: datetime | None
