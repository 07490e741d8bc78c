"""The committed horizon (hub.core.horizon) on PostgreSQL: the reader never makes a new
inserter wait behind it, and it never counts an id a transaction still in flight drew.

Found by the soak (issue 19): the reader queued for the stream's exclusive lock, and every
request inserting into the stream after that queued behind it until the slowest one in flight
finished (a 1,000-event request, or a bulk upload's apply holding the consent stream). It then
tried the lock for a while before queueing, which still queued under a steady stream of
inserters (the soak's top lock wait); now it takes no lock at all."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy import column, table
from sqlalchemy.ext.asyncio import async_sessionmaker

from hub.core import horizon
from hub.core.db import create_hub_async_engine
from tests.conftest import PG_URL, create_pg_database, drop_pg_database

pytestmark = pytest.mark.skipif(not PG_URL, reason="the horizon is PostgreSQL's: set it")

STREAM = 0x5445_5354  # a key of this test's own
PROBE = table("probe", column("id"))


@pytest.fixture
def database() -> Iterator[str]:
    url = create_pg_database()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE probe (id bigint PRIMARY KEY)")
    try:
        yield url
    finally:
        drop_pg_database(url)


def inserter(url: str, probe_id: int) -> psycopg.Connection[tuple[object, ...]]:
    """A transaction in flight: it holds the stream's shared lock and drew ``probe_id``."""
    conn = psycopg.connect(url)
    conn.execute("SET lock_timeout = '1s'")  # a queued inserter fails instead of hanging
    conn.execute("SELECT pg_advisory_xact_lock_shared(%s)", (STREAM,))
    conn.execute("INSERT INTO probe VALUES (%s)", (probe_id,))
    return conn


def horizon_of(url: str, **options: float) -> int | None:
    async def read() -> int | None:
        engine = create_hub_async_engine(url)
        try:
            return await horizon.committed_horizon(
                async_sessionmaker(engine), STREAM, PROBE.c.id, **options
            )
        finally:
            await engine.dispose()

    return asyncio.run(read())


def test_a_new_inserter_never_waits_behind_the_reader(database: str) -> None:
    slow = inserter(database, 1)
    found: list[int | None] = []
    reader = threading.Thread(target=lambda: found.append(horizon_of(database)))
    reader.start()
    try:
        # The old reader queued for the lock after 2 s of trying; this one must never queue:
        # newcomers keep inserting (each would fail after 1 s behind a queued request) for
        # longer than that while the slow one stays in flight.
        for probe_id in range(2, 9):
            reader.join(timeout=0.5)
            assert reader.is_alive()
            newcomer = inserter(database, probe_id)
            newcomer.commit()
            newcomer.close()
        assert found == []  # id 1 is still in flight: no horizon yet
    finally:
        slow.commit()
        slow.close()
    reader.join(timeout=10)
    assert found == [8]


def test_the_horizon_stops_below_an_id_still_in_flight(database: str) -> None:
    """An id committed above one still in flight is not read past while it is in flight: the
    horizon is what was committed when the reader started, once the slow one has ended."""
    done = inserter(database, 1)
    done.commit()
    done.close()
    slow = inserter(database, 2)
    quick = inserter(database, 3)
    quick.commit()
    quick.close()
    found: list[int | None] = []
    reader = threading.Thread(target=lambda: found.append(horizon_of(database)))
    reader.start()
    reader.join(timeout=0.5)
    assert found == []  # id 2 in flight, id 3 committed: 3 is no horizon yet
    late = inserter(database, 4)  # comes after the reader looked: not waited for
    slow.commit()
    slow.close()
    reader.join(timeout=10)
    try:
        assert found == [3]  # the second look sees id 4 in flight, so it stays at 3
    finally:
        late.rollback()
        late.close()
    assert horizon_of(database) == 3  # id 4 was abandoned


def test_the_consent_stream_gives_up_without_queueing(database: str) -> None:
    apply = inserter(database, 5)  # a bulk upload's apply holds the stream throughout
    try:
        assert horizon_of(database, patience_seconds=0.3) == -1
        newcomer = inserter(database, 6)
        newcomer.commit()
        newcomer.close()
    finally:
        apply.commit()
        apply.close()
    assert horizon_of(database, patience_seconds=0.3) == 6
