"""The parts every hub process that touches identifiers builds the same way from its settings:
``hub serve`` (``hub.app``) and ``hub worker`` (``hub.jobs.scheduler``)."""

from __future__ import annotations

from sqlalchemy import Engine
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from hub.core.db import create_hub_sync_engine
from hub.settings import Settings
from matching.loader import ArrayCache
from partners.identifiers.crypto import IdentifierCrypto
from partners.identifiers.uploads.processor import UploadProcessor


def sync_engine(settings: Settings) -> Engine:
    """The synchronous writer's engine (bulk applies, the console's sign-in...)."""
    return create_hub_sync_engine(
        settings.database_url, busy_timeout_ms=settings.database.sqlite_busy_timeout_ms
    )


def array_cache(settings: Settings, crypto: IdentifierCrypto) -> ArrayCache:
    """The partners' match-key arrays, on a reading engine of their own (``.engine``): the
    loader's builds run on threads."""
    read_engine = create_hub_sync_engine(
        settings.database_url,
        busy_timeout_ms=settings.database.sqlite_busy_timeout_ms,
        pool_size=3,
        writer=False,
    )
    return ArrayCache(
        read_engine, crypto, settings.array_dir, max_in_memory=settings.matching.cache_partners
    )


def upload_processor(
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    writer: Engine,
    crypto: IdentifierCrypto,
    arrays: ArrayCache,
) -> UploadProcessor:
    """Bulk uploads, with arrays built by the apply where every process opens them."""
    return UploadProcessor(
        sessions, writer, crypto, settings.uploads, settings.spool_dir, arrays=arrays
    )
