"""A finished upload's staging rows are cleared in short transactions (SQLite) or at once
(PostgreSQL), and only its own rows."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, insert, select, text

from hub.core.db import create_hub_sync_engine
from hub.migrate import upgrade
from partners.identifiers.uploads import staging
from partners.identifiers.uploads.staging import (
    STAGING,
    clear_staging_in_batches,
    index_staged,
    parts_of,
)
from tests.conftest import drop_pg_database, make_database


@pytest.fixture(scope="module")
def database(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = make_database(backend, Path(tmp_path_factory.mktemp(f"staging-{backend}")))
    upgrade(url)
    yield url
    if backend == "postgres":
        drop_pg_database(url)


def test_only_the_upload_s_rows_are_cleared_batch_by_batch(
    database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(staging, "CLEAR_BATCH_ROWS", 7)
    done, other = uuid.uuid4(), uuid.uuid4()
    rows = [
        {
            "stage_key": f"{upload}.{attempt}",
            "row": i,
            "refused": False,
            "consents": 0,
        }
        for i in range(60)
        for upload, attempt in ((done, 1), (other, 1), (done, 2))  # interleaved ids
    ]
    engine = create_hub_sync_engine(database)
    try:
        with engine.begin() as connection:
            connection.execute(insert(STAGING), rows)
        assert clear_staging_in_batches(engine, done) == 120
        assert clear_staging_in_batches(engine, done) == 0
        with engine.connect() as connection:
            left = connection.execute(
                select(STAGING.c.stage_key, func.count()).group_by(STAGING.c.stage_key)
            ).all()
        assert left == [(f"{other}.1", 60)]
    finally:
        engine.dispose()


def _indexes(engine: Engine) -> set[str]:
    with engine.connect() as connection:
        if engine.dialect.name == "sqlite":
            found = connection.execute(
                text("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = :t"),
                {"t": "identifier_staging"},
            )
        else:
            found = connection.execute(
                text("SELECT indexname FROM pg_indexes WHERE tablename = :t"),
                {"t": "identifier_staging"},
            )
        return {name for (name,) in found}


def test_an_upload_s_own_indexes_are_built_once_staged_and_dropped_with_its_rows(
    database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite: an upload's staged rows get indexes by key of their own once staged (not one
    shared index kept row by row while staging), in parts of INDEX_PART_ROWS ids; a lookup by
    key of a part uses that part's index, every row is found in exactly one part, and the
    indexes go before the rows do, leaving other uploads' indexes. PostgreSQL: none."""
    monkeypatch.setattr(staging, "INDEX_PART_ROWS", 15)
    done, other = uuid.uuid4(), uuid.uuid4()
    keys = {upload: [bytes([n]) * 32 for n in range(40)] for upload in (done, other)}
    rows = [
        {
            "stage_key": f"{upload}.1",
            "row": n,
            "refused": False,
            "id_type": 1,
            "match_key": key,
            "consents": 0,
        }
        for upload in (done, other)
        for n, key in enumerate(keys[upload])
    ]
    engine = create_hub_sync_engine(database)
    try:
        before = _indexes(engine)
        with engine.begin() as connection:
            connection.execute(insert(STAGING), rows)
            low = connection.execute(
                select(func.min(STAGING.c.id)).where(STAGING.c.stage_key == f"{done}.1")
            ).scalar_one()
        for upload in (done, other, done):  # again: nothing new
            index_staged(engine, f"{upload}.1")
        built = _indexes(engine) - before
        with engine.connect() as connection:
            parts = parts_of(connection, STAGING, f"{done}.1")
        if engine.dialect.name != "sqlite":
            assert built == set()
            assert len(parts) == 1
        else:
            ours = sorted(name for name in built if done.hex in name)
            assert ours == sorted(
                f"ix_identifier_staging_{done.hex}_1_{first}_{min(first + 14, low + 39)}"
                for first in range(low, low + 40, 15)
            )
            assert len(built) == 6  # three parts each
            assert len(parts) == 3
        found: list[int] = []
        for n in (0, 7, 20, 39):
            for part in parts:
                lookup = select(STAGING.c.row).where(
                    part, STAGING.c.id_type == 1, STAGING.c.match_key == keys[done][n]
                )
                with engine.connect() as connection:
                    found += connection.execute(lookup).scalars().all()
                    if engine.dialect.name == "sqlite":
                        compiled = lookup.compile(
                            engine, compile_kwargs={"render_postcompile": True}
                        )
                        plan = " ".join(
                            str(step[-1])
                            for step in connection.exec_driver_sql(
                                f"EXPLAIN QUERY PLAN {compiled}", tuple(compiled.params.values())
                            )
                        )
                        assert f"ix_identifier_staging_{done.hex}_1_" in plan, plan
        assert found == [0, 7, 20, 39]  # each in exactly one part, none of the other upload
        assert clear_staging_in_batches(engine, done) == 40
        left = _indexes(engine) - before
        if engine.dialect.name == "sqlite":
            assert len(left) == 3
            assert all(other.hex in name for name in left)
        assert clear_staging_in_batches(engine, other) == 40
        assert _indexes(engine) == before
    finally:
        engine.dispose()
