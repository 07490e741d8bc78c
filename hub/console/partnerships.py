"""Partnerships: members and their acceptance, purposes, thresholds, epsilon and budget used.

The admin proposes; each member accepts with its own token (``POST /v1/partnerships/{id}/
accept``), which is what activates a partnership: the console does not accept for a brand.
Suspending, resuming and ending go through ``PartnershipService.update`` like the API's PATCH.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, FromQuery
from litestar.response import Redirect
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.console.partners import partner_names
from hub.console.partnership_view import offer_lines, recent_questions, stored_overlap
from hub.console.web import convert, form_data, page
from hub.core.audit import Actor
from matching import rules
from matching.models import OverlapQuery
from matching.overlap import budget_status
from partners.partners.models import ACTIVE as PARTNER_ACTIVE
from partners.partners.models import Partner
from partners.partnerships.controller import provide_partnership_service
from partners.partnerships.models import Partnership
from partners.partnerships.schemas import PartnershipCreate, PartnershipUpdate
from partners.partnerships.service import TRANSITIONS, PartnershipService, budget_of

PURPOSES = ("analytics", "joint_offers", "rewards_sharing")
PERIODS = ("hour", "day", "week", "month")


async def epsilon_spent(
    session: AsyncSession, partnerships: Sequence[Partnership]
) -> dict[UUID, float]:
    """Epsilon spent in the current budget period, per noisy partnership: one query per
    period length in use (at most four), not one per partnership."""
    by_period: dict[str, list[UUID]] = {}
    for p in partnerships:
        if budget_of(p) is not None:
            by_period.setdefault(p.budget_period, []).append(p.id)
    spent: dict[UUID, float] = {}
    now = datetime.now(UTC)
    for period, ids in by_period.items():
        start, end = rules.period_bounds(now, period)  # type: ignore[arg-type]
        rows = await session.execute(
            select(OverlapQuery.partnership_id, func.coalesce(func.sum(OverlapQuery.epsilon), 0.0))
            .where(
                OverlapQuery.partnership_id.in_(ids),
                OverlapQuery.answered_at >= start,
                OverlapQuery.answered_at < end,
                OverlapQuery.epsilon > 0,
            )
            .group_by(OverlapQuery.partnership_id)
        )
        spent.update({pid: float(total) for pid, total in rows})
    return spent


class PartnershipPages(Controller):
    path = "/partnerships"
    dependencies = {
        "partnership_service": Provide(provide_partnership_service, sync_to_thread=False)
    }

    @get("/")
    async def list_partnerships(
        self, request: Request[Any, Any, Any], db_session: NamedDependency[AsyncSession]
    ) -> Response[Any]:
        partnerships = (
            await db_session.scalars(select(Partnership).order_by(Partnership.created_at.desc()))
        ).all()
        active_partners = (
            await db_session.scalars(
                select(Partner).where(Partner.status == PARTNER_ACTIVE).order_by(Partner.name)
            )
        ).all()
        return page(
            request,
            "partnerships.html",
            partnerships=partnerships,
            names=await partner_names(db_session),
            spent=await epsilon_spent(db_session, partnerships),
            budgets={p.id: budget_of(p) for p in partnerships},
            active_partners=active_partners,
            purposes=PURPOSES,
            periods=PERIODS,
            nav="partnerships",
        )

    @post("/")
    async def propose(
        self,
        request: Request[Any, Any, Any],
        partnership_service: NamedDependency[PartnershipService],
        actor: NamedDependency[Actor],
    ) -> Response[Any]:
        raw = await form_data(request)
        raw["members"] = [raw.pop("member_a", ""), raw.pop("member_b", "")]
        if isinstance(raw.get("purposes"), str):
            raw["purposes"] = [raw["purposes"]]
        raw.setdefault("purposes", [])
        raw["allow_competitors"] = raw.get("allow_competitors") == "on"
        data = convert(raw, PartnershipCreate)
        partnership = await partnership_service.propose(data, actor)
        return Redirect(f"/admin/partnerships/{partnership.id}?done=proposed", status_code=303)

    @get("/{partnership_id:uuid}")
    async def partnership_detail(
        self,
        request: Request[Any, Any, Any],
        partnership_id: FromPath[UUID],
        state: State,
        db_session: NamedDependency[AsyncSession],
        partnership_service: NamedDependency[PartnershipService],
        done: FromQuery[str | None] = None,
    ) -> Response[Any]:
        partnership = await partnership_service.get_for(partnership_id, None)
        default_min_audience = state.settings.partnerships.default_min_audience
        return page(
            request,
            "partnership.html",
            p=partnership,
            names=await partner_names(db_session),
            budget=await budget_status(db_session, partnership),
            overlap=await stored_overlap(db_session, partnership, default_min_audience),
            questions=await recent_questions(db_session, partnership.id),
            offers=await offer_lines(db_session, partnership.id),
            transitions=sorted(TRANSITIONS[partnership.status]),
            done=done,
            nav="partnerships",
        )

    @post("/{partnership_id:uuid}/status")
    async def set_status(
        self,
        request: Request[Any, Any, Any],
        partnership_id: FromPath[UUID],
        partnership_service: NamedDependency[PartnershipService],
        actor: NamedDependency[Actor],
    ) -> Response[Any]:
        data = convert(await form_data(request), PartnershipUpdate)
        await partnership_service.update(partnership_id, data, actor)
        return Redirect(f"/admin/partnerships/{partnership_id}?done=status", status_code=303)
