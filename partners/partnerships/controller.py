"""Partnerships: admins propose, suspend and end; members read and accept."""

from __future__ import annotations

from uuid import UUID

from litestar import Controller, get, patch, post
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, JSONBody, Parameter
from sqlalchemy.ext.asyncio import AsyncSession

from hub.core.audit import Actor
from hub.core.auth import Principal, requires_admin, requires_partner
from hub.core.pagination import CursorParameter, LimitParameter, Page
from partners.partnerships.schemas import PartnershipCreate, PartnershipOut, PartnershipUpdate
from partners.partnerships.service import PartnershipService, to_out


def provide_partnership_service(
    db_session: NamedDependency[AsyncSession], state: State
) -> PartnershipService:
    settings = state.settings.partnerships
    return PartnershipService(
        db_session,
        default_min_audience=settings.default_min_audience,
        floor_min_audience=settings.floor_min_audience,
    )


def _partner_scope(principal: NamedDependency[Principal]) -> UUID | None:
    """Admins see every partnership; a partner's client only its own partner's."""
    if principal.is_admin or principal.partner_id is None:
        return None
    return UUID(principal.partner_id)


class PartnershipController(Controller):
    path = "/v1/partnerships"
    tags = ["partnerships"]
    dependencies = {"partnerships": Provide(provide_partnership_service, sync_to_thread=False)}

    @post("/", guards=[requires_admin], summary="Propose a partnership (admin)")
    async def propose(
        self,
        data: JSONBody[PartnershipCreate],
        partnerships: NamedDependency[PartnershipService],
        actor: NamedDependency[Actor],
    ) -> PartnershipOut:
        return to_out(await partnerships.propose(data, actor))

    @get("/", summary="List partnerships (admins: all; partners: their own)")
    async def list_partnerships(
        self,
        partnerships: NamedDependency[PartnershipService],
        principal: NamedDependency[Principal],
        limit: int = LimitParameter,
        cursor: str | None = CursorParameter,
        status: str | None = Parameter(default=None, pattern="^(proposed|active|suspended|ended)$"),
    ) -> Page[PartnershipOut]:
        return await partnerships.list(
            _partner_scope(principal), cursor=cursor, limit=limit, status=status
        )

    @get("/{partnership_id:uuid}", summary="Read a partnership (members and admins)")
    async def read(
        self,
        partnership_id: FromPath[UUID],
        partnerships: NamedDependency[PartnershipService],
        principal: NamedDependency[Principal],
    ) -> PartnershipOut:
        return to_out(await partnerships.get_for(partnership_id, _partner_scope(principal)))

    @patch(
        "/{partnership_id:uuid}",
        guards=[requires_admin],
        summary="Suspend, resume or end a partnership (admin)",
    )
    async def update(
        self,
        partnership_id: FromPath[UUID],
        data: JSONBody[PartnershipUpdate],
        partnerships: NamedDependency[PartnershipService],
        actor: NamedDependency[Actor],
    ) -> PartnershipOut:
        return to_out(await partnerships.update(partnership_id, data, actor))

    @post(
        "/{partnership_id:uuid}/accept",
        guards=[requires_partner],
        status_code=200,
        summary="Accept the partnership's terms as a member",
        description="Active once every member has accepted. Accepting twice is harmless.",
    )
    async def accept(
        self,
        partnership_id: FromPath[UUID],
        partnerships: NamedDependency[PartnershipService],
        principal: NamedDependency[Principal],
        actor: NamedDependency[Actor],
    ) -> PartnershipOut:
        assert principal.partner_id is not None  # requires_partner
        return to_out(await partnerships.accept(partnership_id, UUID(principal.partner_id), actor))
