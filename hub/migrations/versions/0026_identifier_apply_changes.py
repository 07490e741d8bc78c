"""identifier apply changes: whom each change during a bulk upload's apply touched

Revision ID: 0026
Revises: 0025
Create Date: 2026-12-05

A consent change, an erasure or a synchronous upsert committed while a partner's bulk upload
is being applied records the people it touched (one row per raise of the partner's counter).
At the flip the apply patches the arrays it built ahead with those people's records, instead
of dropping them and reading every record again; the flip deletes the rows.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0026"
down_revision: str | None = "0025"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "identifier_apply_changes",
        sa.Column("partner_id", sa.Uuid(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column(
            "people",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("partner_id", "version", name=op.f("pk_identifier_apply_changes")),
    )


def downgrade() -> None:
    op.drop_table("identifier_apply_changes")
