"""matching: privacy budgets, answered overlap queries, joint offers and their audiences

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import advanced_alchemy.types
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
GUID = advanced_alchemy.types.guid.GUID(length=16)
WHEN = advanced_alchemy.types.datetime.DateTimeUTC(timezone=True)
JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("partnerships") as batch:
        batch.add_column(sa.Column("epsilon_budget", sa.Float(), nullable=True))
        batch.add_column(
            sa.Column("budget_period", sa.String(length=10), server_default="day", nullable=False)
        )

    op.create_table(
        "overlap_queries",
        sa.Column("id", PK, autoincrement=True, nullable=False),
        sa.Column("partnership_id", GUID, nullable=False),
        sa.Column("partner_id", GUID, nullable=True),
        sa.Column("purpose", sa.String(length=20), nullable=False),
        sa.Column("breakdown", sa.String(length=500), nullable=False),
        sa.Column("answered_at", WHEN, nullable=False),
        sa.Column("epsilon", sa.Float(), nullable=False),
        sa.Column("total", sa.BigInteger(), nullable=False),
        sa.Column("cells", JSON, nullable=False),
        sa.ForeignKeyConstraint(
            ["partnership_id"],
            ["partnerships.id"],
            name="fk_overlap_queries_partnership_id_partnerships",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_overlap_queries"),
    )
    op.create_index(
        "ix_overlap_queries_question", "overlap_queries", ["partnership_id", "purpose", "breakdown"]
    )
    op.create_index(
        "ix_overlap_queries_budget", "overlap_queries", ["partnership_id", "answered_at"]
    )

    op.create_table(
        "offers",
        sa.Column("id", GUID, nullable=False),
        sa.Column("partnership_id", GUID, nullable=False),
        sa.Column("proposer_id", GUID, nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("points", JSON, nullable=False),
        sa.Column("filters", JSON, nullable=False),
        sa.Column("starts_at", WHEN, nullable=True),
        sa.Column("ends_at", WHEN, nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("approvals", JSON, nullable=False),
        sa.Column("activated_at", WHEN, nullable=True),
        sa.Column("reconciled", JSON, nullable=False),
        sa.Column("audience_sizes", JSON, nullable=False),
        sa.Column("sa_orm_sentinel", sa.Integer(), nullable=True),
        sa.Column("created_at", WHEN, nullable=False),
        sa.Column("updated_at", WHEN, nullable=False),
        sa.ForeignKeyConstraint(
            ["partnership_id"], ["partnerships.id"], name="fk_offers_partnership_id_partnerships"
        ),
        sa.ForeignKeyConstraint(
            ["proposer_id"], ["partners.id"], name="fk_offers_proposer_id_partners"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_offers"),
    )
    op.create_index("ix_offers_partnership_id", "offers", ["partnership_id"])

    op.create_table(
        "offer_audiences",
        sa.Column("offer_id", GUID, nullable=False),
        sa.Column("partner_id", GUID, nullable=False),
        sa.Column("customer_ref", sa.String(length=200), nullable=False),
        sa.ForeignKeyConstraint(
            ["offer_id"],
            ["offers.id"],
            name="fk_offer_audiences_offer_id_offers",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "offer_id", "partner_id", "customer_ref", name="pk_offer_audiences"
        ),
    )

    op.create_table(
        "offer_audience_changes",
        sa.Column("seq", PK, autoincrement=True, nullable=False),
        sa.Column("offer_id", GUID, nullable=False),
        sa.Column("partner_id", GUID, nullable=False),
        sa.Column("customer_ref", sa.String(length=200), nullable=False),
        sa.Column("change", sa.String(length=20), nullable=False),
        sa.Column("at", WHEN, nullable=False),
        sa.ForeignKeyConstraint(
            ["offer_id"],
            ["offers.id"],
            name="fk_offer_audience_changes_offer_id_offers",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("seq", name="pk_offer_audience_changes"),
    )
    op.create_index(
        "ix_offer_audience_changes_reader",
        "offer_audience_changes",
        ["offer_id", "partner_id", "seq"],
    )


def downgrade() -> None:
    op.drop_table("offer_audience_changes")
    op.drop_table("offer_audiences")
    op.drop_table("offers")
    op.drop_table("overlap_queries")
    with op.batch_alter_table("partnerships") as batch:
        batch.drop_column("budget_period")
        batch.drop_column("epsilon_budget")
