"""Instants sent by clients: an RFC 3339 time (one without an offset is read as UTC) or Unix
seconds, in UTC between the years 1 and 9999.

The decoder accepts times it cannot then hold: ``9999-12-31T23:59:59-05:00`` is in the year
10000 once in UTC, and Unix time 253402300800 made msgspec raise a bare ``ValueError``. Both
reached a 500 (the overlap Schemathesis run of issue 15 and a probe of every time input found
them); here they are a 400 naming the field.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec

from hub.core.errors import BadRequest

# The Unix times of the instants a datetime can hold in UTC: [minimum, maximum).
UNIX_MINIMUM, UNIX_BEYOND = -62135596800, 253402300800
FIX = (
    "Send an RFC 3339 time such as 2026-12-03T10:00:00Z (a time without an offset is read as "
    "UTC) or Unix seconds, between 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z."
)
# The schema of a time given in a query parameter (the OpenAPI pipeline adds Unix seconds).
TIME_PARAMETER_SCHEMA: dict[str, Any] = {"format": "date-time"}


def as_utc(moment: datetime, field: str) -> datetime:
    """``moment`` in UTC (one without an offset is read as UTC); 400 if it is outside the years
    1 to 9999 once in UTC."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise BadRequest(
            f"{field}: {moment.isoformat()} is outside the years 1 to 9999 once in UTC.", fix=FIX
        ) from None


def parse_time(value: str | None, field: str) -> datetime | None:
    """A query parameter's time in UTC; None when absent (or ``null``, as the schema allows)."""
    if value is None or value == "null":
        return None
    try:
        moment = msgspec.convert(value, datetime, strict=False)
    except (msgspec.ValidationError, ValueError, OverflowError):
        raise BadRequest(
            f"{field}: {value[:64]!r} is not a time the hub can hold.", fix=FIX
        ) from None
    return as_utc(moment, field)
