from __future__ import annotations

from advanced_alchemy.base import UUIDv7AuditBase
from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

ACTIVE, SUSPENDED = "active", "suspended"


class Partner(UUIDv7AuditBase):
    """A brand of the coalition."""

    __tablename__ = "partners"

    name: Mapped[str] = mapped_column(String(100), unique=True)
    # Business category (airline, hotel, coffee, bank...): same-category brands compete.
    category: Mapped[str] = mapped_column(String(50))
    status: Mapped[str] = mapped_column(String(20), default=ACTIVE)
    webhook_url: Mapped[str | None] = mapped_column(String(500), nullable=True)
