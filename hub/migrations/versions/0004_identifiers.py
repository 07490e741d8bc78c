"""identifier records, consent events, per-partner identifier state

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import advanced_alchemy.types
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
GUID = advanced_alchemy.types.guid.GUID(length=16)
WHEN = advanced_alchemy.types.datetime.DateTimeUTC(timezone=True)


def upgrade() -> None:
    op.create_table(
        "identifier_records",
        sa.Column("id", PK, autoincrement=True, nullable=False),
        sa.Column("partner_id", GUID, nullable=False),
        sa.Column("id_type", sa.SmallInteger(), nullable=False),
        sa.Column("match_key", sa.LargeBinary(length=32), nullable=False),
        sa.Column("key_version", sa.SmallInteger(), nullable=False),
        sa.Column("digest_enc", sa.LargeBinary(length=64), nullable=False),
        sa.Column("data_version", sa.SmallInteger(), nullable=False),
        sa.Column("customer_ref", sa.String(length=200), nullable=False),
        sa.Column("consents", sa.SmallInteger(), nullable=False),
        sa.Column(
            "attributes",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("updated_at", WHEN, nullable=False),
        sa.ForeignKeyConstraint(
            ["partner_id"],
            ["partners.id"],
            name="fk_identifier_records_partner_id_partners",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_identifier_records"),
        sa.UniqueConstraint("partner_id", "id_type", "match_key", name="uq_identifier_records_key"),
    )
    op.create_index(
        "ix_identifier_records_person", "identifier_records", ["partner_id", "customer_ref"]
    )
    op.create_table(
        "consent_events",
        sa.Column("seq", PK, autoincrement=True, nullable=False),
        sa.Column("partner_id", GUID, nullable=False),
        sa.Column("customer_ref", sa.String(length=200), nullable=False),
        sa.Column("granted", sa.SmallInteger(), nullable=False),
        sa.Column("withdrawn", sa.SmallInteger(), nullable=False),
        sa.Column("cause", sa.String(length=20), nullable=False),
        sa.Column("at", WHEN, nullable=False),
        sa.ForeignKeyConstraint(
            ["partner_id"],
            ["partners.id"],
            name="fk_consent_events_partner_id_partners",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("seq", name="pk_consent_events"),
    )
    op.create_index("ix_consent_events_partner_seq", "consent_events", ["partner_id", "seq"])
    op.create_table(
        "identifier_state",
        sa.Column("partner_id", GUID, nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", WHEN, nullable=False),
        sa.ForeignKeyConstraint(
            ["partner_id"],
            ["partners.id"],
            name="fk_identifier_state_partner_id_partners",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("partner_id", name="pk_identifier_state"),
    )


def downgrade() -> None:
    op.drop_table("identifier_state")
    op.drop_index("ix_consent_events_partner_seq", table_name="consent_events")
    op.drop_table("consent_events")
    op.drop_index("ix_identifier_records_person", table_name="identifier_records")
    op.drop_table("identifier_records")
