"""audit entries name the partners they concern; the database refuses to change the log

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-03

``audit_log.concerns`` is NULL on the rows written before it (their hashes do not cover it);
``audit_log_concerns`` indexes it by partner. Triggers on both tables refuse UPDATE and
DELETE (and TRUNCATE on PostgreSQL): the log is append-only for every connection, the hub's
own included. Rows can still be removed only by someone who may drop the triggers (the
table's owner), and that shows: the chain and the signed heads detect it.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
TABLES = ("audit_log", "audit_log_concerns")
PG_FUNCTION = "audit_log_append_only"


def _sqlite_triggers(table: str) -> list[str]:
    return [
        f"CREATE TRIGGER {table}_no_{verb} BEFORE {verb.upper()} ON {table} "
        f"BEGIN SELECT RAISE(ABORT, '{table} is append-only: {verb.upper()} refused'); END"
        for verb in ("update", "delete")
    ]


def _pg_triggers(table: str) -> list[str]:
    return [
        f"CREATE TRIGGER {table}_no_update_delete BEFORE UPDATE OR DELETE ON {table} "
        f"FOR EACH ROW EXECUTE FUNCTION {PG_FUNCTION}()",
        f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
        f"FOR EACH STATEMENT EXECUTE FUNCTION {PG_FUNCTION}()",
    ]


def upgrade() -> None:
    op.add_column("audit_log", sa.Column("concerns", _JSON, nullable=True))
    op.create_table(
        "audit_log_concerns",
        sa.Column("partner_id", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.ForeignKeyConstraint(
            ["seq"], ["audit_log.seq"], name=op.f("fk_audit_log_concerns_seq_audit_log")
        ),
        sa.PrimaryKeyConstraint("partner_id", "seq", name=op.f("pk_audit_log_concerns")),
    )
    # Older rows hash no concerns, but the index lets their acting partner read them.
    op.execute(
        "INSERT INTO audit_log_concerns (partner_id, seq) "
        "SELECT partner_id, seq FROM audit_log WHERE partner_id IS NOT NULL"
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            f"CREATE FUNCTION {PG_FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $$ "
            "BEGIN RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP "
            "USING ERRCODE = 'insufficient_privilege'; END $$"
        )
        statements = [s for t in TABLES for s in _pg_triggers(t)]
    else:
        statements = [s for t in TABLES for s in _sqlite_triggers(t)]
    for statement in statements:
        op.execute(statement)


def downgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    for table in TABLES:
        names = (
            [f"{table}_no_update_delete", f"{table}_no_truncate"]
            if postgresql
            else [f"{table}_no_update", f"{table}_no_delete"]
        )
        for name in names:
            op.execute(f"DROP TRIGGER {name}" + (f" ON {table}" if postgresql else ""))
    if postgresql:
        op.execute(f"DROP FUNCTION {PG_FUNCTION}()")
    op.drop_table("audit_log_concerns")
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.drop_column("concerns")
