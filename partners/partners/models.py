from __future__ import annotations

from advanced_alchemy.base import UUIDv7AuditBase
from sqlalchemy import Index, Integer, String, func
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
    # Carried in every access token; raised on reactivation so that tokens issued before a
    # suspension stay dead afterwards (JWTs cannot be listed, so they are cut off by epoch).
    token_epoch: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

    # Names are unique regardless of case ("Acme" and "ACME" are one brand).
    __table_args__ = (Index("uq_partners_name_lower", func.lower(name), unique=True),)
