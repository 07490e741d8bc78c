"""GET /v1/me: who the caller is, its scopes and its partnerships.

Partners call it often (to check a token, at start-up, before every job), so a partner's record
and partnerships come from a read cache (hub.core.readcache): changed at once in the process
that made the change, within ``oauth.revocation_poll_seconds`` in any other.

The cached entry keeps the answer already encoded, per client and scopes of the callers seen
while it lives, so a hit costs two dictionary lookups: no dependency injection, no struct to
build or encode (the handler reads the principal from the ASGI scope, where the request
middleware put it).
"""

from __future__ import annotations

from functools import partial
from typing import Any
from uuid import UUID

import msgspec
from litestar import Response, get
from litestar.serialization import encode_json
from litestar.types import Scope
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from hub.core.auth import Principal, principal_of_scope
from hub.core.readcache import ReadCache, watch
from hub.core.responses import HubResponse
from partners.partners.models import Partner
from partners.partners.schemas import PartnerOut
from partners.partners.service import PartnerService
from partners.partners.service import to_out as partner_out
from partners.partnerships.models import Partnership, PartnershipMember
from partners.partnerships.schemas import PartnershipOut
from partners.partnerships.service import PartnershipService

watch(Partner, Partnership, PartnershipMember)
# Encoded answers kept per entry (one per client and scope set); more callers than this are
# answered without keeping theirs.
MAX_BODIES_PER_PARTNER = 1000


class Me(msgspec.Struct):
    client_id: str
    partner: PartnerOut | None
    scopes: list[str]
    partnerships: list[PartnershipOut]


class PartnerView:
    """What the read cache keeps for one partner: its record and partnerships, and the answers
    encoded from them so far, by (client id, scopes)."""

    __slots__ = ("bodies", "partner", "partnerships")

    def __init__(self, partner: PartnerOut, partnerships: list[PartnershipOut]) -> None:
        self.partner = partner
        self.partnerships = partnerships
        self.bodies: dict[tuple[str, frozenset[str]], bytes] = {}

    def body_for(self, principal: Principal) -> bytes:
        key = (principal.client_id, principal.scopes)
        body = self.bodies.get(key)
        if body is None:
            body = answer(principal, self.partner, self.partnerships)
            if len(self.bodies) < MAX_BODIES_PER_PARTNER:
                self.bodies[key] = body
        return body


def answer(
    principal: Principal, partner: PartnerOut | None, partnerships: list[PartnershipOut]
) -> bytes:
    return encode_json(
        Me(
            client_id=principal.client_id,
            partner=partner,
            scopes=sorted(principal.scopes),
            partnerships=partnerships,
        )
    )


def me_cache(ttl_seconds: float) -> ReadCache[str, PartnerView]:
    return ReadCache(ttl_seconds)


async def load_view(
    session_maker: async_sessionmaker[AsyncSession], partner_id: str
) -> PartnerView:
    async with session_maker() as session:
        partner = await PartnerService(session).get(UUID(partner_id))
        page = await PartnershipService(session).list(UUID(partner_id), cursor=None, limit=100)
        await session.commit()
    return PartnerView(partner_out(partner), page.items)


@get("/v1/me", tags=["me"], summary="Who am I: partner, scopes and partnerships")
async def me(scope: Scope) -> Response[Me]:
    principal = principal_of_scope(scope)
    if principal.partner_id is None:
        return HubResponse(answer(principal, None, []))
    state: Any = scope["app"].state
    cache: ReadCache[str, PartnerView] = state.me_cache
    load = partial(load_view, state.session_maker, principal.partner_id)
    view = cache.fresh(principal.partner_id, load)  # reloaded ahead under steady traffic
    if view is None:
        view = await cache.get(principal.partner_id, load)
    return HubResponse(view.body_for(principal))
