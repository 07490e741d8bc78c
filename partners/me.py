"""GET /v1/me: who the caller is, its scopes and its partnerships."""

from __future__ import annotations

from uuid import UUID

import msgspec
from litestar import get
from litestar.di import NamedDependency
from sqlalchemy.ext.asyncio import AsyncSession

from hub.core.auth import Principal
from partners.partners.schemas import PartnerOut
from partners.partners.service import PartnerService
from partners.partners.service import to_out as partner_out
from partners.partnerships.schemas import PartnershipOut
from partners.partnerships.service import PartnershipService


class Me(msgspec.Struct):
    client_id: str
    partner: PartnerOut | None
    scopes: list[str]
    partnerships: list[PartnershipOut]


@get("/v1/me", tags=["me"], summary="Who am I: partner, scopes and partnerships")
async def me(
    principal: NamedDependency[Principal], db_session: NamedDependency[AsyncSession]
) -> Me:
    if principal.partner_id is None:
        return Me(
            client_id=principal.client_id,
            partner=None,
            scopes=sorted(principal.scopes),
            partnerships=[],
        )
    partner_id = UUID(principal.partner_id)
    partner = await PartnerService(db_session).get(partner_id)
    page = await PartnershipService(db_session).list(partner_id, cursor=None, limit=100)
    return Me(
        client_id=principal.client_id,
        partner=partner_out(partner),
        scopes=sorted(principal.scopes),
        partnerships=page.items,
    )
