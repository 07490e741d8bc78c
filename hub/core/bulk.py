"""Many rows into one table, as PostgreSQL takes them fastest: COPY.

A 1,000-event request writes a thousand events, lots and two thousand postings. Sent as
SQLAlchemy's multi-row INSERT ... RETURNING ("insertmanyvalues") or as an executemany, most of
the request's time went to the driver turning each statement into the server's form (psycopg
parses an INSERT of 8,000 placeholders again for every batch: it caches short statements only)
and to one protocol message per row (profiled in the soak of issue 19). COPY sends the rows as
one stream. Ids the caller needs are drawn from the table's sequence first, in one statement,
and written with the rows, so they come back in the rows' order without RETURNING.

On SQLite (one writer at a time, no protocol) the same call is a plain executemany.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import psycopg
from psycopg.types.json import Jsonb
from sqlalchemy import Table, insert, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession


async def insert_rows(
    session: AsyncSession,
    table: Table,
    rows: Sequence[Mapping[str, Any]],
    *,
    ids: bool = False,
) -> list[int]:
    """Insert ``rows`` (dicts with the same keys, every column with a Python-side default
    included); with ``ids``, return the new rows' ``id`` in the rows' order. A constraint
    violation raises SQLAlchemy's ``IntegrityError``, as an INSERT would."""
    if not rows:
        return []
    columns = list(rows[0])
    _check_defaults(table, columns)
    if session.get_bind().dialect.name != "postgresql":
        if ids:
            returning = insert(table).returning(table.c.id, sort_by_parameter_order=True)
            return [int(i) for i in (await session.execute(returning, list(rows))).scalars()]
        await session.execute(insert(table), list(rows))
        return []
    drawn: list[int] = []
    if ids:
        drawn = [
            int(i)
            for i in (
                await session.execute(
                    text(
                        "SELECT nextval(pg_get_serial_sequence(:t, 'id')) "
                        "FROM generate_series(1, :n)"
                    ),
                    {"t": table.name, "n": len(rows)},
                )
            ).scalars()
        ]
    names = (["id"] if ids else []) + columns
    copy_sql = f"COPY {table.name} ({', '.join(names)}) FROM STDIN"
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    driver: Any = raw.driver_connection
    try:
        async with driver.cursor() as cursor, cursor.copy(copy_sql) as copy:
            for n, row in enumerate(rows):
                values = [_adapted(row[name]) for name in columns]
                await copy.write_row([drawn[n], *values] if ids else values)
    except psycopg.Error as exc:  # as SQLAlchemy reports an INSERT's (IntegrityError...)
        raise DBAPIError.instance(copy_sql, None, exc, psycopg.Error) from exc
    return drawn


def _adapted(value: Any) -> Any:
    return Jsonb(value) if isinstance(value, dict | list) else value


def _check_defaults(table: Table, columns: list[str]) -> None:
    """COPY applies the database's defaults only: a Python-side one must come with the rows."""
    missing = [
        c.name
        for c in table.columns
        if c.default is not None and c.name not in columns and not c.primary_key
    ]
    if missing:
        raise ValueError(f"insert_rows({table.name}): give {missing} (Python-side defaults)")
