"""offer result totals: each offer side's window events summed per ledger member as applied

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-03

* ``offer_result_fills``: the offer sides whose totals are kept, with the window's bounds
  (``opens``, ``closes``: the offer's end plus its attribution days, or none).
* ``offer_result_totals``: per (offer, side, ledger member) the count of earn and redeem
  events in the window, their points and amounts, kept in the events' transaction, so that
  a results read sums ~1 row per responding member instead of every event of the window.

Offers activated before this revision have no fill: their first results read fills them from
``reward_events``.
"""

from collections.abc import Sequence

import advanced_alchemy.types
import sqlalchemy as sa
from alembic import op

revision: str = "0023"
down_revision: str | None = "0022"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

GUID = advanced_alchemy.types.guid.GUID(length=16)
WHEN = advanced_alchemy.types.datetime.DateTimeUTC(timezone=True)


def upgrade() -> None:
    op.create_table(
        "offer_result_fills",
        sa.Column("offer_id", GUID, nullable=False),
        sa.Column("partner_id", GUID, nullable=False),
        sa.Column("opens", WHEN, nullable=False),
        sa.Column("closes", WHEN, nullable=True),
        sa.Column("filled_at", WHEN, nullable=False),
        sa.ForeignKeyConstraint(
            ["offer_id"],
            ["offers.id"],
            name="fk_offer_result_fills_offer_id_offers",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("offer_id", "partner_id", name="pk_offer_result_fills"),
    )
    op.create_index("ix_offer_result_fills_partner", "offer_result_fills", ["partner_id"])
    op.create_table(
        "offer_result_totals",
        sa.Column("offer_id", GUID, nullable=False),
        sa.Column("partner_id", GUID, nullable=False),
        sa.Column("member_id", sa.BigInteger(), nullable=False),
        sa.Column("events", sa.BigInteger(), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["offer_id", "partner_id"],
            ["offer_result_fills.offer_id", "offer_result_fills.partner_id"],
            name="fk_offer_result_totals_offer_id_offer_result_fills",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "offer_id", "partner_id", "member_id", name="pk_offer_result_totals"
        ),
    )


def downgrade() -> None:
    op.drop_table("offer_result_totals")
    op.drop_index("ix_offer_result_fills_partner", table_name="offer_result_fills")
    op.drop_table("offer_result_fills")
