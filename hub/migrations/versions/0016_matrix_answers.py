"""matrix answers: the admin overlap matrix's stored answers, per pair, purpose and data versions

Revision ID: 0016
Revises: 0014
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import advanced_alchemy.types
import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

GUID = advanced_alchemy.types.guid.GUID(length=16)
WHEN = advanced_alchemy.types.datetime.DateTimeUTC(timezone=True)


def upgrade() -> None:
    op.create_table(
        "matrix_answers",
        sa.Column("purpose", sa.String(length=20), nullable=False),
        sa.Column("partner_low", GUID, nullable=False),
        sa.Column("partner_high", GUID, nullable=False),
        sa.Column("low_version", sa.BigInteger(), nullable=False),
        sa.Column("high_version", sa.BigInteger(), nullable=False),
        sa.Column("partnership_id", GUID, nullable=True),
        sa.Column("min_audience", sa.Integer(), nullable=False),
        sa.Column("epsilon", sa.Float(), nullable=True),
        sa.Column("count", sa.BigInteger(), nullable=True),
        sa.Column("refused", sa.String(length=40), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("answered_at", WHEN, nullable=False),
        sa.PrimaryKeyConstraint("purpose", "partner_low", "partner_high", name="pk_matrix_answers"),
    )


def downgrade() -> None:
    op.drop_table("matrix_answers")
