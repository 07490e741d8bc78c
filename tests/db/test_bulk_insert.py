"""hub.core.bulk.insert_rows on both databases: ids in the rows' order and equal to what is
stored, JSON and NULL values kept, a constraint violation is SQLAlchemy's IntegrityError
(what the request layer turns into a 409) and leaves nothing, and a column whose default
lives in Python must be given (COPY would leave it NULL)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import BigInteger, Column, MetaData, String, Table, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import async_sessionmaker

from hub.core.bulk import insert_rows
from hub.core.db import JsonType, create_hub_async_engine
from partners.identifiers.models import big_pk
from tests.conftest import drop_pg_database, make_database

METADATA = MetaData()
PROBE = Table(
    "bulk_probe",
    METADATA,
    Column("id", big_pk(), primary_key=True, autoincrement=True),
    Column("name", String(20), unique=True, nullable=False),
    Column("doc", JsonType, nullable=True),
    Column("amount", BigInteger, nullable=True),
    Column("at", DateTimeUTC(timezone=True), default=lambda: datetime.now(UTC)),
)


@pytest.fixture
def database(backend: str, tmp_path: Path) -> Iterator[str]:
    url = make_database(backend, tmp_path)
    try:
        yield url
    finally:
        if backend == "postgres":
            drop_pg_database(url)


def run(url: str, work: Any) -> Any:
    async def main() -> Any:
        engine = create_hub_async_engine(url)
        try:
            async with engine.begin() as conn:
                await conn.run_sync(METADATA.create_all)
            sessions = async_sessionmaker(engine, expire_on_commit=False)
            return await work(sessions)
        finally:
            await engine.dispose()

    return asyncio.run(main())


def rows(*names: str) -> list[dict[str, Any]]:
    at = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
    return [
        {"name": name, "doc": {"n": n, "tags": ["a"]} if n % 2 else None, "amount": n, "at": at}
        for n, name in enumerate(names)
    ]


def test_ids_come_back_in_the_rows_order_with_every_value_kept(database: str) -> None:
    async def work(sessions: async_sessionmaker[Any]) -> Any:
        async with sessions() as session:
            first = await insert_rows(session, PROBE, rows("a", "b", "c"), ids=True)
            second = await insert_rows(session, PROBE, rows("d", "e"), ids=True)
            await session.commit()
        async with sessions() as session:
            stored = (await session.execute(select(PROBE).order_by(PROBE.c.id))).all()
        return first, second, stored

    first, second, stored = run(database, work)
    assert len(set(first + second)) == 5
    assert first == sorted(first)
    assert second == sorted(second)
    assert [(r.id, r.name) for r in stored] == list(zip(first + second, "abcde", strict=True))
    by_name = {r.name: r for r in stored}
    assert by_name["b"].doc == {"n": 1, "tags": ["a"]}
    assert by_name["a"].doc is None
    assert by_name["c"].amount == 2
    assert by_name["e"].at == datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def test_a_constraint_violation_is_an_integrity_error_and_leaves_nothing(database: str) -> None:
    async def work(sessions: async_sessionmaker[Any]) -> Any:
        async with sessions() as session:
            await insert_rows(session, PROBE, rows("x"))
            await session.commit()
        async with sessions() as session:
            with pytest.raises(IntegrityError):
                await insert_rows(session, PROBE, rows("y", "x", "z"), ids=True)
            await session.rollback()
        async with sessions() as session:
            return sorted((await session.execute(select(PROBE.c.name))).scalars())

    assert run(database, work) == ["x"]


def test_a_python_side_default_must_be_given(database: str) -> None:
    async def work(sessions: async_sessionmaker[Any]) -> None:
        async with sessions() as session:
            with pytest.raises(ValueError, match=r"\['at'\]"):
                await insert_rows(session, PROBE, [{"name": "n", "doc": None, "amount": 1}])

    run(database, work)
