"""A finished upload's staging rows are cleared in short transactions (SQLite) or at once
(PostgreSQL), and only its own rows."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, insert, select

from hub.core.db import create_hub_sync_engine
from hub.migrate import upgrade
from partners.identifiers.uploads import staging
from partners.identifiers.uploads.staging import STAGING, clear_staging_in_batches
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
