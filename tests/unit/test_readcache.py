"""The read cache behind GET /v1/me: what it keeps, for how long, and what empties it."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from hub.core import readcache
from hub.core.db import Base
from hub.core.readcache import ReadCache
from hub.core.revocations import Revocation
from partners.partners.models import Partner


def test_an_entry_is_served_until_its_ttl_then_reloaded() -> None:
    cache: ReadCache[str, int] = ReadCache(ttl_seconds=0.2)
    loads = []

    async def load() -> int:
        loads.append(1)
        return len(loads)

    async def scenario() -> list[int]:
        first = await cache.get("a", load)
        second = await cache.get("a", load)
        await asyncio.sleep(0.25)
        third = await cache.get("a", load)
        return [first, second, third]

    assert asyncio.run(scenario()) == [1, 1, 2]


def test_a_load_that_overlapped_a_change_is_not_kept() -> None:
    cache: ReadCache[str, str] = ReadCache(ttl_seconds=60)

    async def stale_load() -> str:
        readcache.invalidate_all()  # a change commits while the load is running
        return "stale"

    async def fresh_load() -> str:
        return "fresh"

    async def scenario() -> tuple[str, str]:
        return await cache.get("a", stale_load), await cache.get("a", fresh_load)

    assert asyncio.run(scenario()) == ("stale", "fresh")


@pytest.mark.parametrize("commit", [True, False])
def test_committing_a_watched_model_empties_every_cache(tmp_path: Path, commit: bool) -> None:
    readcache.watch(Partner)
    engine = create_engine(f"sqlite:///{tmp_path / 'cache.db'}")
    Base.metadata.create_all(engine, tables=[Partner.__table__])  # type: ignore[list-item]
    before = readcache.generation()
    with Session(engine) as session:
        session.add(Partner(name="Brand", category="airline", status="active"))
        session.flush()
        assert readcache.generation() == before  # nothing is visible to others yet
        if commit:
            session.commit()
        else:
            session.rollback()
    assert (readcache.generation() > before) is commit
    engine.dispose()


def test_a_commit_that_touches_no_watched_model_keeps_the_caches(tmp_path: Path) -> None:
    readcache.watch(Partner)
    engine = create_engine(f"sqlite:///{tmp_path / 'cache.db'}")
    Base.metadata.create_all(engine, tables=[Revocation.__table__])  # type: ignore[list-item]
    before = readcache.generation()
    with Session(engine) as session:
        session.add(Revocation(kind="token", subject="jti-1", expires_at=int(time.time())))
        session.commit()
    assert readcache.generation() == before
    engine.dispose()


def test_concurrent_misses_share_one_load() -> None:
    cache: ReadCache[str, int] = ReadCache(ttl_seconds=60)
    loads = []

    async def slow_load() -> int:
        loads.append(1)
        await asyncio.sleep(0.05)
        return 7

    async def scenario() -> list[int]:
        return list(await asyncio.gather(*(cache.get("a", slow_load) for _ in range(20))))

    assert asyncio.run(scenario()) == [7] * 20
    assert len(loads) == 1


def test_a_failed_load_fails_its_waiters_and_is_not_kept() -> None:
    cache: ReadCache[str, int] = ReadCache(ttl_seconds=60)
    calls = []

    async def failing_then_ok() -> int:
        calls.append(1)
        await asyncio.sleep(0.01)
        if len(calls) == 1:
            raise RuntimeError("database down")
        return 3

    async def scenario() -> tuple[list[object], int]:
        first = await asyncio.gather(
            *(cache.get("a", failing_then_ok) for _ in range(3)), return_exceptions=True
        )
        return list(first), await cache.get("a", failing_then_ok)

    first, after = asyncio.run(scenario())
    assert all(isinstance(r, RuntimeError) for r in first)
    assert after == 3
    assert len(calls) == 2


def test_an_entry_read_near_its_end_is_reloaded_ahead_while_it_is_still_served() -> None:
    """Under steady traffic no request waits for a load: the entry read in the last quarter of
    its life is reloaded in the background, and the reader gets the current one at once."""
    cache: ReadCache[str, int] = ReadCache(ttl_seconds=2.0)  # wide margins for a busy machine
    loads: list[float] = []
    release = asyncio.Event()

    async def load() -> int:
        loads.append(time.monotonic())
        if len(loads) > 1:
            await release.wait()  # the reload takes as long as the test wants
        return len(loads)

    async def scenario() -> list[int | None]:
        seen = [await cache.get("a", load)]
        seen.append(cache.fresh("a", load))  # early in its life: served, no reload
        await asyncio.sleep(1.7)  # the last quarter: 1.5 to 2.0 s
        seen.append(cache.fresh("a", load))  # served at once; a reload starts
        seen.append(cache.fresh("a", load))  # the same: one reload at a time
        await asyncio.sleep(0)
        assert len(loads) == 2
        release.set()
        await asyncio.sleep(0.01)
        seen.append(cache.fresh("a", load))  # the reloaded entry
        await asyncio.sleep(0.5)  # past the first entry's end, within the second's
        seen.append(cache.fresh("a"))
        return seen

    assert asyncio.run(scenario()) == [1, 1, 1, 1, 2, 2]


def test_a_reload_ahead_never_extends_an_entry_past_its_life_nor_keeps_an_overlapped_load() -> None:
    cache: ReadCache[str, str] = ReadCache(ttl_seconds=1.0)

    async def first() -> str:
        return "first"

    async def overlapped() -> str:
        readcache.invalidate_all()  # a change commits while the reload runs
        return "stale"

    async def failing() -> str:
        raise RuntimeError("database down")

    async def scenario() -> list[str | None]:
        seen: list[str | None] = [await cache.get("a", first)]
        await asyncio.sleep(0.85)
        seen.append(cache.fresh("a", overlapped))  # served; its reload overlaps a change
        await asyncio.sleep(0.01)
        seen.append(cache.fresh("a"))  # the change emptied the cache; the reload is not kept
        seen.append(await cache.get("a", first))
        await asyncio.sleep(0.85)
        seen.append(cache.fresh("a", failing))  # a failed reload: served until its end
        await asyncio.sleep(0.3)
        seen.append(cache.fresh("a"))  # then gone
        return seen

    assert asyncio.run(scenario()) == ["first", "first", None, "first", "first", None]
