"""staging index per upload: SQLite's staging rows indexed by key once an upload is staged

Revision ID: 0025
Revises: 0024
Create Date: 2026-12-05

On SQLite the staging table carried one index (stage_key, id_type, match_key) for every upload,
maintained row by row while an upload was staged: random match keys, so every insert landed on
a random page of an index ten million entries long (the 10M stage took 398-450 s), and every
staged row deleted after the upload removed its entry again. Now each upload gets a partial
indexes of its own (``partners.identifiers.uploads.staging.index_staged``), built in sorted
passes once its rows are staged and dropped before they are deleted. The table keeps no other
index (a query finding an upload's rows by ``stage_key`` alone scans it: a few per upload).
PostgreSQL's staging has no index and is left as it is.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0025"
down_revision: str | None = "0024"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.drop_index("ix_identifier_staging_key", table_name="identifier_staging")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.create_index(
            "ix_identifier_staging_key", "identifier_staging", ["stage_key", "id_type", "match_key"]
        )
