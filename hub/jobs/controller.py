"""GET /v1/jobs, GET /v1/jobs/{name}/runs and POST /v1/jobs/{name}/run, for admins."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
from litestar import Controller, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import FromPath
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.core import audit
from hub.core.audit import Actor
from hub.core.auth import requires_admin
from hub.core.errors import NotFound
from hub.core.pagination import CursorParameter, LimitParameter, Page, paginate, parse_seq
from hub.jobs.models import JobRun, JobRunRequest
from hub.jobs.registry import JobSpec

RECENT_RUNS = 5


class JobRunOut(msgspec.Struct):
    id: int
    name: str
    status: str
    trigger: str
    started_at: datetime
    finished_at: datetime | None
    heartbeat_at: datetime
    worker: str
    counts: dict[str, int]
    cursor: dict[str, Any]
    error: str | None  # why the run failed, or was skipped (status "skipped")


class JobOut(msgspec.Struct):
    name: str
    schedule: str
    description: str
    last_run: JobRunOut | None
    recent_runs: list[JobRunOut]


class RunRequested(msgspec.Struct):
    request_id: int
    name: str
    status: str = "requested"


def run_out(run: JobRun) -> JobRunOut:
    return msgspec.convert(run, JobRunOut, from_attributes=True)


async def request_run(session: AsyncSession, name: str, actor: Actor) -> int:
    """A run request a worker picks up within its poll interval, audited under ``actor``
    (the API and the console both ask this way)."""
    request = JobRunRequest(name=name, requested_by=actor.name)
    session.add(request)
    await session.flush()
    await audit.append(
        session, actor.event("job.run_requested", "job", name, run_request=request.id)
    )
    return request.id


def spec_of(state: State, name: str) -> JobSpec:
    specs: dict[str, JobSpec] = state.job_specs
    spec = specs.get(name)
    if spec is None:
        raise NotFound(
            f"There is no job named {name[:64]!r}.",
            fix=f"Use one of: {', '.join(specs)} (GET /v1/jobs lists them).",
        )
    return spec


class JobController(Controller):
    path = "/v1/jobs"
    tags = ["jobs (admin)"]
    guards = [requires_admin]

    @get("/", summary="The scheduled jobs, their schedules and recent runs")
    async def list_jobs(
        self, db_session: NamedDependency[AsyncSession], state: State
    ) -> Page[JobOut]:
        items = []
        for spec in state.job_specs.values():
            runs = (
                await db_session.scalars(
                    select(JobRun)
                    .where(JobRun.name == spec.name)
                    .order_by(JobRun.id.desc())
                    .limit(RECENT_RUNS)
                )
            ).all()
            recent = [run_out(run) for run in runs]
            items.append(
                JobOut(
                    name=spec.name,
                    schedule=spec.schedule,
                    description=spec.description,
                    last_run=recent[0] if recent else None,
                    recent_runs=recent,
                )
            )
        return Page(items=items, next_cursor=None)

    @get("/{name:str}/runs", summary="One job's runs, newest first")
    async def list_runs(
        self,
        name: FromPath[str],
        db_session: NamedDependency[AsyncSession],
        state: State,
        limit: int = LimitParameter,
        cursor: str | None = CursorParameter,
    ) -> Page[JobRunOut]:
        spec = spec_of(state, name)
        return await paginate(
            db_session,
            select(JobRun).where(JobRun.name == spec.name),
            JobRun.id,
            cursor=cursor,
            limit=limit,
            to_item=run_out,
            parse_key=parse_seq,
            descending=True,
        )

    @post(
        "/{name:str}/run",
        status_code=202,
        summary="Ask for a run of the job now",
        description="A worker picks the request up within a second (after the run in "
        "progress, if any); follow it in GET /v1/jobs.",
    )
    async def request_run(
        self,
        name: FromPath[str],
        db_session: NamedDependency[AsyncSession],
        state: State,
        actor: NamedDependency[Actor],
    ) -> RunRequested:
        spec = spec_of(state, name)
        request_id = await request_run(db_session, spec.name, actor)
        return RunRequested(request_id=request_id, name=spec.name)
