"""Wire shapes of the matching endpoints (DESIGN.md "HTTP API")."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from uuid import UUID

import msgspec

# The hub stores no NUL character (a 400 says so): the document says it too.
NO_NUL = r"^[^\x00]*$"
Title = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=NO_NUL)]
Description = Annotated[str, msgspec.Meta(max_length=4000, pattern=NO_NUL)]
Points = Annotated[int, msgspec.Meta(ge=0, le=10_000_000)]
Values = Annotated[
    list[Annotated[str, msgspec.Meta(min_length=1, max_length=100, pattern=NO_NUL)]],
    msgspec.Meta(min_length=1, max_length=100),
]
Filters = Annotated[
    dict[Annotated[str, msgspec.Meta(pattern=NO_NUL)], Values],
    msgspec.Meta(max_length=20, examples=[{"tier": ["gold", "silver"], "city": ["Lisbon"]}]),
]
# msgspec's JSON schema leaves out what these decode as; the OpenAPI document needs it said.
ByPartner = msgspec.Meta(
    extra_json_schema={"propertyNames": {"format": "uuid"}},
    description="Keyed by partner id",
)
Timestamp = Annotated[datetime, msgspec.Meta(extra_json_schema={"format": "date-time"})]


class CellOut(msgspec.Struct):
    values: dict[str, str | None]
    count: int | None
    suppressed: bool


class OverlapOut(msgspec.Struct):
    purpose: str
    count: int | None
    suppressed: bool
    min_audience: int
    noise: bool
    breakdown: list[CellOut] | msgspec.UnsetType = msgspec.UNSET


class BudgetOut(msgspec.Struct):
    partnership_id: UUID
    noise: bool
    epsilon: float | None
    budget: float | None
    spent: float
    left: float | None
    period: str
    period_start: datetime | None
    renews_at: datetime | None
    queries: int


class PartnerRef(msgspec.Struct):
    id: UUID
    name: str


class MatrixCellOut(msgspec.Struct):
    a: UUID
    b: UUID
    count: int | None
    suppressed: bool
    min_audience: int
    partnership_id: UUID | None  # the partnership whose rules answered (None: never had one)
    noise: bool = False
    answered_at: datetime | None = None  # when the shown answer was computed (and stored)
    # Why the pair is not answered: purpose-not-allowed, budget-exhausted or differencing.
    refused: str | None = None
    reason: str | None = None
    stale: bool = False  # (console) the data changed since answered_at; refreshing spends


class MatrixOut(msgspec.Struct):
    purpose: str
    partners: list[PartnerRef]
    cells: list[MatrixCellOut]


class OfferCreate(msgspec.Struct, forbid_unknown_fields=True):
    partnership_id: UUID
    title: Title
    points: Annotated[dict[UUID, Points], ByPartner]
    description: Description = ""
    filters: Annotated[dict[UUID, Filters], ByPartner] | None = None
    starts_at: Timestamp | None = None
    ends_at: Timestamp | None = None
    holdout: Annotated[
        float,
        msgspec.Meta(
            ge=0.0,
            le=0.5,
            description="Share of the matched groups held out as a control (0 for none).",
            examples=[0.1],
        ),
    ] = 0.1
    attribution_days: Annotated[
        int,
        msgspec.Meta(
            ge=0,
            le=90,
            description="Days after the window's end whose activity still counts in results.",
        ),
    ] = 0


class OfferApprove(msgspec.Struct, forbid_unknown_fields=True):
    """The approving member's own filters (optional)."""

    filters: Filters | None = None


class OfferOut(msgspec.Struct):
    id: UUID
    partnership_id: UUID
    proposer_id: UUID
    title: str
    description: str
    points: dict[str, int]
    status: str
    approvals: dict[str, datetime]
    starts_at: datetime | None
    ends_at: datetime | None
    activated_at: datetime | None
    created_at: datetime
    # Only the caller's own filters and audience size: never the other member's.
    filters: dict[str, list[str]]
    audience_size: int | None
    holdout: float = 0.0
    attribution_days: int = 0
    # The caller's own control arm size (None before activation or for an admin).
    control_size: int | None = None


class AudienceItem(msgspec.Struct):
    customer_ref: str


class AudienceChange(msgspec.Struct):
    customer_ref: str
    change: str
    at: datetime


class AudienceChanges(msgspec.Struct):
    items: list[AudienceChange]
    next_cursor: str
    has_more: bool


class ArmOut(msgspec.Struct):
    """One arm's released figures: null with ``suppressed`` when below min_audience."""

    people: int | None
    responders: int | None
    points: int | None
    amount_minor: int | None
    response_rate: float | None
    suppressed: bool


class LiftOut(msgspec.Struct):
    """Treated minus control response rate, from the released figures only."""

    absolute: float | None
    absolute_ci: list[float] | None  # [low, high], 95 %
    relative: float | None
    relative_ci: list[float] | None
    p_value: float | None
    suppressed: bool


class SideResultOut(msgspec.Struct):
    partner_id: UUID
    treated: ArmOut
    control: ArmOut
    lift: LiftOut
    # With ?by=self.<attr> on the caller's side: one entry per value of the attribute.
    segments: list[SegmentResultOut] | msgspec.UnsetType = msgspec.UNSET


class SegmentResultOut(msgspec.Struct):
    values: dict[str, str | None]
    treated: ArmOut
    control: ArmOut
    lift: LiftOut


class OfferResultsOut(msgspec.Struct):
    offer_id: UUID
    window_start: datetime
    window_end: datetime  # ends_at (or now) plus attribution_days
    holdout: float
    min_audience: int
    noise: bool
    epsilon_spent: float  # what this read cost the partnership's budget (0: served again)
    method: str
    sides: list[SideResultOut]
    answered_at: datetime
