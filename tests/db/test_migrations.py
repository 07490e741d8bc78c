"""Migrations run from empty on both databases and match the models exactly."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from hub.core.db import create_hub_sync_engine
from hub.migrate import MIGRATIONS, alembic_config, current, upgrade
from hub.models import metadata
from tests.conftest import drop_pg_database, make_database


@pytest.fixture(scope="module")
def empty_database(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = make_database(backend, Path(tmp_path_factory.mktemp(f"migrations-{backend}")))
    yield url
    if backend == "postgres":
        drop_pg_database(url)


def test_migrations_run_from_empty_and_again(empty_database: str) -> None:
    assert current(empty_database) is None
    upgrade(empty_database)
    head = ScriptDirectory.from_config(alembic_config(empty_database)).get_current_head()
    assert current(empty_database) == head
    upgrade(empty_database)  # idempotent
    assert current(empty_database) == head


def declared_for(dialect: str) -> Any:
    """Leave out model indexes declared for another dialect only (``Index.ddl_if``), which
    autogenerate does not honour by itself."""

    def include(obj: Any, name: Any, type_: str, reflected: bool, compare_to: Any) -> bool:
        condition = getattr(obj, "_ddl_if", None)
        if type_ == "index" and not reflected and condition is not None:
            return condition.dialect in (None, dialect)
        return True

    return include


# SQLite cannot reflect the expression index on lower(name); it is checked by behaviour in
# tests/api/test_concurrency_and_edges.py (test_the_database_refuses_a_name_differing_only_in_case).
@pytest.mark.filterwarnings("ignore:.*expression-based index:UserWarning")
@pytest.mark.filterwarnings("ignore:Skipped unsupported reflection of expression-based index")
def test_the_migrated_schema_matches_the_models(empty_database: str) -> None:
    upgrade(empty_database)
    engine = create_hub_sync_engine(empty_database)
    try:
        with engine.connect() as conn:
            # SQLite reflects custom types (GUID, DateTimeUTC) only by affinity: compare
            # tables, columns, indexes and constraints there; types too on PostgreSQL.
            compare_type = conn.dialect.name == "postgresql"
            context = MigrationContext.configure(
                conn,
                opts={
                    "compare_type": compare_type,
                    "include_object": declared_for(conn.dialect.name),
                },
            )
            diff = compare_metadata(context, metadata)
    finally:
        engine.dispose()
    assert diff == []


def test_migration_files_are_linear() -> None:
    script = ScriptDirectory(str(MIGRATIONS))
    assert len(script.get_heads()) == 1
