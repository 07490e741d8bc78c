"""Cursor pagination used by every list: keyset on one unique, ordered column.

The cursor is opaque to clients (base64url of the last key seen). Keyset pagination is stable:
rows inserted or deleted while a client pages never make it skip or repeat an item.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar
from uuid import UUID

import msgspec
from litestar.params import Parameter
from sqlalchemy import Select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from hub.core.errors import BadRequest

T = TypeVar("T")
DEFAULT_LIMIT = 50
MAX_LIMIT = 500


# Query parameters every list takes (declared once so every list documents them alike).
LimitParameter = Parameter(
    ge=1, le=MAX_LIMIT, default=DEFAULT_LIMIT, description=f"Items per page (1-{MAX_LIMIT})"
)
CursorParameter = Parameter(default=None, description="next_cursor of the previous page")


class Page(msgspec.Struct, Generic[T]):
    items: list[T]
    next_cursor: str | None


def encode_cursor(key: Any) -> str:
    value = str(key) if isinstance(key, UUID) else key
    raw = json.dumps({"k": value}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(cursor: str, parse: Callable[[Any], Any]) -> Any:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        value = json.loads(base64.urlsafe_b64decode(padded.encode()))["k"]
        return parse(value)
    except (ValueError, KeyError, TypeError, AttributeError, OverflowError) as exc:
        raise BadRequest(
            "The cursor is not one this list returned.",
            fix="Pass back the next_cursor value of the previous page unchanged, or omit it.",
        ) from exc


def parse_seq(value: Any) -> int:
    """A cursor key that must be a 63-bit integer (``bool`` and floats are not)."""
    if type(value) is not int or not 0 <= value < 2**63:
        raise ValueError("not a sequence number")
    return value


def parse_uuid(value: Any) -> UUID:
    if not isinstance(value, str):
        raise ValueError("not a UUID string")
    return UUID(value)


def check_limit(limit: int) -> int:
    if not 1 <= limit <= MAX_LIMIT:
        raise BadRequest(
            f"limit must be between 1 and {MAX_LIMIT}, got {limit}.",
            fix=f"Ask for at most {MAX_LIMIT} items per page and follow next_cursor.",
        )
    return limit


async def read_after(
    session: AsyncSession,
    stmt: Select[Any],
    seq: Any,
    *,
    cursor: str | None,
    limit: int,
) -> tuple[Sequence[Any], str, bool]:
    """A feed read: the rows after ``cursor`` by the increasing sequence column ``seq``.

    Unlike a list's ``next_cursor``, the cursor returned is always the reader's position (the
    last row's, or the one it came with), so polling from it yields only later rows. Returns
    (rows, next cursor, whether more rows are ready now).
    """
    limit = check_limit(limit)
    after = decode_cursor(cursor, parse_seq) if cursor else 0
    rows = (await session.execute(stmt.where(seq > after).order_by(seq).limit(limit + 1))).all()
    more = len(rows) > limit
    rows = rows[:limit]
    position = getattr(rows[-1], seq.key) if rows else after
    return rows, encode_cursor(position), more


async def paginate(
    session: AsyncSession,
    stmt: Select[Any],
    key: InstrumentedAttribute[Any],
    *,
    cursor: str | None,
    limit: int,
    to_item: Callable[[Any], T],
    parse_key: Callable[[Any], Any] = parse_uuid,
    descending: bool = False,
) -> Page[T]:
    """Run ``stmt`` one page at a time, ordered by the unique column ``key``."""
    limit = check_limit(limit)
    if cursor:
        after = decode_cursor(cursor, parse_key)
        stmt = stmt.where(key < after if descending else key > after)
    stmt = stmt.order_by(key.desc() if descending else key.asc()).limit(limit + 1)
    rows: Sequence[Any] = (await session.scalars(stmt)).all()
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = encode_cursor(getattr(rows[-1], key.key)) if more and rows else None
    return Page(items=[to_item(r) for r in rows], next_cursor=next_cursor)
