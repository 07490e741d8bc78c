"""an upload in progress says which phase it is in

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-03

``identifier_uploads.phase``: ``staging`` while the body is read and checked, ``applying``
while the records are written, NULL before a claim and once the upload is finished.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("identifier_uploads", sa.Column("phase", sa.String(12), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("identifier_uploads") as batch:
        batch.drop_column("phase")
