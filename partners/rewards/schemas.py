"""Wire shapes of the rewards endpoints (DESIGN.md "Wire shapes")."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import msgspec

MAX_EVENTS = 1000
MAX_EVENTS_BODY_BYTES = 2 * 1024 * 1024


class EventsIn(msgspec.Struct, forbid_unknown_fields=True):
    # Checked event by event (service.check_events) so that every bad event is reported.
    events: list[Any]


class EventResult(msgspec.Struct):
    event_id: str
    status: str  # applied | replayed
    kind: str
    points: int
    wallet: str | None = None  # where an earn (or positive adjust) went: coalition | local


class EventsOut(msgspec.Struct):
    applied: int
    replayed: int
    results: list[EventResult]


class BalanceOut(msgspec.Struct):
    points: int
    local_points: int
    # null when the member did not consent to sharing rewards at the caller: the caller may
    # not know their coalition balance.
    coalition_points: int | None


class FeedItem(msgspec.Struct):
    id: int
    customer_ref: str
    kind: str
    points: int
    occurred_at: datetime
    source_partner_id: UUID


class FeedPage(msgspec.Struct):
    items: list[FeedItem]
    next_cursor: str
    has_more: bool


class SettlementLine(msgspec.Struct):
    from_partner_id: UUID
    to_partner_id: UUID
    points: int
    amount_minor: int


class SettlementOut(msgspec.Struct):
    id: int
    period_start: datetime
    period_end: datetime
    currency: str
    point_value_minor: int
    closed_at: datetime
    lines: list[SettlementLine]
