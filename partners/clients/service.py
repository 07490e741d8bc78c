"""OAuth client registrations of partners (and of coalition admins)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import msgspec
from advanced_alchemy.repository import SQLAlchemyAsyncRepository
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.core import audit, revocations
from hub.core.audit import Actor
from hub.core.auth import ADMIN_SCOPE
from hub.core.errors import Conflict, InvalidInput, NotFound
from hub.core.pagination import Page, paginate
from hub.core.secrets import SecretHasher, new_client_id, new_client_secret
from partners.clients.models import ACTIVE, REVOKED, OAuthClient
from partners.clients.schemas import ClientCreate, ClientCreated, ClientOut
from partners.free_text import refuse_contact_details
from partners.partners.models import ACTIVE as PARTNER_ACTIVE
from partners.partners.models import Partner

PRIVATE_JWK_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "k"}


class ClientRepository(SQLAlchemyAsyncRepository[OAuthClient]):
    model_type = OAuthClient


def to_out(client: OAuthClient) -> ClientOut:
    return msgspec.convert(client, ClientOut, from_attributes=True)


def _bad(field: str, reason: str, fix: str) -> InvalidInput:
    return InvalidInput(reason, errors=[{"index": 0, "field": field, "reason": reason}], fix=fix)


def check_jwks(jwks: dict[str, Any] | None, auth_method: str) -> None:
    if auth_method != "private_key_jwt":
        if jwks is not None:
            raise _bad(
                "jwks",
                f"jwks is only used with private_key_jwt, not {auth_method}",
                "Leave jwks out, or register the client with auth_method private_key_jwt.",
            )
        return
    keys = (jwks or {}).get("keys")
    if not isinstance(keys, list) or not keys:
        raise _bad(
            "jwks",
            "private_key_jwt needs a JWK Set with at least one public key",
            'Send "jwks": {"keys": [<your public signing key as a JWK>]}.',
        )
    for key in keys:
        if not isinstance(key, dict) or PRIVATE_JWK_MEMBERS & set(key):
            raise _bad(
                "jwks",
                "the JWK Set contains private key material",
                "Send only the public part of your key; keep the private key yourself.",
            )
    try:
        KeySet.import_key_set({"keys": keys})
    except (JoseError, ValueError, TypeError, KeyError) as exc:
        raise _bad(
            "jwks", f"the JWK Set is not valid: {exc}", "Send a valid RFC 7517 JWK Set."
        ) from exc


def _owned_by(partner_id: UUID | None) -> Any:
    """Clients of a partner, or (None) the coalition-admin clients, which belong to none."""
    if partner_id is None:
        return OAuthClient.partner_id.is_(None)
    return OAuthClient.partner_id == partner_id


class ClientService:
    def __init__(
        self,
        session: AsyncSession,
        hasher: SecretHasher,
        revocation_cache: revocations.RevocationCache | None = None,
    ) -> None:
        self.session = session
        self.repo = ClientRepository(session=session)
        self.hasher = hasher
        self.revocation_cache = revocation_cache

    async def create(
        self, partner: Partner | None, data: ClientCreate, actor: Actor
    ) -> ClientCreated:
        refuse_contact_details(name=data.name)
        scopes: list[str] = sorted(set(data.scopes))
        if partner is None and scopes != [ADMIN_SCOPE]:
            raise _bad(
                "scopes",
                "a coalition-admin client has exactly the 'admin' scope",
                'Create it with "scopes": ["admin"]; partner scopes belong to partner clients.',
            )
        if partner is not None and ADMIN_SCOPE in scopes:
            raise _bad(
                "scopes",
                "partner clients cannot hold the 'admin' scope",
                "Remove 'admin'; only coalition-admin clients (hub admin bootstrap) have it.",
            )
        if partner is not None and partner.status != PARTNER_ACTIVE:
            raise Conflict(
                f"Partner {partner.id} is {partner.status}; it cannot get new clients.",
                fix="Reactivate the partner first.",
            )
        check_jwks(data.jwks, data.auth_method)
        secret = None if data.auth_method == "private_key_jwt" else new_client_secret()
        client = await self.repo.add(
            OAuthClient(
                client_id=new_client_id(),
                name=data.name,
                partner_id=partner.id if partner else None,
                scopes=scopes,
                auth_method=data.auth_method,
                # argon2 takes ~0.2 s and 64 MiB: off the event loop.
                secret_hash=await asyncio.to_thread(self.hasher.hash, secret) if secret else None,
                jwks=data.jwks,
                status=ACTIVE,
            )
        )
        await audit.append(
            self.session,
            actor.event(
                "client.created",
                "client",
                client.client_id,
                concerns=[partner.id] if partner else [],
                partner=str(partner.id) if partner else None,
                scopes=scopes,
                auth_method=data.auth_method,
            ),
        )
        return ClientCreated(
            client_id=client.client_id,
            name=client.name,
            partner_id=client.partner_id,
            scopes=scopes,
            auth_method=client.auth_method,
            client_secret=secret,
        )

    async def get(self, partner_id: UUID | None, client_id: str) -> OAuthClient:
        client = await self.session.scalar(
            select(OAuthClient).where(OAuthClient.client_id == client_id, _owned_by(partner_id))
        )
        if client is None:
            whose = "coalition-admin client" if partner_id is None else "client for this partner"
            raise NotFound(f"No {whose} {client_id}.")
        return client

    async def revoke(self, partner_id: UUID | None, client_id: str, actor: Actor) -> OAuthClient:
        client = await self.get(partner_id, client_id)
        if client.status == REVOKED:
            return client  # revoking twice is the same as once
        client.status = REVOKED
        client.revoked_at = datetime.now(UTC)
        await revocations.revoke(self.session, revocations.CLIENT, client.client_id)
        cache = self.revocation_cache
        if cache is not None:
            revoked_id = client.client_id
            revocations.after_commit(
                self.session, lambda: cache.note(revocations.CLIENT, revoked_id)
            )
        await audit.append(
            self.session,
            actor.event(
                "client.revoked",
                "client",
                client.client_id,
                concerns=[partner_id] if partner_id else [],
                partner=str(partner_id) if partner_id else None,
            ),
        )
        await self.session.flush()
        return client

    async def list(
        self, partner_id: UUID | None, *, cursor: str | None, limit: int
    ) -> Page[ClientOut]:
        stmt = select(OAuthClient).where(_owned_by(partner_id))
        return await paginate(
            self.session, stmt, OAuthClient.id, cursor=cursor, limit=limit, to_item=to_out
        )
