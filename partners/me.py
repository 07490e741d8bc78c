"""GET /v1/me: who the caller is, its scopes and its partnerships.

Partners call it often (to check a token, at start-up, before every job), so a partner's record
and partnerships come from a read cache (hub.core.readcache): changed at once in the process
that made the change, within ``oauth.revocation_poll_seconds`` in any other.
"""

from __future__ import annotations

from uuid import UUID

import msgspec
from litestar import get
from litestar.datastructures import State
from litestar.di import NamedDependency

from hub.core.auth import Principal
from hub.core.readcache import ReadCache, watch
from partners.partners.models import Partner
from partners.partners.schemas import PartnerOut
from partners.partners.service import PartnerService
from partners.partners.service import to_out as partner_out
from partners.partnerships.models import Partnership, PartnershipMember
from partners.partnerships.schemas import PartnershipOut
from partners.partnerships.service import PartnershipService

watch(Partner, Partnership, PartnershipMember)
PartnerView = tuple[PartnerOut, list[PartnershipOut]]


class Me(msgspec.Struct):
    client_id: str
    partner: PartnerOut | None
    scopes: list[str]
    partnerships: list[PartnershipOut]


def me_cache(ttl_seconds: float) -> ReadCache[UUID, PartnerView]:
    return ReadCache(ttl_seconds)


@get("/v1/me", tags=["me"], summary="Who am I: partner, scopes and partnerships")
async def me(principal: NamedDependency[Principal], state: State) -> Me:
    if principal.partner_id is None:
        return Me(
            client_id=principal.client_id,
            partner=None,
            scopes=sorted(principal.scopes),
            partnerships=[],
        )
    partner_id = UUID(principal.partner_id)

    async def load() -> PartnerView:
        async with state.session_maker() as session:
            partner = await PartnerService(session).get(partner_id)
            page = await PartnershipService(session).list(partner_id, cursor=None, limit=100)
            await session.commit()
        return partner_out(partner), page.items

    partner, partnerships = await state.me_cache.get(partner_id, load)
    return Me(
        client_id=principal.client_id,
        partner=partner,
        scopes=sorted(principal.scopes),
        partnerships=partnerships,
    )
