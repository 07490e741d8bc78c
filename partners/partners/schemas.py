from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

import msgspec

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=100, pattern=r"^[^\x00-\x1f\x7f]+$")]
Category = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^[a-z][a-z0-9_-]{1,49}$",
        description="Business category slug, e.g. airline, hotel, coffee, bank_card",
    ),
]
Url = Annotated[str, msgspec.Meta(max_length=500)]
Status = Literal["active", "suspended"]


class PartnerCreate(msgspec.Struct, forbid_unknown_fields=True):
    name: Name
    category: Category
    webhook_url: Url | None = None


class PartnerUpdate(msgspec.Struct, forbid_unknown_fields=True):
    """Fields left out stay as they are; ``webhook_url: null`` removes the webhook."""

    name: Name | msgspec.UnsetType = msgspec.UNSET
    category: Category | msgspec.UnsetType = msgspec.UNSET
    webhook_url: Url | msgspec.UnsetType | None = msgspec.UNSET
    status: Status | msgspec.UnsetType = msgspec.UNSET


class PartnerOut(msgspec.Struct):
    id: UUID
    name: str
    category: str
    status: str
    webhook_url: str | None
    created_at: datetime
    updated_at: datetime
