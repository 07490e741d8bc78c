"""Read-only pages on what the coalition does: the overlap matrix, offers and rewards."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any
from uuid import UUID

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import FromQuery, QueryParameter
from litestar.response import Redirect
from sqlalchemy import Date, cast, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.console.charts import day_range, grouped_bars, heat_class
from hub.console.partners import partner_names
from hub.console.partnerships import PURPOSES
from hub.console.web import form_data, page
from hub.core.audit import Actor
from matching.matrix import BUDGET_EXHAUSTED, DIFFERENCING, overlap_matrix
from matching.models import Offer
from matching.offers import status_of
from partners.partnerships.models import Partnership
from partners.rewards.jobs import period_of, settlement_lines
from partners.rewards.models import RewardEvent, RewardSettlement

ACTIVITY_DAYS = 30
KINDS = ["earn", "redeem", "adjust"]
STATEMENTS_SHOWN = 12
PURPOSE_PATTERN = "^(analytics|joint_offers|rewards_sharing)$"


class InsightPages(Controller):
    path = "/"

    @get("/matrix")
    async def matrix(
        self,
        request: Request[Any, Any, Any],
        state: State,
        actor: NamedDependency[Actor],
        purpose: Annotated[str, QueryParameter(pattern=PURPOSE_PATTERN)] = "analytics",
        done: FromQuery[str | None] = None,
        partner: FromQuery[list[UUID] | None] = None,
    ) -> Response[Any]:
        # The same answers (and audit entry) as GET /v1/coalition/overlap-matrix, except that
        # a page view never spends epsilon: a noisy pair whose data changed shows its stored
        # answer as stale until someone asks for a refresh (the form below posts it). Past
        # matching.matrix_max_partners active partners, ?partner= names the ones to show.
        matrix = await overlap_matrix(
            state.overlap_service,
            purpose,
            state.settings.partnerships.default_min_audience,
            actor,
            spend=False,
            chosen=partner or (),
            max_partners=state.settings.matching.matrix_max_partners,
        )
        grid = {(c.a, c.b): c.answer for c in matrix.cells}
        answers = list(grid.values())
        return page(
            request,
            "matrix.html",
            purpose=purpose,
            purposes=PURPOSES,
            partners=matrix.partners,
            grid=grid,
            peak=max((c.count or 0 for c in answers), default=0),
            heat_class=heat_class,
            suppressed=sum(1 for c in answers if c.suppressed),
            refused=sum(1 for c in answers if c.refused),
            stale=sum(1 for c in answers if c.stale),
            # A refresh can change stale cells and refusals that depend on the data or the
            # budget; a purpose the partnership does not allow stays refused.
            refreshable=any(
                c.stale or c.refused in (BUDGET_EXHAUSTED, DIFFERENCING) for c in answers
            ),
            done=done,
            nav="matrix",
        )

    @post("/matrix/refresh")
    async def refresh_matrix(
        self,
        request: Request[Any, Any, Any],
        state: State,
        actor: NamedDependency[Actor],
    ) -> Response[Any]:
        """Answer the stale noisy pairs now: this spends their partnerships' epsilon."""
        form = await form_data(request)
        purpose = form.get("purpose")
        if purpose not in PURPOSES:
            purpose = "analytics"
        await overlap_matrix(
            state.overlap_service,
            purpose,
            state.settings.partnerships.default_min_audience,
            actor,
            spend=True,
            max_partners=state.settings.matching.matrix_max_partners,
        )
        return Redirect(f"/admin/matrix?purpose={purpose}&done=refreshed", status_code=303)

    @get("/offers")
    async def offers(
        self, request: Request[Any, Any, Any], db_session: NamedDependency[AsyncSession]
    ) -> Response[Any]:
        offers = (await db_session.scalars(select(Offer).order_by(Offer.created_at.desc()))).all()
        members: dict[UUID, list[UUID]] = {}
        if offers:
            partnerships = await db_session.scalars(
                select(Partnership).where(Partnership.id.in_({o.partnership_id for o in offers}))
            )
            members = {p.id: [m.partner_id for m in p.members] for p in partnerships}
        rows = [
            {
                "offer": o,
                "status": status_of(o),
                "members": members.get(o.partnership_id, []),
                "audience": {UUID(k): v for k, v in o.audience_sizes.items()},
                "approvals": {UUID(k): v[:16].replace("T", " ") for k, v in o.approvals.items()},
                "points": {UUID(k): v for k, v in o.points.items()},
            }
            for o in offers
        ]
        return page(
            request,
            "offers.html",
            rows=rows,
            names=await partner_names(db_session),
            nav="offers",
        )

    @get("/rewards")
    async def rewards(
        self,
        request: Request[Any, Any, Any],
        state: State,
        db_session: NamedDependency[AsyncSession],
    ) -> Response[Any]:
        today = datetime.now(UTC).date()
        days = day_range(today, ACTIVITY_DAYS)
        since = datetime.combine(days[0], datetime.min.time(), tzinfo=UTC)
        day = _utc_day(db_session, RewardEvent.occurred_at)
        rows = await db_session.execute(
            select(day, RewardEvent.kind, func.sum(RewardEvent.points), func.count())
            .where(RewardEvent.occurred_at >= since)
            .group_by(day, RewardEvent.kind)
        )
        points: dict[tuple[date, str], int] = {}
        events = dict.fromkeys(KINDS, 0)
        for d, kind, total, count in rows:
            points[(_as_date(d), kind)] = int(total or 0)
            events[kind] = events.get(kind, 0) + int(count)
        settings = state.settings.rewards
        open_start, _ = period_of(datetime.now(UTC), settings.settlement_period)
        current = await settlement_lines(
            db_session,
            open_start,
            datetime.now(UTC) + timedelta(seconds=1),
            settings.point_value_minor,
        )
        statements = (
            await db_session.scalars(
                select(RewardSettlement)
                .order_by(RewardSettlement.period_start.desc())
                .limit(STATEMENTS_SHOWN)
            )
        ).all()
        return page(
            request,
            "rewards.html",
            chart=grouped_bars(days, points, KINDS),
            events=events,
            totals={k: sum(v for (_, kind), v in points.items() if kind == k) for k in KINDS},
            current=current,
            open_start=open_start,
            currency=settings.currency,
            statements=statements,
            names={str(k): v for k, v in (await partner_names(db_session)).items()},
            days=ACTIVITY_DAYS,
            nav="rewards",
        )


def _utc_day(session: AsyncSession, column: Any) -> Any:
    """The UTC calendar day of a timestamp column, on either database."""
    if session.get_bind().dialect.name == "postgresql":
        return cast(func.timezone("UTC", column), Date)
    return func.date(column)


def _as_date(value: Any) -> date:
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])
