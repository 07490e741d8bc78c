"""first load publishing: a first load's consents published from its records after its flip

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-04

A partner's first bulk upload no longer writes one pending consent change per person (10M
rows written, read and deleted again at 10M): after its flip the tidying publishes each
person's consents from the new records themselves, in ``customer_ref`` order.
``identifier_state.publishing`` is the generation whose records are still being published,
``published_after`` the last person published so far (moved in the same transaction as the
events, so that a tidying resumed after a crash publishes each person once).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0024"
down_revision: str | None = "0023"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("identifier_state") as batch:
        batch.add_column(sa.Column("publishing", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("published_after", sa.String(length=200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("identifier_state") as batch:
        batch.drop_column("published_after")
        batch.drop_column("publishing")
