"""uploads report the blank lines they held (counted while the body arrives)

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-03

The row reader skips lines that hold no record; ``identifier_uploads.blank_lines`` says how
many there were, so nothing is skipped silently. Uploads received before it count none.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("identifier_uploads", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("blank_lines", sa.BigInteger(), server_default="0", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("identifier_uploads", schema=None) as batch_op:
        batch_op.drop_column("blank_lines")
