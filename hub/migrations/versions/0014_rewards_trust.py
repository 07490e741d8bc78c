"""rewards that hold against a partner: disclosures, withdrawn feed items, feed readers

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import advanced_alchemy.types
import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
GUID = advanced_alchemy.types.guid.GUID(length=16)


def _utc() -> advanced_alchemy.types.datetime.DateTimeUTC:
    return advanced_alchemy.types.datetime.DateTimeUTC(timezone=True)


def upgrade() -> None:
    op.create_table(
        "reward_disclosures",
        sa.Column("reader_id", GUID, nullable=False),
        sa.Column("source_id", GUID, nullable=False),
        sa.Column("member_id", sa.BigInteger(), nullable=False),
        sa.Column("reader_ref", sa.String(length=200), nullable=False),
        sa.Column("source_ref", sa.String(length=200), nullable=False),
        sa.Column("disclosed_at", _utc(), nullable=False),
        sa.Column("withdrawn_at", _utc(), nullable=True),
        sa.PrimaryKeyConstraint(
            "reader_id", "source_id", "member_id", name=op.f("pk_reward_disclosures")
        ),
    )
    op.create_index(
        "ix_reward_disclosures_source",
        "reward_disclosures",
        ["source_id", "source_ref"],
        unique=False,
    )
    op.create_table(
        "reward_feed_readers",
        sa.Column("partner_id", GUID, nullable=False),
        sa.Column("read_seq", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", _utc(), nullable=False),
        sa.PrimaryKeyConstraint("partner_id", name=op.f("pk_reward_feed_readers")),
    )
    with op.batch_alter_table("reward_feed", schema=None) as batch_op:
        batch_op.alter_column("event_ref", existing_type=_ID, nullable=True)


def downgrade() -> None:
    op.execute("DELETE FROM reward_feed WHERE event_ref IS NULL")
    with op.batch_alter_table("reward_feed", schema=None) as batch_op:
        batch_op.alter_column("event_ref", existing_type=_ID, nullable=False)
    op.drop_table("reward_feed_readers")
    op.drop_index("ix_reward_disclosures_source", table_name="reward_disclosures")
    op.drop_table("reward_disclosures")
