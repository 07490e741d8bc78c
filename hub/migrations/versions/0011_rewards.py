"""coalition rewards: events, members, ledger, lots, feed, settlements

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import advanced_alchemy.types
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "reward_members",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("id_type", sa.SmallInteger(), nullable=False),
        sa.Column("match_key", sa.LargeBinary(length=32), nullable=False),
        sa.Column("key_version", sa.SmallInteger(), nullable=False),
        sa.Column("digest_enc", sa.LargeBinary(length=64), nullable=True),
        sa.Column("data_version", sa.SmallInteger(), nullable=True),
        sa.Column(
            "created_at", advanced_alchemy.types.datetime.DateTimeUTC(timezone=True), nullable=False
        ),
        sa.Column(
            "tombstoned_at",
            advanced_alchemy.types.datetime.DateTimeUTC(timezone=True),
            nullable=True,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reward_members")),
        sa.UniqueConstraint("match_key", name=op.f("uq_reward_members_match_key")),
    )
    op.create_table(
        "reward_events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("partner_id", advanced_alchemy.types.guid.GUID(length=16), nullable=False),
        sa.Column("event_id", sa.String(length=200), nullable=False),
        sa.Column("body_sha256", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column(
            "member_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "occurred_at",
            advanced_alchemy.types.datetime.DateTimeUTC(timezone=True),
            nullable=False,
        ),
        sa.Column("offer_id", advanced_alchemy.types.guid.GUID(length=16), nullable=True),
        sa.Column(
            "result",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "created_at", advanced_alchemy.types.datetime.DateTimeUTC(timezone=True), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["member_id"],
            ["reward_members.id"],
            name=op.f("fk_reward_events_member_id_reward_members"),
        ),
        sa.ForeignKeyConstraint(
            ["partner_id"], ["partners.id"], name=op.f("fk_reward_events_partner_id_partners")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reward_events")),
        sa.UniqueConstraint("partner_id", "event_id", name=op.f("uq_reward_events_partner_id")),
    )
    op.create_table(
        "reward_lots",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "member_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("wallet", sa.String(length=10), nullable=False),
        sa.Column("issuer_id", advanced_alchemy.types.guid.GUID(length=16), nullable=False),
        sa.Column(
            "event_ref", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "earned_at", advanced_alchemy.types.datetime.DateTimeUTC(timezone=True), nullable=False
        ),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("remaining", sa.BigInteger(), nullable=False),
        sa.Column(
            "funding",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.ForeignKeyConstraint(
            ["event_ref"], ["reward_events.id"], name=op.f("fk_reward_lots_event_ref_reward_events")
        ),
        sa.ForeignKeyConstraint(
            ["issuer_id"], ["partners.id"], name=op.f("fk_reward_lots_issuer_id_partners")
        ),
        sa.ForeignKeyConstraint(
            ["member_id"],
            ["reward_members.id"],
            name=op.f("fk_reward_lots_member_id_reward_members"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reward_lots")),
    )
    op.create_index(
        "ix_reward_lots_spendable",
        "reward_lots",
        ["member_id", "wallet", "earned_at"],
        unique=False,
    )
    op.create_table(
        "reward_lot_uses",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("lot_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("event_ref", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("partner_id", advanced_alchemy.types.guid.GUID(length=16), nullable=True),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("at", advanced_alchemy.types.datetime.DateTimeUTC(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["event_ref"],
            ["reward_events.id"],
            name=op.f("fk_reward_lot_uses_event_ref_reward_events"),
        ),
        sa.ForeignKeyConstraint(
            ["lot_id"], ["reward_lots.id"], name=op.f("fk_reward_lot_uses_lot_id_reward_lots")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reward_lot_uses")),
    )
    op.create_index("ix_reward_lot_uses_kind_at", "reward_lot_uses", ["kind", "at"], unique=False)
    op.create_table(
        "reward_postings",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("txn", sa.String(length=40), nullable=False),
        sa.Column("account", sa.String(length=10), nullable=False),
        sa.Column("partner_id", advanced_alchemy.types.guid.GUID(length=16), nullable=True),
        sa.Column("member_id", sa.BigInteger(), nullable=True),
        sa.Column("lot_id", sa.BigInteger(), nullable=True),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("at", advanced_alchemy.types.datetime.DateTimeUTC(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reward_postings")),
    )
    op.create_index("ix_reward_postings_txn", "reward_postings", ["txn"], unique=False)
    op.create_table(
        "reward_feed",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("partner_id", advanced_alchemy.types.guid.GUID(length=16), nullable=False),
        sa.Column(
            "event_ref", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("customer_ref", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column(
            "occurred_at",
            advanced_alchemy.types.datetime.DateTimeUTC(timezone=True),
            nullable=False,
        ),
        sa.Column("source_partner_id", advanced_alchemy.types.guid.GUID(length=16), nullable=False),
        sa.Column(
            "created_at", advanced_alchemy.types.datetime.DateTimeUTC(timezone=True), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["event_ref"], ["reward_events.id"], name=op.f("fk_reward_feed_event_ref_reward_events")
        ),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_reward_feed")),
        sa.UniqueConstraint("partner_id", "event_ref", name=op.f("uq_reward_feed_partner_id")),
    )
    op.create_index("ix_reward_feed_reader", "reward_feed", ["partner_id", "seq"], unique=False)
    op.create_table(
        "reward_settlements",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "period_start",
            advanced_alchemy.types.datetime.DateTimeUTC(timezone=True),
            nullable=False,
        ),
        sa.Column(
            "period_end", advanced_alchemy.types.datetime.DateTimeUTC(timezone=True), nullable=False
        ),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("point_value_minor", sa.Integer(), nullable=False),
        sa.Column(
            "lines",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "closed_at", advanced_alchemy.types.datetime.DateTimeUTC(timezone=True), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reward_settlements")),
        sa.UniqueConstraint("period_start", name=op.f("uq_reward_settlements_period_start")),
    )


def downgrade() -> None:
    op.drop_table("reward_settlements")
    op.drop_table("reward_feed")
    op.drop_table("reward_postings")
    op.drop_table("reward_lot_uses")
    op.drop_table("reward_lots")
    op.drop_table("reward_events")
    op.drop_table("reward_members")
