"""Partners and their OAuth clients: onboard, suspend, reactivate, create and revoke clients.

Every action goes through the API's services (``PartnerService``, ``ClientService``) with the
console user as the actor; a client secret is rendered once, in the response to the form that
created it, and stored nowhere but as its hash.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, FromQuery
from litestar.response import Redirect
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.console.sessions import rotate_csrf
from hub.console.web import convert, form_data, page
from hub.core.audit import Actor
from hub.core.auth import PARTNER_SCOPES
from partners.clients.models import OAuthClient
from partners.clients.schemas import ClientCreate
from partners.clients.service import ClientService
from partners.partners.controller import provide_client_service, provide_partner_service
from partners.partners.models import Partner
from partners.partners.schemas import PartnerCreate, PartnerUpdate
from partners.partners.service import PartnerService
from partners.partnerships.models import Partnership, PartnershipMember

AUTH_METHODS = ("client_secret_basic", "client_secret_post")


class PartnerPages(Controller):
    path = "/partners"
    dependencies = {
        "partner_service": Provide(provide_partner_service, sync_to_thread=False),
        "client_service": Provide(provide_client_service, sync_to_thread=False),
    }

    @get("/")
    async def list_partners(
        self, request: Request[Any, Any, Any], db_session: NamedDependency[AsyncSession]
    ) -> Response[Any]:
        partners = (await db_session.scalars(select(Partner).order_by(Partner.name))).all()
        rows = await db_session.execute(
            select(OAuthClient.partner_id, func.count())
            .where(OAuthClient.partner_id.is_not(None), OAuthClient.status == "active")
            .group_by(OAuthClient.partner_id)
        )
        clients = {partner_id: count for partner_id, count in rows}
        return page(request, "partners.html", partners=partners, clients=clients, nav="partners")

    @post("/")
    async def onboard(
        self,
        request: Request[Any, Any, Any],
        partner_service: NamedDependency[PartnerService],
        actor: NamedDependency[Actor],
    ) -> Response[Any]:
        data = convert(await form_data(request), PartnerCreate)
        partner = await partner_service.onboard(data, actor)
        return Redirect(f"/admin/partners/{partner.id}?done=onboarded", status_code=303)

    @get("/{partner_id:uuid}")
    async def partner_detail(
        self,
        request: Request[Any, Any, Any],
        partner_id: FromPath[UUID],
        db_session: NamedDependency[AsyncSession],
        partner_service: NamedDependency[PartnerService],
        done: FromQuery[str | None] = None,
    ) -> Response[Any]:
        partner = await partner_service.get(partner_id)
        clients = (
            await db_session.scalars(
                select(OAuthClient)
                .where(OAuthClient.partner_id == partner.id)
                .order_by(OAuthClient.created_at.desc())
            )
        ).all()
        partnerships = (
            await db_session.scalars(
                select(Partnership)
                .join(PartnershipMember, PartnershipMember.partnership_id == Partnership.id)
                .where(PartnershipMember.partner_id == partner.id)
                .order_by(Partnership.created_at.desc())
            )
        ).all()
        names = await partner_names(db_session)
        return page(
            request,
            "partner.html",
            partner=partner,
            clients=clients,
            partnerships=partnerships,
            names=names,
            scopes=PARTNER_SCOPES,
            auth_methods=AUTH_METHODS,
            done=done,
            nav="partners",
        )

    @post("/{partner_id:uuid}/status")
    async def set_status(
        self,
        request: Request[Any, Any, Any],
        partner_id: FromPath[UUID],
        partner_service: NamedDependency[PartnerService],
        actor: NamedDependency[Actor],
    ) -> Response[Any]:
        data = convert(await form_data(request), PartnerUpdate)
        await partner_service.update(partner_id, data, actor)
        return Redirect(f"/admin/partners/{partner_id}?done=status", status_code=303)

    @post("/{partner_id:uuid}/clients")
    async def create_client(
        self,
        request: Request[Any, Any, Any],
        partner_id: FromPath[UUID],
        partner_service: NamedDependency[PartnerService],
        client_service: NamedDependency[ClientService],
        actor: NamedDependency[Actor],
    ) -> Response[Any]:
        raw = await form_data(request)
        if isinstance(raw.get("scopes"), str):
            raw["scopes"] = [raw["scopes"]]
        raw.setdefault("scopes", [])
        data = convert(raw, ClientCreate)
        partner = await partner_service.get(partner_id)
        created = await client_service.create(partner, data, actor)
        # Shown in this response only: a reload or any later page has no way to show it again,
        # and a reload resubmitting the form is refused (its CSRF token is no longer valid).
        request.state.console = await rotate_csrf(client_service.session, request.state.console)
        return page(
            request, "client_created.html", partner=partner, created=created, nav="partners"
        )

    @post("/{partner_id:uuid}/clients/{client_id:str}/revoke")
    async def revoke_client(
        self,
        partner_id: FromPath[UUID],
        client_id: FromPath[str],
        client_service: NamedDependency[ClientService],
        actor: NamedDependency[Actor],
    ) -> Response[Any]:
        await client_service.revoke(partner_id, client_id, actor)
        return Redirect(f"/admin/partners/{partner_id}?done=revoked", status_code=303)


async def partner_names(session: AsyncSession) -> dict[UUID, str]:
    """Every partner's name by id, for pages that show ids of several partners (one query)."""
    rows = await session.execute(select(Partner.id, Partner.name))
    return {partner_id: name for partner_id, name in rows}
