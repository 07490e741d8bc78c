"""On both databases: an audit entry is chained when its transaction commits, not when it is
appended (hub/core/audit.py), so an audited writer holds the chain's lock for its commit alone.

What must hold: a rolled-back transaction or savepoint leaves no entry, a session closed
without committing leaves nothing behind for its next transaction, a writer never waits for an
entry appended in a transaction still open (PostgreSQL: it used to queue on the chain's lock
until that transaction ended), and many writers at once still make one unbroken chain."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, Integer, select, text, update
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from hub.core import audit
from hub.core.audit import AuditConcern, AuditEntry, AuditEvent
from hub.core.db import create_hub_sync_engine
from hub.migrate import upgrade
from tests.conftest import drop_pg_database, make_database


@pytest.fixture
def engine(backend: str, tmp_path: Path) -> Iterator[Engine]:
    url = make_database(backend, tmp_path)
    upgrade(url)
    engine = create_hub_sync_engine(url)
    yield engine
    engine.dispose()
    if backend == "postgres":
        drop_pg_database(url)


def _event(name: str, partner: str | None = None) -> AuditEvent:
    return AuditEvent(actor="system", action=name, target_type="test", partner_id=partner)


def _actions(engine: Engine) -> list[str]:
    with Session(engine) as session:
        rows = session.scalars(select(AuditEntry).order_by(AuditEntry.seq)).all()
        report = audit.verify_chain(rows)
        assert report.ok, report.problems
        return [r.action for r in rows]


def test_only_committed_entries_are_chained_and_in_commit_order(engine: Engine) -> None:
    with Session(engine) as session:
        audit.append_sync(session, _event("rolled.back"))
        session.execute(text("SELECT 1"))
        session.rollback()
        # A savepoint's entries go with it when it rolls back, and stay when it is released.
        audit.append_sync(session, _event("outer.before", "p1"))
        savepoint = session.begin_nested()
        audit.append_sync(session, _event("savepoint.rolled_back"))
        inner = session.begin_nested()
        audit.append_sync(session, _event("inner.of.rolled_back"))
        inner.commit()
        savepoint.rollback()
        with session.begin_nested():
            audit.append_sync(session, _event("savepoint.released", "p2"))
        audit.append_sync(session, _event("outer.after"))
        session.commit()
        # Closed without a commit: nothing of it reaches the session's next transaction.
        audit.append_sync(session, _event("closed.uncommitted"))
        session.close()
        audit.append_sync(session, _event("after.close"))
        session.commit()
    assert _actions(engine) == [
        "outer.before",
        "savepoint.released",
        "outer.after",
        "after.close",
    ]
    with Session(engine) as session:
        indexed = session.execute(
            select(AuditConcern.partner_id, AuditEntry.action).join(
                AuditEntry, AuditEntry.seq == AuditConcern.seq
            )
        ).all()
    assert sorted(indexed) == [("p1", "outer.before"), ("p2", "savepoint.released")]


def test_a_writer_does_not_wait_for_an_entry_of_a_transaction_still_open(
    engine: Engine, backend: str
) -> None:
    if backend != "postgres":
        pytest.skip("SQLite runs one writer at a time (BEGIN IMMEDIATE): there is no lock to skip")
    with Session(engine) as slow:
        audit.append_sync(slow, _event("slow.appended_first"))
        slow.execute(text("SELECT 1"))  # the slow writer's transaction is open
        with Session(engine) as quick:
            # Queueing on the chain's lock for longer than a second fails this commit.
            quick.execute(text("SET LOCAL lock_timeout = '1s'"))
            audit.append_sync(quick, _event("quick.committed_first"))
            quick.commit()
        slow.commit()
    assert _actions(engine) == ["quick.committed_first", "slow.appended_first"]


class _Scratch(DeclarativeBase):
    pass


class Counter(_Scratch):
    __tablename__ = "audit_test_counter"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    value: Mapped[int] = mapped_column(Integer)


def test_a_commit_waiting_for_a_row_does_not_hold_the_chain_s_lock(
    engine: Engine, backend: str
) -> None:
    """A commit's own unflushed changes are written before it takes the chain's lock: a
    commit that waits there for a row another writer holds must not keep that writer, whose
    commit needs the lock, waiting (a deadlock, one of them failed)."""
    if backend != "postgres":
        pytest.skip("SQLite runs one writer at a time (BEGIN IMMEDIATE): no row locks to wait on")
    _Scratch.metadata.create_all(engine)
    with Session(engine) as session, session.begin():
        session.add(Counter(id=1, value=0))
    holder = Session(engine)
    holder.execute(update(Counter).where(Counter.id == 1).values(value=Counter.value + 1))
    audit.append_sync(holder, _event("holder.of_the_row"))
    failures: list[BaseException] = []

    def wait_for_the_row() -> None:
        try:
            with Session(engine, autoflush=False) as waiter:
                counter = waiter.get(Counter, 1)
                assert counter is not None
                counter.value = 100  # written at the commit (no autoflush), waiting for the row
                audit.append_sync(waiter, _event("waiter.for_the_row"))
                waiter.commit()
        except BaseException as failed:  # noqa: BLE001 - reported below
            failures.append(failed)

    waiter = threading.Thread(target=wait_for_the_row)
    waiter.start()
    waiter.join(timeout=1.0)  # it waits for the row
    assert waiter.is_alive()
    holder.execute(text("SET LOCAL lock_timeout = '3s'"))
    holder.commit()  # needs the chain's lock
    holder.close()
    waiter.join(timeout=10)
    assert not failures, failures
    assert _actions(engine) == ["holder.of_the_row", "waiter.for_the_row"]
    with Session(engine) as session:
        assert session.scalar(select(Counter.value)) == 100


def test_many_writers_at_once_make_one_unbroken_chain(engine: Engine, backend: str) -> None:
    writers, each = (6, 20) if backend == "postgres" else (3, 10)
    failures: list[BaseException] = []

    def write(n: int) -> None:
        try:
            for i in range(each):
                with Session(engine) as session, session.begin():
                    audit.append_sync(session, _event(f"w{n}.{i}.a"))
                    audit.append_sync(session, _event(f"w{n}.{i}.b"))
        except BaseException as failed:  # noqa: BLE001 - reported by the test below
            failures.append(failed)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures
    actions = _actions(engine)
    assert sorted(actions) == sorted(
        f"w{n}.{i}.{x}" for n in range(writers) for i in range(each) for x in "ab"
    )
    # A transaction's entries are chained together, in the order they were appended.
    for first, second in zip(actions[::2], actions[1::2], strict=True):
        assert (first[-1], second[-1]) == ("a", "b")
        assert first[:-1] == second[:-1]
