"""offer measurement: holdouts stored per person and side, purchase amounts, results answers

Revision ID: 0021
Revises: 0019
Create Date: 2026-12-03

* ``offers.holdout`` (share held out as a control), ``attribution_days``, ``salt`` (the
  HMAC key of the assignment) and ``control_sizes`` (per side). Offers activated before
  holdouts existed read as h = 0 with no control.
* ``offer_controls``: the control arm per person and side, beside ``offer_audiences`` (the
  treated arm).
* ``reward_events.amount_minor``: the purchase value behind an earn or redeem, used only for
  measurement; an index on (partner, occurred_at) for the results' window scan.
* ``offer_result_answers``: released results stored per data version, served again free.
"""

from collections.abc import Sequence

import advanced_alchemy.types
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0021"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

GUID = advanced_alchemy.types.guid.GUID(length=16)
WHEN = advanced_alchemy.types.datetime.DateTimeUTC(timezone=True)
PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("offers") as batch:
        batch.add_column(sa.Column("holdout", sa.Float(), nullable=False, server_default="0"))
        batch.add_column(
            sa.Column("attribution_days", sa.Integer(), nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("salt", sa.LargeBinary(32), nullable=True))
        batch.add_column(sa.Column("control_sizes", JSON, nullable=True))
    op.create_table(
        "offer_controls",
        sa.Column("offer_id", GUID, nullable=False),
        sa.Column("partner_id", GUID, nullable=False),
        sa.Column("customer_ref", sa.String(length=200), nullable=False),
        sa.ForeignKeyConstraint(
            ["offer_id"],
            ["offers.id"],
            name="fk_offer_controls_offer_id_offers",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("offer_id", "partner_id", "customer_ref", name="pk_offer_controls"),
    )
    with op.batch_alter_table("reward_events") as batch:
        batch.add_column(sa.Column("amount_minor", sa.BigInteger(), nullable=True))
    op.create_index(
        "ix_reward_events_partner_occurred", "reward_events", ["partner_id", "occurred_at"]
    )
    op.create_table(
        "offer_result_answers",
        sa.Column("id", PK, autoincrement=True, nullable=False),
        sa.Column("offer_id", GUID, nullable=False),
        sa.Column("question", sa.String(length=500), nullable=False),
        sa.Column("versions", sa.String(length=200), nullable=False),
        sa.Column("released", JSON, nullable=False),
        sa.Column("answered_at", WHEN, nullable=False),
        sa.ForeignKeyConstraint(
            ["offer_id"],
            ["offers.id"],
            name="fk_offer_result_answers_offer_id_offers",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_offer_result_answers"),
    )
    op.create_index(
        "ix_offer_result_answers_question", "offer_result_answers", ["offer_id", "question"]
    )


def downgrade() -> None:
    op.drop_index("ix_offer_result_answers_question", table_name="offer_result_answers")
    op.drop_table("offer_result_answers")
    op.drop_index("ix_reward_events_partner_occurred", table_name="reward_events")
    with op.batch_alter_table("reward_events") as batch:
        batch.drop_column("amount_minor")
    op.drop_table("offer_controls")
    with op.batch_alter_table("offers") as batch:
        batch.drop_column("control_sizes")
        batch.drop_column("salt")
        batch.drop_column("attribution_days")
        batch.drop_column("holdout")
