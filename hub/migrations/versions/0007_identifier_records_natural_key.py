"""identifier_records keyed by (partner_id, id_type, match_key), without a surrogate id

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-25
"""

import warnings
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KEY = ["partner_id", "id_type", "match_key"]


def upgrade() -> None:
    # The unique key becomes the primary key; the id column and its index go (one index
    # fewer to write per record).
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="Skipped unsupported reflection of expression-based index"
        )
        with op.batch_alter_table("identifier_records", recreate="always") as batch:
            batch.drop_constraint("uq_identifier_records_key", type_="unique")
            batch.drop_constraint("pk_identifier_records", type_="primary")
            batch.drop_column("id")
            batch.create_primary_key("pk_identifier_records", KEY)


def downgrade() -> None:
    # The old surrogate ids are not restored (nothing referred to them): the column comes back
    # empty, with the unique key it stood beside.
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="Skipped unsupported reflection of expression-based index"
        )
        with op.batch_alter_table("identifier_records", recreate="always") as batch:
            batch.drop_constraint("pk_identifier_records", type_="primary")
            batch.add_column(
                sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True)
            )
            batch.create_unique_constraint("uq_identifier_records_key", KEY)
