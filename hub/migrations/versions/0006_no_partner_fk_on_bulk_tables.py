"""identifier_records and consent_events without a foreign key to partners (bulk writes)

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-24
"""

import warnings
from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("identifier_records", "consent_events")


def upgrade() -> None:
    # A per-row check on the largest tables, for partners that are never deleted.
    with warnings.catch_warnings():
        # SQLite rebuilds the tables; reflecting them meets partners' lower(name) index,
        # which SQLAlchemy cannot reflect (and these tables do not need).
        warnings.filterwarnings(
            "ignore", message="Skipped unsupported reflection of expression-based index"
        )
        for table in TABLES:
            with op.batch_alter_table(table) as batch:
                batch.drop_constraint(f"fk_{table}_partner_id_partners", type_="foreignkey")


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.create_foreign_key(
                f"fk_{table}_partner_id_partners",
                "partners",
                ["partner_id"],
                ["id"],
                ondelete="CASCADE",
            )
