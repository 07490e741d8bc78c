"""Partner onboarding, updates, suspension. Services flush; the request commits."""

from __future__ import annotations

import asyncio
from uuid import UUID

import msgspec
from advanced_alchemy.repository import SQLAlchemyAsyncRepository
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.core import audit, revocations
from hub.core.audit import Actor
from hub.core.errors import Conflict, NotFound
from hub.core.pagination import Page, paginate
from hub.core.webhook_urls import check_webhook_url
from partners.free_text import refuse_contact_details
from partners.partners.models import ACTIVE, SUSPENDED, Partner
from partners.partners.schemas import PartnerCreate, PartnerOut, PartnerUpdate


class PartnerRepository(SQLAlchemyAsyncRepository[Partner]):
    model_type = Partner


def to_out(partner: Partner) -> PartnerOut:
    return msgspec.convert(partner, PartnerOut, from_attributes=True)


class PartnerService:
    def __init__(
        self,
        session: AsyncSession,
        *,
        allow_loopback_http: bool = False,
        revocation_cache: revocations.RevocationCache | None = None,
    ) -> None:
        self.session = session
        self.repo = PartnerRepository(session=session)
        self.allow_loopback_http = allow_loopback_http
        self.revocation_cache = revocation_cache

    async def get(self, partner_id: UUID) -> Partner:
        partner = await self.repo.get_one_or_none(id=partner_id)
        if partner is None:
            raise NotFound(f"No partner {partner_id}.")
        return partner

    async def _check_webhook(self, url: str) -> None:
        # Name resolution blocks: off the event loop.
        await asyncio.to_thread(
            check_webhook_url, url, allow_loopback_http=self.allow_loopback_http
        )

    async def _check_name_free(self, name: str, except_id: UUID | None = None) -> None:
        stmt = select(Partner.id).where(func.lower(Partner.name) == name.lower())
        found = await self.session.scalar(stmt)
        if found is not None and found != except_id:
            raise Conflict(
                f"A partner named {name!r} already exists ({found}).",
                fix="Choose another name, or update the existing partner.",
            )

    async def onboard(self, data: PartnerCreate, actor: Actor) -> Partner:
        refuse_contact_details(name=data.name)
        await self._check_name_free(data.name)
        if data.webhook_url:
            await self._check_webhook(data.webhook_url)
        partner = await self.repo.add(
            Partner(
                name=data.name,
                category=data.category,
                status=ACTIVE,
                webhook_url=data.webhook_url,
            )
        )
        await audit.append(
            self.session,
            actor.event(
                "partner.onboarded",
                "partner",
                str(partner.id),
                concerns=[partner.id],
                name=partner.name,
                category=partner.category,
            ),
        )
        return partner

    async def update(self, partner_id: UUID, data: PartnerUpdate, actor: Actor) -> Partner:
        if isinstance(data.name, str):
            refuse_contact_details(name=data.name)
        partner = await self.get(partner_id)
        changes = {k: v for k, v in msgspec.structs.asdict(data).items() if v is not msgspec.UNSET}
        if isinstance(data.name, str) and data.name != partner.name:
            await self._check_name_free(data.name, except_id=partner.id)
        if isinstance(data.webhook_url, str):
            await self._check_webhook(data.webhook_url)
        status = changes.pop("status", None)
        for field, value in changes.items():
            setattr(partner, field, value)
        if changes:
            await audit.append(
                self.session,
                actor.event(
                    "partner.updated",
                    "partner",
                    str(partner.id),
                    concerns=[partner.id],
                    changes=changes,
                ),
            )
        if status == SUSPENDED and partner.status != SUSPENDED:
            await self._suspend(partner, actor)
        elif status == ACTIVE and partner.status != ACTIVE:
            await self._reactivate(partner, actor)
        await self.session.flush()
        return partner

    async def _suspend(self, partner: Partner, actor: Actor) -> None:
        partner.status = SUSPENDED
        # Its tokens stop working at once: every process refuses the partner's tokens.
        await revocations.revoke(self.session, revocations.PARTNER, str(partner.id))
        cache = self.revocation_cache
        if cache is not None:
            revocations.after_commit(
                self.session, lambda: cache.note(revocations.PARTNER, str(partner.id))
            )
        await audit.append(
            self.session,
            actor.event("partner.suspended", "partner", str(partner.id), concerns=[partner.id]),
        )

    async def _reactivate(self, partner: Partner, actor: Actor) -> None:
        partner.status = ACTIVE
        # Tokens issued before the suspension stay dead: the partner gets fresh ones.
        partner.token_epoch += 1
        floor = partner.token_epoch
        await revocations.lift(self.session, revocations.PARTNER, str(partner.id))
        await revocations.set_floor(self.session, str(partner.id), floor)
        cache = self.revocation_cache
        if cache is not None:
            partner_id = str(partner.id)

            def apply() -> None:
                cache.lift(revocations.PARTNER, partner_id)
                cache.note(revocations.PARTNER_FLOOR, partner_id, floor)

            revocations.after_commit(self.session, apply)
        await audit.append(
            self.session,
            actor.event("partner.reactivated", "partner", str(partner.id), concerns=[partner.id]),
        )

    async def list(
        self, *, cursor: str | None, limit: int, status: str | None = None
    ) -> Page[PartnerOut]:
        stmt = select(Partner)
        if status:
            stmt = stmt.where(Partner.status == status)
        return await paginate(
            self.session, stmt, Partner.id, cursor=cursor, limit=limit, to_item=to_out
        )
