"""partner names unique regardless of case; partner token epochs and floors

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("revocations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("not_before", sa.BigInteger(), nullable=True))
    op.create_index("uq_partners_name_lower", "partners", [sa.text("lower(name)")], unique=True)
    with op.batch_alter_table("partners", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("token_epoch", sa.Integer(), server_default="0", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("partners", schema=None) as batch_op:
        batch_op.drop_column("token_epoch")
    op.drop_index("uq_partners_name_lower", table_name="partners")
    with op.batch_alter_table("revocations", schema=None) as batch_op:
        batch_op.drop_column("not_before")
