"""``/v1/rewards/settlements``: closed settlement statements, as JSON or as CSV for finance.

A partner sees the statements' lines it is a party to; one statement read by id is a 404 for a
partner that is party to none of its lines (the same answer as an unknown id, so nobody learns
which brands settled with whom). Admins read every statement whole. The CSV export names both
partners of each line, so a finance team can book it without a lookup.
"""

from __future__ import annotations

import csv
import io
from typing import Any
from uuid import UUID

from litestar import Controller, Request, Response, get
from litestar.di import NamedDependency
from litestar.params import FromPath, Parameter
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.core.auth import Principal, requires_any_scope
from hub.core.errors import NotFound
from hub.core.openapi import OPENAPI_ALSO_AS_OPT, OPENAPI_STATUSES_OPT
from hub.core.pagination import CursorParameter, LimitParameter, Page, paginate, parse_seq
from partners.partners.models import Partner
from partners.rewards.models import RewardSettlement
from partners.rewards.schemas import (
    SettlementLine,
    SettlementOut,
    SettlementStatement,
    StatementLine,
)

READ = "rewards:read"
MAX_ID = 2**63 - 1
CSV_COLUMNS = (
    "settlement_id",
    "period_start",
    "period_end",
    "currency",
    "point_value_minor",
    "from_partner_id",
    "from_partner_name",
    "to_partner_id",
    "to_partner_name",
    "points",
    "amount_minor",
)


def visible_lines(settlement: RewardSettlement, principal: Principal) -> list[dict[str, Any]]:
    """The statement's lines the caller may see: all for an admin, a partner's own otherwise."""
    if principal.is_admin:
        return list(settlement.lines)
    mine = str(principal.partner)
    return [line for line in settlement.lines if mine in (line["from"], line["to"])]


def _summary(settlement: RewardSettlement, principal: Principal) -> SettlementOut:
    return SettlementOut(
        id=settlement.id,
        period_start=settlement.period_start,
        period_end=settlement.period_end,
        currency=settlement.currency,
        point_value_minor=settlement.point_value_minor,
        closed_at=settlement.closed_at,
        lines=[
            SettlementLine(
                from_partner_id=UUID(line["from"]),
                to_partner_id=UUID(line["to"]),
                points=line["points"],
                amount_minor=line["amount_minor"],
            )
            for line in visible_lines(settlement, principal)
        ],
    )


async def _statement(
    session: AsyncSession, settlement: RewardSettlement, lines: list[dict[str, Any]]
) -> SettlementStatement:
    ids = {UUID(line[side]) for line in lines for side in ("from", "to")}
    names: dict[UUID, str] = {}
    if ids:
        rows = await session.execute(select(Partner.id, Partner.name).where(Partner.id.in_(ids)))
        names = {row.id: row.name for row in rows}
    return SettlementStatement(
        id=settlement.id,
        period_start=settlement.period_start,
        period_end=settlement.period_end,
        currency=settlement.currency,
        point_value_minor=settlement.point_value_minor,
        closed_at=settlement.closed_at,
        lines=[
            StatementLine(
                from_partner_id=UUID(line["from"]),
                from_partner_name=names.get(UUID(line["from"]), ""),
                to_partner_id=UUID(line["to"]),
                to_partner_name=names.get(UUID(line["to"]), ""),
                points=line["points"],
                amount_minor=line["amount_minor"],
            )
            for line in lines
        ],
    )


def statement_csv(statement: SettlementStatement) -> str:
    """One row per line of the statement, with the statement's period and currency."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for line in statement.lines:
        writer.writerow(
            [
                statement.id,
                statement.period_start.isoformat(),
                statement.period_end.isoformat(),
                statement.currency,
                statement.point_value_minor,
                line.from_partner_id,
                line.from_partner_name,
                line.to_partner_id,
                line.to_partner_name,
                line.points,
                line.amount_minor,
            ]
        )
    return buffer.getvalue()


class SettlementController(Controller):
    path = "/v1/rewards/settlements"
    tags = ["rewards"]
    guards = [requires_any_scope(READ, "admin")]

    @get("/", summary="Closed settlement statements (partners: the lines that involve them)")
    async def settlements(
        self,
        db_session: NamedDependency[AsyncSession],
        principal: NamedDependency[Principal],
        limit: int = LimitParameter,
        cursor: str | None = CursorParameter,
    ) -> Page[SettlementOut]:
        return await paginate(
            db_session,
            select(RewardSettlement),
            RewardSettlement.id,
            cursor=cursor,
            limit=limit,
            to_item=lambda s: _summary(s, principal),
            parse_key=parse_seq,
            descending=True,
        )

    @get(
        "/{settlement_id:int}",
        summary="One closed statement with partner names (Accept: text/csv for finance)",
        description="JSON by default; with Accept: text/csv (or format=csv) one CSV row per "
        "line: settlement_id, period_start, period_end, currency, point_value_minor, "
        "from_partner_id, from_partner_name, to_partner_id, to_partner_name, points, "
        "amount_minor. A partner reads only the lines it is a party to, and gets 404 for a "
        "statement it is no party to; admins read every line.",
        opt={OPENAPI_ALSO_AS_OPT: ("text/csv",), OPENAPI_STATUSES_OPT: (404,)},
    )
    async def statement(
        self,
        settlement_id: FromPath[int],
        db_session: NamedDependency[AsyncSession],
        principal: NamedDependency[Principal],
        request: Request[Any, Any, Any],
        format: str | None = Parameter(default=None, pattern="^(json|csv)$"),
    ) -> SettlementStatement | Response[str]:
        # Ids are BIGINTs: one outside their range names no statement (and must not reach
        # the database, which would refuse the query itself).
        in_range = 1 <= settlement_id <= MAX_ID
        settlement = await db_session.get(RewardSettlement, settlement_id) if in_range else None
        lines = visible_lines(settlement, principal) if settlement is not None else []
        if settlement is None or (not principal.is_admin and not lines):
            raise NotFound(
                f"No settlement statement {settlement_id} that you are a party to.",
                fix="List the statements you are a party to at GET /v1/rewards/settlements.",
            )
        statement = await _statement(db_session, settlement, lines)
        wants_csv = format == "csv" or (
            format is None and "text/csv" in request.headers.get("accept", "")
        )
        if not wants_csv:
            return statement
        return Response(
            statement_csv(statement),
            media_type="text/csv; charset=utf-8",
            headers={
                "Content-Disposition": f'attachment; filename="settlement-{settlement.id}.csv"'
            },
        )
