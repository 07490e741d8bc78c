"""The app factory: plugins, routers, middleware, exception handlers, background refresh."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import structlog
from litestar import Litestar, Request
from litestar.datastructures import State
from litestar.di import Provide
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.types import ControllerRouterHandler
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from hub import wiring
from hub.console.router import (
    CONSOLE_PUBLIC_PREFIX,
    console_router,
    console_static_files,
    console_template_config,
)
from hub.core.audit_controller import AuditController
from hub.core.auth import ClientRateLimiter, TokenVerifier
from hub.core.db import (
    create_hub_async_engine,
    drop_after_commit,
    is_sqlite,
    run_after_commit,
    sync_sessionmaker,
    writing,
)
from hub.core.deps import COMMON_DEPENDENCIES
from hub.core.errors import EXCEPTION_HANDLERS
from hub.core.keyring import load_keyring
from hub.core.logging import SAFE_METHODS, configure_logging
from hub.core.memory import release_free_memory, tune_allocator
from hub.core.metrics import metrics
from hub.core.openapi_pages import render_plugins
from hub.core.request import RequestMiddleware
from hub.core.responses import HubResponse
from hub.core.revocations import RevocationCache, purge_expired
from hub.core.secrets import SecretHasher
from hub.core.stalls import watching
from hub.jobs.controller import JobController
from hub.jobs.registry import job_specs
from hub.jobs.scheduler import JobScheduler
from hub.oauth.controller import OAuthController
from hub.oauth.server import HubAuthorizationServer
from hub.settings import Settings, load_settings
from hub.system import index, live, ready
from matching.cluster import close_clients
from matching.controller import OfferController, OverlapController
from matching.engine import warm_up as engine_warm_up
from matching.offer_arms import reconcile_active_offers
from matching.overlap import OverlapService
from matching.patches import ArrayPatcher
from matching.results import OfferResultsService
from partners.identifiers.controller import IdentifierController
from partners.identifiers.crypto import IdentifierCrypto
from partners.identifiers.uploads.controller import UploadController
from partners.identifiers.uploads.processor import UploadProcessor
from partners.identifiers.uploads.spool import remove_abandoned_bodies
from partners.me import me, me_cache
from partners.partners.controller import PartnerController
from partners.partnerships.controller import PartnershipController
from partners.rewards.controller import RewardController
from partners.rewards.statements import SettlementController
from partners.webhooks.controller import WebhookController

log = structlog.get_logger("hub.app")
# How often a serving process hands its free heap back to the system (malloc_trim).
TRIM_SECONDS = 60.0
# The admin console authenticates with its own session cookie (hub/console), never a token.
SCHEMA_PATH = "/schema"
PUBLIC_PREFIXES = (
    "/health/",
    "/metrics",
    SCHEMA_PATH,
    "/oauth/",
    "/.well-known/",
    CONSOLE_PUBLIC_PREFIX,
)
PUBLIC_PATHS = frozenset({"/"})  # the index, which points to /schema and /admin
PURGE_EVERY_SECONDS = 300


def server_options(settings: Settings) -> dict[str, Any]:
    """How the ASGI server treats proxy headers: X-Forwarded-For and X-Forwarded-Proto are
    believed only from ``server.forwarded_allow_ips`` (none by default), so no client can
    pick the address that rate limits, sign-in throttling and the audit log see."""
    allowed = settings.server.forwarded_allow_ips
    return {"proxy_headers": bool(allowed), "forwarded_allow_ips": list(allowed) or None}


async def provide_db_session(
    state: State, request: Request[Any, Any, Any]
) -> AsyncIterator[AsyncSession]:
    """The request owns the transaction: it commits once, after the handler succeeded.

    This runs before the response is sent, so a failed commit becomes an error response rather
    than a success for something that was not stored (advanced-alchemy's autocommit handler
    would log and swallow it). A handler that raises rolls everything back.

    Reads (GET/HEAD) on PostgreSQL run in autocommit: no BEGIN and COMMIT round trips, each
    statement sees committed data. Nothing a read does needs a multi-statement snapshot.

    Work the handler arranged for after the commit (``hub.core.db.after_commit``: a consent
    change's arrays) runs here too, so the answer is sent after it.
    """
    async with state.session_maker() as session:
        if request.method in SAFE_METHODS and state.database_is_postgres:
            await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
        try:
            yield session
        except BaseException:
            drop_after_commit(session)
            await session.rollback()
            raise
        await session.commit()
        await run_after_commit(session)


async def _refresh_forever(app: Litestar) -> None:
    state = app.state
    interval = state.settings.oauth.revocation_poll_seconds
    next_purge = 0.0
    while True:
        try:
            async with state.session_maker() as session:
                await state.revocations.refresh(session)
            state.keyring.reload_if_changed()
            if time.monotonic() >= next_purge:
                # Rows of expired tokens are useless; keep the table (and every reload) small.
                with writing():
                    async with state.session_maker() as session:
                        await purge_expired(session)
                        await session.commit()
                next_purge = time.monotonic() + PURGE_EVERY_SECONDS
        except Exception:
            log.warning("revocation refresh failed", exc_info=True)
        await asyncio.sleep(interval)


@contextlib.asynccontextmanager
async def upload_processing(app: Litestar) -> AsyncIterator[None]:
    """Bulk uploads are processed in this process unless configured otherwise."""
    remove_abandoned_bodies(app.state.settings.spool_dir)  # partial bodies of a crash
    processor: UploadProcessor = app.state.upload_processor
    if not app.state.settings.uploads.process_in_serve:
        yield
        return
    task = asyncio.create_task(processor.run_forever())
    try:
        yield
    finally:
        processor.stop()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _maintain_arrays_forever(app: Litestar) -> None:
    """Delete stale per-partner arrays (erasure reaches them) and shrink active offers'
    audiences after consent withdrawals and erasures."""
    state = app.state
    trimmed = time.monotonic()
    while True:
        await asyncio.sleep(state.settings.matching.maintenance_seconds)
        try:
            for partner_id in await asyncio.to_thread(state.array_cache.discard_stale):
                await state.array_cache.get(partner_id)  # rebuilt while nobody waits for it
            await reconcile_active_offers(state.session_maker, state.array_cache)
        except Exception:
            log.warning("matching maintenance failed", exc_info=True)
        if time.monotonic() - trimmed >= TRIM_SECONDS:
            # What requests freed (event bodies, answers, patches' temporaries) goes back to
            # the system, not only after builds and applies.
            await asyncio.to_thread(release_free_memory)
            trimmed = time.monotonic()


@contextlib.asynccontextmanager
async def matching_maintenance(app: Litestar) -> AsyncIterator[None]:
    warm = asyncio.create_task(asyncio.to_thread(engine_warm_up))  # JIT cache, off the loop
    task = asyncio.create_task(_maintain_arrays_forever(app))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await warm
        app.state.read_engine.dispose()
        close_clients()


@contextlib.asynccontextmanager
async def loop_watch(app: Litestar) -> AsyncIterator[None]:
    async with watching(app.state.settings.logging.stall_seconds):
        yield


@contextlib.asynccontextmanager
async def job_scheduling(app: Litestar) -> AsyncIterator[None]:
    """Scheduled jobs run in this process when configured (``hub serve`` without
    ``--no-worker``); the jobs' database leases keep them single across processes."""
    state = app.state
    if not state.settings.jobs.run_in_serve:
        yield
        return
    scheduler = JobScheduler.create(
        state.session_maker, state.settings, state.keyring, state.identifier_crypto
    )
    scheduler.start()
    try:
        yield
    finally:
        await scheduler.stop()


@contextlib.asynccontextmanager
async def background_refresh(app: Litestar) -> AsyncIterator[None]:
    async with app.state.session_maker() as session:
        await app.state.revocations.refresh(session)
    task = asyncio.create_task(_refresh_forever(app))
    # Everything built at start-up lives as long as the process: keep it out of the cyclic
    # collector's full passes, which otherwise pause requests for tens of milliseconds.
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await app.state.engine.dispose()
        app.state.sync_engine.dispose()


def create_app(
    settings: Settings | None = None,
    *,
    extra_route_handlers: Sequence[ControllerRouterHandler] = (),
) -> Litestar:
    settings = settings or load_settings()
    tune_allocator()  # each serving process (uvicorn's workers are new interpreters)
    configure_logging(settings.logging.level, settings.logging.json)
    keyring = load_keyring(settings.keyring_file, settings.keyring.inline)
    revocations = RevocationCache()
    hasher = SecretHasher(
        settings.oauth.secret_hash_time_cost, settings.oauth.secret_hash_memory_kib
    )
    sync_engine = wiring.sync_engine(settings)
    engine = create_hub_async_engine(
        settings.database_url,
        echo=settings.database.echo,
        pool_size=settings.database.pool_size,
        max_overflow=settings.database.max_overflow,
        pool_timeout=settings.database.pool_timeout_seconds,
        busy_timeout_ms=settings.database.sqlite_busy_timeout_ms,
    )

    session_maker = async_sessionmaker(engine, expire_on_commit=False)
    verifier = TokenVerifier(
        keyring,
        revocations,
        issuer=settings.oauth.issuer,
        audience=settings.oauth.resource,
        leeway_seconds=settings.oauth.clock_leeway_seconds,
    )
    rate_limiter = ClientRateLimiter(settings.limits.requests_per_minute, settings.limits.burst)
    identifier_crypto = IdentifierCrypto(keyring)
    array_cache = wiring.array_cache(settings, identifier_crypto)
    state = State(
        {
            "settings": settings,
            "keyring": keyring,
            "revocations": revocations,
            "identifier_crypto": identifier_crypto,
            "me_cache": me_cache(settings.oauth.revocation_poll_seconds),
            "secret_hasher": hasher,
            "sync_engine": sync_engine,
            "database_is_postgres": not is_sqlite(settings.database_url),
            "engine": engine,
            "session_maker": session_maker,
            "upload_processor": wiring.upload_processor(
                settings, session_maker, sync_engine, identifier_crypto, array_cache
            ),
            "read_engine": array_cache.engine,
            "array_cache": array_cache,
            "array_patcher": ArrayPatcher(array_cache),
            "job_specs": job_specs(settings),
            "overlap_service": OverlapService(session_maker, array_cache, settings.matching),
            "offer_results": OfferResultsService(
                session_maker,
                array_cache,
                settings.matching.results_points_cap,
                settings.matching.results_amount_cap_minor,
                settings.matching.max_breakdown_answers,
            ),
            "verifier": verifier,
            "rate_limiter": rate_limiter,
            "oauth_server": HubAuthorizationServer(
                settings, keyring, sync_sessionmaker(sync_engine), hasher, revocations
            ),
        }
    )
    return Litestar(
        route_handlers=[
            index,
            live,
            ready,
            metrics,
            OAuthController,
            me,
            PartnerController,
            PartnershipController,
            IdentifierController,
            UploadController,
            OverlapController,
            OfferController,
            RewardController,
            SettlementController,
            AuditController,
            JobController,
            WebhookController,
            console_router(),
            console_static_files(),
            *extra_route_handlers,
        ],
        middleware=[
            # One plain ASGI middleware: request id, authentication and rate limit, metrics,
            # access log; and for requests with a body the 415, JSON body and idempotency
            # checks (hub/core/request.py).
            DefineMiddleware(
                RequestMiddleware,
                verifier=verifier,
                rate_limiter=rate_limiter,
                public_prefixes=PUBLIC_PREFIXES,
                public_paths=PUBLIC_PATHS,
                access_log=settings.logging.access_log,
            ),
        ],
        dependencies={**COMMON_DEPENDENCIES, "db_session": Provide(provide_db_session)},
        exception_handlers=EXCEPTION_HANDLERS,
        response_class=HubResponse,  # plain JSON answers skip Litestar's header machinery
        logging_config=None,  # configure_logging owns it: every line JSON, no second format
        template_config=console_template_config(),
        request_max_body_size=settings.server.max_json_body_bytes,
        state=state,
        # Exited in reverse: uploads stop first, so an apply in progress rolls back before
        # the others' shutdown waits on SQLite's write lock it held.
        lifespan=[
            loop_watch,
            background_refresh,
            matching_maintenance,
            job_scheduling,
            upload_processing,
        ],
        openapi_config=OpenAPIConfig(
            title="Coalition hub API",
            version="1.0.0",
            description="Consented overlaps, joint offers and coalition rewards between brands. "
            "Authenticate with OAuth 2.0 client credentials at /oauth/token.",
            path=SCHEMA_PATH,
            render_plugins=render_plugins(PUBLIC_PREFIXES, SCHEMA_PATH),
        ),
        debug=False,
    )
