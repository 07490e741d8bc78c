"""The revocations table: rows outlive their token's leeway, then are purged."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker

from hub.core.db import create_hub_async_engine, writing
from hub.core.revocations import (
    RETENTION_PAST_EXP,
    TOKEN,
    RevocationCache,
    purge_expired,
    revoke,
)
from hub.migrate import upgrade
from tests.conftest import drop_pg_database, make_database


@pytest.fixture(scope="module")
def database(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = make_database(backend, Path(tmp_path_factory.mktemp(f"revocations-{backend}")))
    upgrade(url)
    yield url
    if backend == "postgres":
        drop_pg_database(url)


def test_expired_token_rows_are_kept_through_the_leeway_then_purged(database: str) -> None:
    async def scenario() -> tuple[set[str], int, set[str]]:
        engine = create_hub_async_engine(database)
        sessions = async_sessionmaker(engine, expire_on_commit=False)
        now = int(time.time())
        try:
            with writing():
                async with sessions() as session:
                    await revoke(session, TOKEN, "just-expired", expires_at=now - 10)
                    await revoke(
                        session, TOKEN, "long-gone", expires_at=now - 10 * RETENTION_PAST_EXP
                    )
                    await session.commit()
            cache = RevocationCache()
            async with sessions() as session:
                await cache.refresh(session)
            before = set(cache.tokens)
            with writing():
                async with sessions() as session:
                    purged = await purge_expired(session)
                    await session.commit()
            async with sessions() as session:
                await cache.refresh(session)
            return before, purged, set(cache.tokens)
        finally:
            await engine.dispose()

    before, purged, after = asyncio.run(scenario())
    # A token just past exp may still verify within the leeway: it stays refused.
    assert before == {"just-expired"}
    assert purged == 1
    assert after == {"just-expired"}
