"""GET /v1/audit (filterable, paginated) and GET /v1/audit/head (signed), for admins."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
from litestar import Controller, get
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import Parameter, QueryParameter
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.core.audit import AuditEntry, SignedHead, current_head, sign_head
from hub.core.auth import requires_admin
from hub.core.pagination import CursorParameter, LimitParameter, Page, paginate, parse_seq


class AuditEntryOut(msgspec.Struct):
    seq: int
    at: datetime
    actor: str
    partner_id: str | None
    action: str
    target_type: str
    target_id: str | None
    details: dict[str, Any]
    request_id: str | None
    hash: str


def to_out(entry: AuditEntry) -> AuditEntryOut:
    return msgspec.convert(entry, AuditEntryOut, from_attributes=True)


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class AuditController(Controller):
    path = "/v1/audit"
    tags = ["audit (admin)"]
    guards = [requires_admin]

    @get("/", summary="Read the audit log, newest first")
    async def list_entries(
        self,
        db_session: NamedDependency[AsyncSession],
        limit: int = LimitParameter,
        cursor: str | None = CursorParameter,
        action: str | None = Parameter(default=None, description="e.g. partner.suspended"),
        actor_name: Annotated[
            str | None, QueryParameter(name="actor", description="e.g. client:cl_...")
        ] = None,
        target_id: str | None = Parameter(default=None),
        partner_id: str | None = Parameter(default=None),
        since: datetime | None = Parameter(default=None),
        until: datetime | None = Parameter(default=None),
    ) -> Page[AuditEntryOut]:
        stmt = select(AuditEntry)
        if action:
            stmt = stmt.where(AuditEntry.action == action)
        if actor_name:
            stmt = stmt.where(AuditEntry.actor == actor_name)
        if target_id:
            stmt = stmt.where(AuditEntry.target_id == target_id)
        if partner_id:
            stmt = stmt.where(AuditEntry.partner_id == partner_id)
        # A time without a zone is read as UTC.
        if since:
            stmt = stmt.where(AuditEntry.at >= _utc(since))
        if until:
            stmt = stmt.where(AuditEntry.at < _utc(until))
        return await paginate(
            db_session,
            stmt,
            AuditEntry.seq,
            cursor=cursor,
            limit=limit,
            to_item=to_out,
            parse_key=parse_seq,
            descending=True,
        )

    @get(
        "/head",
        summary="The chain's head, signed with the audit key",
        description="Keep these; `hub admin audit verify --head` detects truncation against "
        "any earlier signed head.",
    )
    async def head(self, db_session: NamedDependency[AsyncSession], state: State) -> SignedHead:
        count, head_hash = await current_head(db_session)
        return sign_head(state.keyring, count, head_hash)
