"""On both databases: rows written before migration 0017 still verify after it, and the
database refuses UPDATE, DELETE (and on PostgreSQL TRUNCATE) on the audit log and its index."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import Engine, bindparam, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from hub.core import audit
from hub.core.audit import GENESIS, AuditConcern, AuditEntry, AuditEvent, chain_hash
from hub.core.db import create_hub_sync_engine
from hub.migrate import upgrade
from tests.conftest import drop_pg_database, make_database

LEGACY = [
    AuditEvent(actor="cli:admin", action="partner.onboarded", target_type="partner", target_id="p"),
    AuditEvent(
        actor="client:cl_a",
        partner_id="0b5f2c4e-4a0e-4f57-9a55-1c1f3e0e9c01",
        action="identifiers.uploaded",
        target_type="partner",
        details={"accepted": 3},
    ),
]
INSERT_LEGACY = text(
    "INSERT INTO audit_log (seq, at, actor, partner_id, action, target_type, target_id, "
    "details, request_id, prev_hash, hash) VALUES (:seq, :at, :actor, :partner_id, :action, "
    ":target_type, :target_id, :details, :request_id, :prev_hash, :hash)"
).bindparams(bindparam("at", type_=DateTimeUTC(timezone=True)))  # stored as the hub stores it


@pytest.fixture(scope="module")
def engine(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """A database with two rows written as the hub wrote them before 0017, then migrated."""
    url = make_database(backend, Path(tmp_path_factory.mktemp(f"audit-{backend}")))
    upgrade(url, "0016")
    engine = create_hub_sync_engine(url)
    prev = GENESIS
    with engine.begin() as conn:
        for seq, event in enumerate(LEGACY, start=1):
            at = datetime(2026, 11, 1, 12, 0, seq, 250_000, tzinfo=UTC)
            digest = chain_hash(prev, seq, at, event)
            row = {f: getattr(event, f) for f in ("actor", "partner_id", "action", "target_type")}
            conn.execute(
                INSERT_LEGACY,
                {
                    **row,
                    "seq": seq,
                    "at": at,
                    "target_id": event.target_id,
                    "details": json.dumps(event.details),
                    "request_id": None,
                    "prev_hash": prev,
                    "hash": digest,
                },
            )
            prev = digest
    upgrade(url)
    yield engine
    engine.dispose()
    if backend == "postgres":
        drop_pg_database(url)


def test_rows_written_before_concerns_still_verify_with_new_rows_after_them(
    engine: Engine,
) -> None:
    with Session(engine) as session, session.begin():
        audit.append_sync(
            session, AuditEvent(actor="system", action="job.succeeded", target_type="job")
        )
    with Session(engine) as session:
        rows = session.scalars(select(AuditEntry).order_by(AuditEntry.seq)).all()
        report = audit.verify_chain(rows)
        assert report.ok, report.problems
        assert [r.concerns for r in rows] == [None, None, []]
        # The index lets the acting partner of an older row read it.
        indexed = session.execute(select(AuditConcern.partner_id, AuditConcern.seq)).all()
        assert indexed == [(LEGACY[1].partner_id, 2)]


@pytest.mark.parametrize("table", ["audit_log", "audit_log_concerns"])
@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE {table} SET seq = seq",
        "DELETE FROM {table}",
        "DELETE FROM {table} WHERE seq = 2",
    ],
)
def test_the_database_refuses_to_change_the_log(engine: Engine, table: str, statement: str) -> None:
    with engine.connect() as conn:
        before = conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
    with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
        conn.execute(text(statement.format(table=table)))
    with engine.connect() as conn:
        assert conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one() == before > 0


def test_postgresql_refuses_to_truncate_the_log(engine: Engine) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite has no TRUNCATE (its DELETE without WHERE is refused above)")
    for table in ("audit_log_concerns", "audit_log"):
        with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
            conn.execute(text(f"TRUNCATE {table} CASCADE"))
