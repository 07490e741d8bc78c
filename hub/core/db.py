"""Database plumbing: the declarative base, URL handling, and engines for both databases.

SQLite runs in WAL mode with a busy timeout. Its transactions start with ``BEGIN IMMEDIATE``
when the unit of work intends to write (``write_intent``), so two writers queue on the busy
timeout instead of failing with SQLITE_BUSY when a read transaction tries to upgrade.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from advanced_alchemy.base import orm_registry
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

write_intent: contextvars.ContextVar[bool] = contextvars.ContextVar("write_intent", default=False)


class Base(DeclarativeBase):
    """Base of every table of the hub; shares advanced-alchemy's registry and naming rules."""

    registry = orm_registry
    __abstract__ = True


metadata = orm_registry.metadata


def unavailable_reason(exc: BaseException) -> str | None:
    """Why the database could not serve a unit of work that is worth retrying later -- SQLite
    busy past its wait (a long write holding the lock), PostgreSQL unreachable, or no free
    connection in this process's pool -- as the driver's error name; None for anything else
    (SQLite's own mistakes, such as a missing table, share the class: those are bugs)."""
    if isinstance(exc, PoolTimeout):
        return "PoolTimeout"
    if not isinstance(exc, OperationalError):
        return None
    if type(exc.orig).__module__.startswith("sqlite3"):
        text = str(exc.orig)
        if "locked" not in text and "busy" not in text:
            return None
    return type(exc.orig).__name__


# A long job writing SQLite in many short transactions pauses this long after each one: a
# writer waiting on SQLite's busy handler retries every 100 ms at most, and would not see the
# lock free between two transactions that follow each other at once (measured: a concurrent
# writer waited 2 s behind a sliced apply whose transactions took at most 0.7 s).
SQLITE_WRITER_GAP_SECONDS = 0.12
# PostgreSQL: the extra connections of a synchronous pool, and how long its users wait for one.
SYNC_POOL_OVERFLOW = 2
POOL_TIMEOUT_SECONDS = 10.0


def leave_write_lock(engine: Engine) -> None:
    """After a transaction of a long job on SQLite: let waiting writers take the lock."""
    if engine.dialect.name == "sqlite":
        time.sleep(SQLITE_WRITER_GAP_SECONDS)


@contextmanager
def writing() -> Iterator[None]:
    """Mark the current unit of work as a writer (SQLite takes the write lock up front)."""
    token = write_intent.set(True)
    try:
        yield
    finally:
        write_intent.reset(token)


@contextmanager
def reading() -> Iterator[None]:
    """Mark the current unit of work as a reader, even inside a writer's context (a thread
    started from a writing request inherits its context variables)."""
    token = write_intent.set(False)
    try:
        yield
    finally:
        write_intent.reset(token)


_AFTER_COMMIT = "hub.after_commit"


def after_commit(session: AsyncSession, work: Callable[[], Awaitable[object]]) -> None:
    """Have the transaction's owner await ``work`` once the transaction has committed (never
    if it rolls back), before it answers: for what the answer promises beyond the database
    (a consent change's arrays). Only requests run it (``run_after_commit``); elsewhere it is
    dropped with the session, and what it would have done must be done lazily too."""
    session.info.setdefault(_AFTER_COMMIT, []).append(work)


async def run_after_commit(session: AsyncSession) -> None:
    """Await the work arranged with :func:`after_commit`, in order; after the commit."""
    for work in session.info.pop(_AFTER_COMMIT, []):
        await work()


def drop_after_commit(session: AsyncSession) -> None:
    """Forget the work arranged with :func:`after_commit` (the transaction rolled back)."""
    session.info.pop(_AFTER_COMMIT, None)


def normalise_url(url: str) -> URL:
    """Map a plain ``sqlite://`` or ``postgresql://`` URL to the drivers the hub ships."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return parsed.set(drivername="sqlite")
    if backend in {"postgresql", "postgres"}:
        return parsed.set(drivername="postgresql+psycopg")
    raise ValueError(f"unsupported database {backend!r}: use sqlite:/// or postgresql://")


def async_url(url: str) -> URL:
    parsed = normalise_url(url)
    if parsed.get_backend_name() == "sqlite":
        return parsed.set(drivername="sqlite+aiosqlite")
    return parsed


def is_sqlite(url: str) -> bool:
    return normalise_url(url).get_backend_name() == "sqlite"


def ensure_sqlite_dir(url: str) -> None:
    parsed = normalise_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)


def _configure_sqlite(engine: Engine, busy_timeout_ms: int, always_immediate: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite's implicit
        # transactions would otherwise defer the write lock).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        immediate = always_immediate or write_intent.get()
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def create_hub_async_engine(
    url: str,
    *,
    echo: bool = False,
    pool_size: int = 10,
    max_overflow: int = 5,
    pool_timeout: float = POOL_TIMEOUT_SECONDS,
    busy_timeout_ms: int = 5000,
) -> AsyncEngine:
    ensure_sqlite_dir(url)
    if is_sqlite(url):
        engine = create_async_engine(async_url(url), echo=echo, hide_parameters=True)
        _configure_sqlite(engine.sync_engine, busy_timeout_ms, always_immediate=False)
        return engine
    return create_async_engine(
        async_url(url),
        echo=echo,
        pool_size=pool_size,
        pool_pre_ping=True,
        max_overflow=max_overflow,
        pool_timeout=pool_timeout,
        # Never put row values (identifiers, secrets' hashes) into error messages and logs.
        hide_parameters=True,
    )


def create_hub_sync_engine(
    url: str, *, busy_timeout_ms: int = 5000, pool_size: int = 2, writer: bool = True
) -> Engine:
    """A small synchronous engine for code that cannot await (authlib's hooks, migrations),
    or, with ``writer=False``, for long reads in a thread (the matching engine's loader)."""
    ensure_sqlite_dir(url)
    if is_sqlite(url):
        engine = create_engine(normalise_url(url), hide_parameters=True)
        # The synchronous writers (token issuing, migrations) take SQLite's write lock up front.
        _configure_sqlite(engine, busy_timeout_ms, always_immediate=writer)
        return engine
    return create_engine(
        normalise_url(url),
        pool_size=pool_size,
        pool_pre_ping=True,
        max_overflow=SYNC_POOL_OVERFLOW,
        pool_timeout=POOL_TIMEOUT_SECONDS,
        hide_parameters=True,
    )


def sync_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


# JSON columns: JSONB on PostgreSQL, JSON text on SQLite. (advanced-alchemy's JsonB type breaks
# under SQLAlchemy 2.1, so the hub declares its own.)
def json_column_type() -> Any:
    from sqlalchemy import JSON
    from sqlalchemy.dialects.postgresql import JSONB

    return JSON().with_variant(JSONB(), "postgresql")


JsonType = json_column_type()


def dialect_insert(session: AsyncSession | Session, table: Any) -> Any:
    """INSERT with the dialect's ON CONFLICT support (PostgreSQL or SQLite)."""
    from sqlalchemy.dialects import postgresql, sqlite

    dialect = session.get_bind().dialect.name
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)


def rowcount(result: Any) -> int:
    """Rows a DELETE or UPDATE touched (0 where the driver does not say)."""
    return int(getattr(result, "rowcount", 0) or 0)
