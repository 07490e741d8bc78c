"""Coalition admin: onboard, list, read, update, suspend partners and manage their clients."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from litestar import Controller, delete, get, patch, post
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, JSONBody, Parameter
from sqlalchemy.ext.asyncio import AsyncSession

from hub.core.audit import Actor
from hub.core.auth import requires_admin
from hub.core.pagination import CursorParameter, LimitParameter, Page
from partners.clients.schemas import ClientCreate, ClientCreated, ClientOut
from partners.clients.service import ClientService
from partners.clients.service import to_out as client_out
from partners.partners.schemas import PartnerCreate, PartnerOut, PartnerUpdate
from partners.partners.service import PartnerService, to_out


def provide_partner_service(
    db_session: NamedDependency[AsyncSession], state: State
) -> PartnerService:
    return PartnerService(
        db_session,
        allow_loopback_http=state.settings.webhooks.allow_loopback_http,
        revocation_cache=state.revocations,
    )


def provide_client_service(
    db_session: NamedDependency[AsyncSession], state: State
) -> ClientService:
    return ClientService(db_session, state.secret_hasher, state.revocations)


class PartnerController(Controller):
    path = "/v1/partners"
    tags = ["partners (admin)"]
    guards = [requires_admin]
    dependencies = {
        "partners": Provide(provide_partner_service, sync_to_thread=False),
        "clients": Provide(provide_client_service, sync_to_thread=False),
    }

    @post("/", summary="Onboard a partner")
    async def onboard(
        self,
        data: JSONBody[PartnerCreate],
        partners: NamedDependency[PartnerService],
        actor: NamedDependency[Actor],
    ) -> PartnerOut:
        return to_out(await partners.onboard(data, actor))

    @get("/", summary="List partners")
    async def list_partners(
        self,
        partners: NamedDependency[PartnerService],
        limit: int = LimitParameter,
        cursor: str | None = CursorParameter,
        status: str | None = Parameter(default=None, pattern="^(active|suspended)$"),
    ) -> Page[PartnerOut]:
        return await partners.list(cursor=cursor, limit=limit, status=status)

    @get("/{partner_id:uuid}", summary="Read a partner")
    async def read(
        self, partner_id: FromPath[UUID], partners: NamedDependency[PartnerService]
    ) -> PartnerOut:
        return to_out(await partners.get(partner_id))

    @patch(
        "/{partner_id:uuid}",
        summary="Update, suspend or reactivate a partner",
        description="A suspended partner's tokens stop working at once.",
    )
    async def update(
        self,
        partner_id: FromPath[UUID],
        data: JSONBody[PartnerUpdate],
        partners: NamedDependency[PartnerService],
        actor: NamedDependency[Actor],
    ) -> PartnerOut:
        return to_out(await partners.update(partner_id, data, actor))

    @post(
        "/{partner_id:uuid}/clients",
        summary="Create a client for a partner",
        description="The client_secret is in this response only; the hub keeps a slow hash. "
        "A retry with the same Idempotency-Key does not show the secret again.",
        opt={"idempotency_redact": ("client_secret",)},
    )
    async def create_client(
        self,
        partner_id: FromPath[UUID],
        data: JSONBody[ClientCreate],
        partners: NamedDependency[PartnerService],
        clients: NamedDependency[ClientService],
        actor: NamedDependency[Actor],
    ) -> ClientCreated:
        partner = await partners.get(partner_id)
        return await clients.create(partner, data, actor)

    @get("/{partner_id:uuid}/clients", summary="List a partner's clients")
    async def list_clients(
        self,
        partner_id: FromPath[UUID],
        partners: NamedDependency[PartnerService],
        clients: NamedDependency[ClientService],
        limit: int = LimitParameter,
        cursor: str | None = CursorParameter,
    ) -> Page[ClientOut]:
        await partners.get(partner_id)
        return await clients.list(partner_id, cursor=cursor, limit=limit)

    @delete(
        "/{partner_id:uuid}/clients/{client_id:str}",
        status_code=200,
        summary="Revoke a partner's client",
        description="Its tokens stop working at once; revoking twice is harmless.",
    )
    async def revoke_client(
        self,
        partner_id: FromPath[UUID],
        client_id: FromPath[str],
        clients: NamedDependency[ClientService],
        actor: NamedDependency[Actor],
    ) -> ClientOut:
        return client_out(await clients.revoke(partner_id, client_id, actor))


__all__: list[Any] = ["PartnerController", "provide_client_service", "provide_partner_service"]
