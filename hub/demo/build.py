"""``hub demo``: the stages that build the demo coalition, each timed and shown as it goes.

Works in-process through the hub's services on the configured database (migrated first), so
what it builds is exactly what the API would have built. Each stage commits on its own and
first looks for what an earlier run made, so a second run (or one after an interruption)
reuses the data, never duplicates it, and only issues fresh credentials and runs the jobs again.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import structlog
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from sqlalchemy import Engine, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from hub.core.db import create_hub_async_engine, create_hub_sync_engine, is_sqlite, writing
from hub.core.keyring import Keyring, load_keyring
from hub.core.secrets import SecretHasher
from hub.demo import coalition, identifiers, rewards
from hub.demo.brands import BRANDS, HOTEL, OFFER_POINTS, Brand
from hub.demo.campaign import campaign_events
from hub.demo.people import Population, build_population
from hub.jobs.models import REQUEST, JobRun
from hub.jobs.registry import JOB_NAMES, job_specs
from hub.jobs.runner import JobRunner
from hub.settings import Settings
from matching.loader import ArrayCache
from matching.models import Offer
from partners.identifiers.crypto import IdentifierCrypto

ANALYZED_TABLES = ("identifier_records", "consent_events", "identifier_state")


@dataclass(frozen=True)
class DemoOptions:
    customers: int = 200_000
    seed: int = 42


@dataclass
class Resources:
    settings: Settings
    keyring: Keyring
    crypto: IdentifierCrypto
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    sync_engine: Engine
    arrays: ArrayCache


@dataclass
class Stages:
    """Timings per stage, and the progress display."""

    progress: Progress
    seconds: dict[str, float] = field(default_factory=dict)
    # CPU time of this process (all its threads) per stage: on a busy machine wall time says
    # more about the neighbours than about the demo.
    cpu_seconds: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def stage(
        self, name: str, label: str, total: int | None = None
    ) -> Iterator[Callable[[int], None]]:
        task = self.progress.add_task(label, total=total)
        started, cpu = time.perf_counter(), time.process_time()

        def advance(n: int) -> None:
            self.progress.advance(task, n)

        yield advance
        self.seconds[name] = round(time.perf_counter() - started, 2)
        self.cpu_seconds[name] = round(time.process_time() - cpu, 2)
        done = self.progress.tasks[task].completed
        self.progress.update(task, total=done or 1, completed=done or 1)


def run_demo(settings: Settings, options: DemoOptions, stderr: Console) -> dict[str, Any]:
    """Build (or reuse) the demo coalition; returns what ``hub demo`` prints."""
    from hub.migrate import upgrade

    started, cpu = time.perf_counter(), time.process_time()
    _log_warnings_to_stderr()
    keyring = load_keyring(settings.keyring_file, settings.keyring.inline)
    upgrade(settings.database_url)
    progress = Progress(
        TextColumn("{task.description:<34}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=stderr,
    )
    with progress:
        summary = asyncio.run(_build(settings, keyring, options, Stages(progress)))
    summary["seconds"]["total"] = round(time.perf_counter() - started, 2)
    summary["cpu_seconds"]["total"] = round(time.process_time() - cpu, 2)
    return summary


def _log_warnings_to_stderr() -> None:
    """The services and the job runner log with structlog: only warnings, and to stderr with
    the progress display, so that ``--json`` output stays clean. Loggers are not cached, so a
    hub started later in the same process (tests) configures its own."""
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=lambda *_: structlog.PrintLogger(sys.stderr),
        cache_logger_on_first_use=False,
    )


@asynccontextmanager
async def _resources(settings: Settings, keyring: Keyring) -> AsyncIterator[Resources]:
    url, busy = settings.database_url, settings.database.sqlite_busy_timeout_ms
    engine = create_hub_async_engine(url, busy_timeout_ms=busy)
    sync_engine = create_hub_sync_engine(url, busy_timeout_ms=busy)
    read_engine = create_hub_sync_engine(url, busy_timeout_ms=busy, writer=False)
    crypto = IdentifierCrypto(keyring)
    try:
        yield Resources(
            settings=settings,
            keyring=keyring,
            crypto=crypto,
            engine=engine,
            sessions=async_sessionmaker(engine, expire_on_commit=False),
            sync_engine=sync_engine,
            arrays=ArrayCache(
                read_engine,
                crypto,
                settings.array_dir,
                max_in_memory=settings.matching.cache_partners,
            ),
        )
    finally:
        await engine.dispose()
        sync_engine.dispose()
        read_engine.dispose()


async def _build(
    settings: Settings, keyring: Keyring, options: DemoOptions, stages: Stages
) -> dict[str, Any]:
    async with _resources(settings, keyring) as res:
        with stages.stage("partners", "partners"), writing():
            async with res.sessions() as session:
                partners = {
                    b.key: await coalition.ensure_partner(session, settings, b) for b in BRANDS
                }
                await session.commit()
        ids = {key: partner.id for key, partner in partners.items()}
        async with res.sessions() as session:
            existing = {k: await identifiers.record_count(session, ids[k]) for k in ids}
            rewarded = await rewards.has_demo_activity(session, list(ids.values()))
        population = None
        if not rewarded or not all(existing.values()):
            population = _people(options, stages)
        loaded = await _load_identifiers(res, population, existing, ids, stages)
        with stages.stage("partnerships", "partnerships"), writing():
            async with res.sessions() as session:
                partnerships = await coalition.ensure_partnerships(
                    session, settings, ids, options.customers
                )
                await session.commit()
        with stages.stage("offer", "joint offer and its audiences"), writing():
            offer = await coalition.ensure_offer(res.sessions, res.arrays, partnerships[0], ids)
        events = 0
        if not rewarded:
            assert population is not None
            events = await _record_rewards(res, population, options, offer, ids, stages)
        jobs = await _run_jobs(res, stages)
        with stages.stage("arrays", "match-key arrays of every brand"):
            # Saved under the data directory: the first overlap, matrix or console page after
            # `hub serve` reads them from disk instead of building them from the records.
            await asyncio.gather(*(res.arrays.get(pid) for pid in ids.values()))
        with stages.stage("credentials", "credentials"):
            hasher = SecretHasher(
                settings.oauth.secret_hash_time_cost, settings.oauth.secret_hash_memory_kib
            )
            with writing():
                async with res.sessions() as session:
                    admin, clients = await coalition.fresh_credentials(session, hasher, partners)
                    console_user = await coalition.fresh_console_user(session, hasher)
                    await session.commit()
        async with res.sessions() as session:
            records = {k: await identifiers.record_count(session, ids[k]) for k in ids}
    return _summary(
        settings,
        options,
        partners={k: (ids[k], records[k], loaded.get(k)) for k in ids},
        population=population,
        partnerships=partnerships,
        offer=offer,
        events=events,
        jobs=jobs,
        admin=admin,
        console_user=console_user,
        clients=clients,
        stages=stages,
    )


def _people(options: DemoOptions, stages: Stages) -> Population:
    with stages.stage("people", "synthetic people, hashed with the kit") as advance:
        return build_population(options.customers, options.seed, advance)


async def _load_identifiers(
    res: Resources,
    population: Population | None,
    existing: dict[str, int],
    ids: dict[str, UUID],
    stages: Stages,
) -> dict[str, int]:
    """Load each brand that holds no records yet; returns the records created per brand.

    The next brand's rows are keyed and sealed in a thread while this one is written (the
    database driver works without the GIL), so the two overlap.
    """
    missing = [b for b in BRANDS if not existing[b.key]]
    if not missing:
        return {}
    assert population is not None
    keys = identifiers.match_keys(res.crypto, population)
    dialect = res.engine.dialect

    def prepare(brand: Brand) -> Awaitable[identifiers.PreparedLoad]:
        base = population.bases[brand.key]
        return asyncio.ensure_future(
            asyncio.to_thread(
                identifiers.prepare_load,
                base,
                population,
                keys,
                res.crypto,
                ids[brand.key],
                dialect,
            )
        )

    created: dict[str, int] = {}
    upcoming = prepare(missing[0])
    for position, brand in enumerate(missing):
        label = f"identifiers: {brand.name}"
        records = population.bases[brand.key].records
        with stages.stage(f"identifiers.{brand.key}", label, records) as advance, writing():
            prepared = await upcoming
            if position + 1 < len(missing):
                upcoming = prepare(missing[position + 1])
            async with res.sessions() as session:
                created[brand.key] = await identifiers.load_customer_base(
                    session,
                    res.crypto,
                    prepared,
                    coalition.member_actor(ids[brand.key]),
                    advance,
                )
            del prepared
    with stages.stage("analyze", "table statistics"):
        _analyze(res.sync_engine)
    return created


def _analyze(engine: Engine) -> None:
    """Fresh statistics after a bulk load, so the planner knows the new tables' sizes (on
    SQLite this also lets lookups by match key alone skip-scan the partner column)."""
    with engine.begin() as connection:
        for table in ANALYZED_TABLES:
            connection.execute(text(f"ANALYZE {table}"))


async def _record_rewards(
    res: Resources,
    population: Population,
    options: DemoOptions,
    offer: Offer,
    ids: dict[str, UUID],
    stages: Stages,
) -> int:
    now = rewards.now_minute()
    plan = rewards.plan_rewards(population, options.seed, now, offer.id)
    async with res.sessions() as session:
        # The hotel's customers answer the offer: more stays in the treated arm than in the
        # control (a known true lift for the results page to find).
        plan.credits[HOTEL.key] += await campaign_events(
            session, res.crypto, population, offer, ids[HOTEL.key], options.seed, now
        )
    window = (offer.id, offer.activated_at) if offer.activated_at else None
    with stages.stage("rewards", "reward activity", plan.total) as advance, writing():
        async with res.sessions() as session:
            applied = await rewards.record_plan(session, res.crypto, plan, ids, advance, window)
            await session.commit()
    return applied


async def _run_jobs(res: Resources, stages: Stages) -> list[dict[str, Any]]:
    """One run of every scheduled job, recorded in job_runs like any other run."""
    runner = JobRunner(res.sessions, res.settings, res.keyring, res.crypto, job_specs(res.settings))
    out = []
    with stages.stage("jobs", "one run of every job", len(JOB_NAMES)) as advance:
        for name in JOB_NAMES:
            run_id = await runner.run(name, REQUEST)
            run = None
            if run_id is not None:
                async with res.sessions() as session:
                    run = await session.scalar(select(JobRun).where(JobRun.id == run_id))
            out.append(
                {
                    "name": name,
                    "run_id": run_id,
                    # None: another process was running it (its lease), so this one did not.
                    "status": run.status if run else "running elsewhere",
                    "counts": dict(run.counts) if run else {},
                }
            )
            advance(1)
    return out


def _summary(
    settings: Settings,
    options: DemoOptions,
    *,
    partners: dict[str, tuple[UUID, int, int | None]],
    population: Population | None,
    partnerships: list[Any],
    offer: Any,
    events: int,
    jobs: list[dict[str, Any]],
    admin: coalition.Credentials,
    console_user: coalition.Credentials,
    clients: dict[str, coalition.Credentials],
    stages: Stages,
) -> dict[str, Any]:
    url = f"http://{settings.server.host}:{settings.server.port}"
    names = {b.key: b.name for b in BRANDS}
    by_id = {pid: key for key, (pid, _, _) in partners.items()}
    return {
        "url": url,
        "api_docs": f"{url}/schema",
        "console": f"{url}/admin",
        "database": make_url(settings.database_url).render_as_string(hide_password=True),
        "embedded": is_sqlite(settings.database_url),
        "reused": all(created is None for _, _, created in partners.values()),
        "options": {"customers": options.customers, "seed": options.seed},
        "people": population.size if population else None,
        "admin": {"client_id": admin.name, "client_secret": admin.secret},
        "console_user": {
            "username": console_user.name,
            "password": console_user.secret,
        },
        "partners": [
            {
                "key": key,
                "name": names[key],
                "id": str(pid),
                "records": records,
                "created_records": created,
                "client_id": clients[key].name,
                "client_secret": clients[key].secret,
            }
            for key, (pid, records, created) in partners.items()
        ],
        "partnerships": [
            {
                "id": str(p.id),
                "members": [by_id[m.partner_id] for m in p.members],
                "purposes": list(p.purposes),
                "min_audience": p.min_audience,
                "status": p.status,
            }
            for p in partnerships
        ],
        "offer": {
            "id": str(offer.id),
            "title": offer.title,
            "status": offer.status,
            "audience_sizes": {
                by_id[UUID(pid)]: size for pid, size in dict(offer.audience_sizes).items()
            },
            "holdout": offer.holdout,
            "control_sizes": {
                by_id[UUID(pid)]: size for pid, size in dict(offer.control_sizes or {}).items()
            },
            "members": list(OFFER_POINTS),
        },
        "reward_events": events,
        "jobs": jobs,
        "seconds": stages.seconds,
        "cpu_seconds": stages.cpu_seconds,
    }
