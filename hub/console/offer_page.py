"""An offer's page: its split per side and its measured lift, treated against control.

Viewing shows the last stored results answer of the question (whole offer, or one member's
attribute) and spends nothing; "Measure now" answers it again through the same service as
``GET /v1/offers/{id}/results`` (as an admin: its budget, differencing and audit apply), which
spends the partnership's epsilon when it has one and the data changed.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote
from uuid import UUID

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery
from litestar.response import Redirect
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.console.charts import LiftRow, lift_chart
from hub.console.partners import partner_names
from hub.console.web import form_data, page
from hub.core.audit import Actor
from hub.core.errors import NotFound
from matching.models import Offer, OfferResultAnswer
from matching.offers import status_of
from matching.results import OfferResultsService
from matching.schemas import LiftOut, OfferResultsOut
from partners.partnerships.models import Partnership


def _row(
    label: str, treated_rate: float | None, control_rate: float | None, lift: LiftOut
) -> LiftRow:
    low, high = lift.absolute_ci or (None, None)
    return LiftRow(label, treated_rate, control_rate, lift.absolute, low, high)


def _chart_rows(results: OfferResultsOut, names: dict[UUID, str]) -> list[LiftRow]:
    rows = []
    for side in results.sides:
        name = names.get(side.partner_id, str(side.partner_id))
        rows.append(_row(name, side.treated.response_rate, side.control.response_rate, side.lift))
        if side.segments:
            for segment in side.segments:
                value = next(iter(segment.values.values()))
                rows.append(
                    _row(
                        f"  {name}: {value if value is not None else '(none)'}",
                        segment.treated.response_rate,
                        segment.control.response_rate,
                        segment.lift,
                    )
                )
    return rows


class OfferPages(Controller):
    path = "/offers"

    @get("/{offer_id:uuid}")
    async def offer(
        self,
        request: Request[Any, Any, Any],
        offer_id: FromPath[UUID],
        db_session: NamedDependency[AsyncSession],
        by: FromQuery[str | None] = None,
        done: FromQuery[str | None] = None,
    ) -> Response[Any]:
        offer = await db_session.get(Offer, offer_id)
        if offer is None:
            raise NotFound(f"No offer {offer_id}.")
        partnership = await db_session.get(Partnership, offer.partnership_id)
        members = [m.partner_id for m in partnership.members] if partnership else []
        names = await partner_names(db_session)
        question = f"{offer.id}|{by or ''}|"
        stored = await db_session.scalar(
            select(OfferResultAnswer)
            .where(
                OfferResultAnswer.offer_id == offer.id,
                OfferResultAnswer.question.startswith(question, autoescape=True),
            )
            .order_by(OfferResultAnswer.id.desc())
            .limit(1)
        )
        results = msgspec.convert(stored.released, OfferResultsOut) if stored else None
        return page(
            request,
            "offer.html",
            offer=offer,
            status=status_of(offer),
            members=members,
            names=names,
            treated={UUID(k): v for k, v in offer.audience_sizes.items()},
            control={UUID(k): v for k, v in (offer.control_sizes or {}).items()},
            results=results,
            chart=lift_chart(_chart_rows(results, names)) if results else None,
            by=by or "",
            done=done,
            nav="offers",
        )

    @post("/{offer_id:uuid}/measure")
    async def measure(
        self,
        request: Request[Any, Any, Any],
        offer_id: FromPath[UUID],
        state: State,
        actor: NamedDependency[Actor],
    ) -> Response[Any]:
        """Answer the results question now (as an admin): this may spend epsilon."""
        form = await form_data(request)
        by = str(form.get("by") or "").strip() or None
        service: OfferResultsService = state.offer_results
        await service.read(offer_id, None, by, actor)
        query = f"?done=measured&by={quote(by)}" if by else "?done=measured"
        return Redirect(f"/admin/offers/{offer_id}{query}", status_code=303)
