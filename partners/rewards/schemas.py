"""Wire shapes of the rewards endpoints (DESIGN.md "Wire shapes")."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

import msgspec

from partners.identifiers.schemas import Digest, IdType

MAX_EVENTS = 1000
MAX_EVENTS_BODY_BYTES = 2 * 1024 * 1024
MAX_POINTS = 1_000_000_000


class RewardEventIn(msgspec.Struct, forbid_unknown_fields=True):
    """One reward event of a member at the brand.

    An earn or a redeem carries positive points, an adjustment non-zero points; only an earn
    names an offer. Sending the same event_id again with the same event replays it.
    """

    event_id: Annotated[
        str,
        msgspec.Meta(
            min_length=1,
            max_length=200,
            pattern=r"^[^\x00-\x1f\x7f]+$",
            description="The brand's own unique id of the event (idempotency).",
            examples=["pos-2026-000042"],
        ),
    ]
    id_type: IdType
    id_hash: Digest
    kind: Literal["earn", "redeem", "adjust"]
    points: Annotated[int, msgspec.Meta(ge=-MAX_POINTS, le=MAX_POINTS, examples=[120])]
    occurred_at: Annotated[
        datetime,
        msgspec.Meta(
            description="When it happened, with its UTC offset; from 2000-01-01 to a day ahead.",
            examples=["2026-05-04T10:15:00+00:00"],
            extra_json_schema={"format": "date-time"},
        ),
    ]
    offer_id: UUID | None = None
    amount_minor: (
        Annotated[
            int,
            msgspec.Meta(
                ge=0,
                le=10**15,
                description="The purchase value behind an earn or redeem, in currency minor "
                "units; used only for offer measurement aggregates.",
                examples=[4599],
            ),
        ]
        | None
    ) = None


class RewardEventsBody(msgspec.Struct, forbid_unknown_fields=True):
    """Up to 1,000 events, applied all or none (any bad event: 422 listing every one)."""

    events: Annotated[list[RewardEventIn], msgspec.Meta(max_length=MAX_EVENTS)]


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


class StatementLine(msgspec.Struct):
    from_partner_id: UUID
    from_partner_name: str
    to_partner_id: UUID
    to_partner_name: str
    points: int
    amount_minor: int


class SettlementStatement(msgspec.Struct):
    """One statement read by id: its lines name both partners (the finance export)."""

    id: int
    period_start: datetime
    period_end: datetime
    currency: str
    point_value_minor: int
    closed_at: datetime
    lines: list[StatementLine]
