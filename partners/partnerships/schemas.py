from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

import msgspec

Purpose = Literal["analytics", "joint_offers", "rewards_sharing"]
BudgetPeriod = Literal["hour", "day", "week", "month"]


class PartnershipCreate(msgspec.Struct, forbid_unknown_fields=True):
    members: Annotated[list[UUID], msgspec.Meta(min_length=2, max_length=2)]
    purposes: Annotated[list[Purpose], msgspec.Meta(min_length=1)]
    min_audience: int | None = None
    epsilon: float | None = None
    epsilon_budget: float | None = None
    budget_period: BudgetPeriod = "day"
    allow_competitors: bool = False


class PartnershipUpdate(msgspec.Struct, forbid_unknown_fields=True):
    status: Literal["active", "suspended", "ended"]


class MemberOut(msgspec.Struct):
    partner_id: UUID
    accepted: bool
    accepted_at: datetime | None


class PartnershipOut(msgspec.Struct):
    id: UUID
    status: str
    members: list[MemberOut]
    purposes: list[str]
    min_audience: int
    epsilon: float | None
    epsilon_budget: float | None
    budget_period: str
    allow_competitors: bool
    created_at: datetime
    updated_at: datetime
