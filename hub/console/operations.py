"""Operations pages: the overview, scheduled jobs (with "run now") and the audit log."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, QueryParameter
from litestar.response import Redirect
from sqlalchemy import Engine, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from hub.console.names import names_for_entries
from hub.console.web import page
from hub.core.audit import (
    Actor,
    AuditEntry,
    ChainReport,
    current_head,
    sign_head,
    verify_chain,
)
from hub.core.db import reading
from hub.core.pagination import paginate, parse_seq
from hub.jobs.controller import request_run, spec_of
from hub.jobs.models import JobRun, JobRunRequest
from matching.models import Offer
from partners.clients.models import OAuthClient
from partners.partners.models import Partner
from partners.partnerships.models import Partnership
from partners.rewards.models import RewardEvent

RECENT_RUNS = 5
AUDIT_PAGE = 50


class OperationPages(Controller):
    path = "/"

    @get("/")
    async def overview(
        self, request: Request[Any, Any, Any], db_session: NamedDependency[AsyncSession]
    ) -> Response[Any]:
        async def by_status(model: Any) -> dict[str, int]:
            rows = await db_session.execute(
                select(model.status, func.count()).group_by(model.status)
            )
            return {str(status): int(n) for status, n in rows}

        count, _ = await current_head(db_session)
        recent = (
            await db_session.scalars(select(AuditEntry).order_by(AuditEntry.seq.desc()).limit(8))
        ).all()
        failed = (
            await db_session.scalars(
                select(JobRun).where(JobRun.status == "failed").order_by(JobRun.id.desc()).limit(5)
            )
        ).all()
        return page(
            request,
            "overview.html",
            partners=await by_status(Partner),
            partnerships=await by_status(Partnership),
            offers=await by_status(Offer),
            clients=await by_status(OAuthClient),
            reward_events=await db_session.scalar(select(func.count()).select_from(RewardEvent)),
            audit_rows=count,
            recent=recent,
            names=await names_for_entries(db_session, recent),
            failed=failed,
            nav="overview",
        )

    @get("/jobs")
    async def jobs(
        self,
        request: Request[Any, Any, Any],
        state: State,
        db_session: NamedDependency[AsyncSession],
        done: FromQuery[str | None] = None,
    ) -> Response[Any]:
        specs = list(state.job_specs.values())
        # The newest runs of every job in one query (ids only grow), cut to a few per job.
        latest = (
            await db_session.scalars(
                select(JobRun).order_by(JobRun.id.desc()).limit(RECENT_RUNS * len(specs) * 4)
            )
        ).all()
        runs: dict[str, list[JobRun]] = {spec.name: [] for spec in specs}
        for run in latest:
            shown = runs.setdefault(run.name, [])
            if len(shown) < RECENT_RUNS:
                shown.append(run)
        waiting = (
            await db_session.scalars(
                select(JobRunRequest)
                .where(JobRunRequest.picked_at.is_(None))
                .order_by(JobRunRequest.id)
            )
        ).all()
        return page(
            request,
            "jobs.html",
            specs=specs,
            runs=runs,
            waiting=waiting,
            scheduler_here=state.settings.jobs.run_in_serve,
            done=done,
            nav="jobs",
        )

    @post("/jobs/{name:str}/run")
    async def run_job(
        self,
        name: FromPath[str],
        state: State,
        db_session: NamedDependency[AsyncSession],
        actor: NamedDependency[Actor],
    ) -> Response[Any]:
        # The same request row and audit entry as POST /v1/jobs/{name}/run: a worker picks
        # it up within its poll interval.
        spec = spec_of(state, name)
        await request_run(db_session, spec.name, actor)
        return Redirect(f"/admin/jobs?done={spec.name}", status_code=303)

    @get("/audit")
    async def audit_log(
        self,
        request: Request[Any, Any, Any],
        state: State,
        db_session: NamedDependency[AsyncSession],
        action: Annotated[str | None, QueryParameter(max_length=100)] = None,
        actor_name: Annotated[str | None, QueryParameter(name="actor", max_length=200)] = None,
        target: Annotated[str | None, QueryParameter(max_length=200)] = None,
        cursor: Annotated[str | None, QueryParameter(max_length=200)] = None,
    ) -> Response[Any]:
        stmt = select(AuditEntry)
        if action:
            stmt = stmt.where(AuditEntry.action == action.strip())
        if actor_name:
            stmt = stmt.where(AuditEntry.actor == actor_name.strip())
        if target:
            stmt = stmt.where(AuditEntry.target_id == target.strip())
        entries = await paginate(
            db_session,
            stmt,
            AuditEntry.seq,
            cursor=cursor,
            limit=AUDIT_PAGE,
            to_item=lambda e: e,
            parse_key=parse_seq,
            descending=True,
        )
        actions = (
            await db_session.scalars(
                select(AuditEntry.action).distinct().order_by(AuditEntry.action)
            )
        ).all()
        count, head_hash = await current_head(db_session)
        report = await asyncio.to_thread(_verify, state.read_engine)
        return page(
            request,
            "audit.html",
            entries=entries.items,
            names=await names_for_entries(db_session, entries.items),
            next_cursor=entries.next_cursor,
            filters={"action": action or "", "actor": actor_name or "", "target": target or ""},
            actions=actions,
            report=report,
            head=sign_head(state.keyring, count, head_hash),
            nav="audit",
        )


def _verify(engine: Engine) -> ChainReport:
    """Recompute the whole chain on the read-only engine, off the event loop."""
    with reading(), Session(engine) as session:
        rows = session.scalars(
            select(AuditEntry).order_by(AuditEntry.seq).execution_options(yield_per=2000)
        )
        return verify_chain(rows)
