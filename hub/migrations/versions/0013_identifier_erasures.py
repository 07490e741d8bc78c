"""erasures remembered for the bulk uploads sent before them

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import advanced_alchemy.types
import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
GUID = advanced_alchemy.types.guid.GUID(length=16)


def _utc() -> advanced_alchemy.types.datetime.DateTimeUTC:
    return advanced_alchemy.types.datetime.DateTimeUTC(timezone=True)


def upgrade() -> None:
    op.create_table(
        "identifier_erasures",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("partner_id", GUID, nullable=False),
        sa.Column("customer_ref", sa.String(length=200), nullable=True),
        sa.Column("match_key", sa.LargeBinary(length=32), nullable=True),
        sa.Column("erased_at", _utc(), nullable=False),
        sa.ForeignKeyConstraint(
            ["partner_id"],
            ["partners.id"],
            name=op.f("fk_identifier_erasures_partner_id_partners"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_identifier_erasures")),
    )
    op.create_index(
        "ix_identifier_erasures_partner_at",
        "identifier_erasures",
        ["partner_id", "erased_at"],
        unique=False,
    )
    with op.batch_alter_table("identifier_uploads", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("skipped", sa.BigInteger(), server_default="0", nullable=False)
        )
        batch_op.add_column(sa.Column("sent_at", _utc(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("identifier_uploads", schema=None) as batch_op:
        batch_op.drop_column("sent_at")
        batch_op.drop_column("skipped")
    op.drop_index("ix_identifier_erasures_partner_at", table_name="identifier_erasures")
    op.drop_table("identifier_erasures")
