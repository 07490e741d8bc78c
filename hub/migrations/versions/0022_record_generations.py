"""identifier records in generations: a bulk upload is written in slices and flipped at once

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-03

``identifier_records`` gains ``generation`` (part of the key: while an upload is applied a
person's new record stands beside the old one) and ``retired`` (the generation from which a
record no longer counts). ``identifier_state`` gains ``generation`` (the current one) and
``pending`` (the one being written, NULL when none); ``identifier_uploads.applied`` counts
the staged rows an apply in progress has written. ``identifier_pending_events`` holds the
consent changes an upload makes until they join ``consent_events`` after its flip.
"""

import warnings
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0022"
down_revision: str | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KEY = ["partner_id", "id_type", "match_key"]


def _big() -> sa.types.TypeEngine[int]:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="Skipped unsupported reflection of expression-based index"
        )
        with op.batch_alter_table("identifier_records", recreate="always") as batch:
            batch.add_column(
                sa.Column("generation", sa.BigInteger(), nullable=False, server_default="0")
            )
            batch.add_column(sa.Column("retired", sa.BigInteger(), nullable=True))
            batch.drop_constraint("pk_identifier_records", type_="primary")
            batch.create_primary_key("pk_identifier_records", [*KEY, "generation"])
    op.create_index(
        "ix_identifier_records_retired",
        "identifier_records",
        ["partner_id", "retired"],
        postgresql_where=sa.text("retired IS NOT NULL"),
        sqlite_where=sa.text("retired IS NOT NULL"),
    )
    op.add_column(
        "identifier_state",
        sa.Column("generation", sa.BigInteger(), nullable=False, server_default="0"),
    )
    op.add_column("identifier_state", sa.Column("pending", sa.BigInteger(), nullable=True))
    op.add_column(
        "identifier_uploads",
        sa.Column("applied", sa.BigInteger(), nullable=False, server_default="0"),
    )
    op.create_table(
        "identifier_pending_events",
        sa.Column("id", _big(), primary_key=True, autoincrement=True),
        sa.Column("partner_id", sa.Uuid(), nullable=False),
        sa.Column("generation", sa.BigInteger(), nullable=False),
        sa.Column("customer_ref", sa.String(200), nullable=False),
        sa.Column("granted", sa.SmallInteger(), nullable=False),
        sa.Column("withdrawn", sa.SmallInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_identifier_pending_events"),
    )
    op.create_index(
        "ix_identifier_pending_events_person",
        "identifier_pending_events",
        ["partner_id", "customer_ref"],
    )


def downgrade() -> None:
    op.drop_index("ix_identifier_pending_events_person", "identifier_pending_events")
    op.drop_table("identifier_pending_events")
    with op.batch_alter_table("identifier_uploads") as batch:
        batch.drop_column("applied")
    op.drop_index("ix_identifier_records_retired", "identifier_records")
    # Only current records come back (one per key): pending and retired ones are dropped.
    op.execute(
        "DELETE FROM identifier_records WHERE retired IS NOT NULL OR generation > "
        "(SELECT s.generation FROM identifier_state s "
        "WHERE s.partner_id = identifier_records.partner_id)"
    )
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="Skipped unsupported reflection of expression-based index"
        )
        with op.batch_alter_table("identifier_records", recreate="always") as batch:
            batch.drop_constraint("pk_identifier_records", type_="primary")
            batch.create_primary_key("pk_identifier_records", KEY)
            batch.drop_column("retired")
            batch.drop_column("generation")
    with op.batch_alter_table("identifier_state") as batch:
        batch.drop_column("pending")
        batch.drop_column("generation")
