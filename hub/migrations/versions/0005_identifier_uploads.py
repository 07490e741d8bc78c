"""bulk identifier uploads: uploads, their error reports, the staging table

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import advanced_alchemy.types
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
GUID = advanced_alchemy.types.guid.GUID(length=16)
WHEN = advanced_alchemy.types.datetime.DateTimeUTC(timezone=True)
JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "identifier_uploads",
        sa.Column("id", GUID, nullable=False),
        sa.Column("partner_id", GUID, nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("mode", sa.String(length=10), nullable=False),
        sa.Column("format", sa.String(length=10), nullable=False),
        sa.Column("gzip", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("body_sha256", sa.String(length=64), nullable=False),
        sa.Column("idempotency_key", sa.String(length=200), nullable=True),
        sa.Column("rows_read", sa.BigInteger(), nullable=False),
        sa.Column("accepted", sa.BigInteger(), nullable=False),
        sa.Column("refused", sa.BigInteger(), nullable=False),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.Column("updated", sa.BigInteger(), nullable=False),
        sa.Column("removed", sa.BigInteger(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("notice", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("lease_until", WHEN, nullable=True),
        sa.Column("created_at", WHEN, nullable=False),
        sa.Column("started_at", WHEN, nullable=True),
        sa.Column("finished_at", WHEN, nullable=True),
        sa.ForeignKeyConstraint(
            ["partner_id"],
            ["partners.id"],
            name="fk_identifier_uploads_partner_id_partners",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_identifier_uploads"),
        sa.UniqueConstraint("client_id", "idempotency_key", name="uq_identifier_uploads_idem"),
    )
    op.create_index("ix_identifier_uploads_partner_id", "identifier_uploads", ["partner_id"])
    op.create_index("ix_identifier_uploads_status", "identifier_uploads", ["status", "created_at"])
    op.create_table(
        "identifier_upload_errors",
        sa.Column("id", PK, autoincrement=True, nullable=False),
        sa.Column("upload_id", GUID, nullable=False),
        sa.Column("row", sa.BigInteger(), nullable=False),
        sa.Column("field", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["upload_id"],
            ["identifier_uploads.id"],
            name="fk_identifier_upload_errors_upload_id_identifier_uploads",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_identifier_upload_errors"),
    )
    op.create_index(
        "ix_identifier_upload_errors_upload", "identifier_upload_errors", ["upload_id", "id"]
    )
    op.create_table(
        "identifier_staging",
        sa.Column("id", PK, autoincrement=True, nullable=False),
        sa.Column("stage_key", sa.String(length=48), nullable=False),
        sa.Column("row", sa.BigInteger(), nullable=False),
        sa.Column("refused", sa.Boolean(), nullable=False),
        sa.Column("id_type", sa.SmallInteger(), nullable=True),
        sa.Column("match_key", sa.LargeBinary(length=32), nullable=True),
        sa.Column("prev_key", sa.LargeBinary(length=32), nullable=True),
        sa.Column("digest_enc", sa.LargeBinary(length=64), nullable=True),
        sa.Column("data_version", sa.SmallInteger(), nullable=True),
        sa.Column("customer_ref", sa.String(length=200), nullable=True),
        sa.Column("consents", sa.SmallInteger(), nullable=False),
        sa.Column("attributes", JSON, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_identifier_staging"),
        # Transient rows, rebuilt from the spooled body after a crash: no WAL needed.
        prefixes=["UNLOGGED"] if op.get_bind().dialect.name == "postgresql" else [],
    )
    if op.get_bind().dialect.name == "sqlite":
        # SQLite joins by nested loops and needs it; PostgreSQL hash-joins staging rows, and
        # maintaining an index of random keys during COPY would cost more than it saves.
        op.create_index(
            "ix_identifier_staging_key", "identifier_staging", ["stage_key", "id_type", "match_key"]
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.drop_index("ix_identifier_staging_key", table_name="identifier_staging")
    op.drop_table("identifier_staging")
    op.drop_index("ix_identifier_upload_errors_upload", table_name="identifier_upload_errors")
    op.drop_table("identifier_upload_errors")
    op.drop_index("ix_identifier_uploads_status", table_name="identifier_uploads")
    op.drop_index("ix_identifier_uploads_partner_id", table_name="identifier_uploads")
    op.drop_table("identifier_uploads")
