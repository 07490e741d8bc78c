"""The audit log is a hash chain: edits, deletions and a truncated tail are all detected.

The database refuses UPDATE and DELETE on the log (triggers, migration 0017). To show that
the chain still catches an edit by someone who can drop those triggers (the tables' owner),
the tampering tests lift the guard explicitly with :func:`guard_lifted` and restore it.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from sqlalchemy.exc import DBAPIError

from hub.migrate import MIGRATIONS
from tests.conftest import Hub, execute_sql, run_cli


def _append_only_migration() -> ModuleType:
    (path,) = Path(MIGRATIONS, "versions").glob("*_audit_concerns.py")
    spec = importlib.util.spec_from_file_location("audit_append_only", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextmanager
def guard_lifted(database_url: str) -> Iterator[None]:
    """Drop the append-only triggers (as the tables' owner could) and put them back after."""
    migration = _append_only_migration()
    postgres = database_url.startswith("postgresql")
    make = migration._pg_triggers if postgres else migration._sqlite_triggers
    names = [s.split()[2] for table in migration.TABLES for s in make(table)]
    on = {n: f" ON {n.rsplit('_no_', 1)[0]}" if postgres else "" for n in names}
    for name in names:
        execute_sql(database_url, f"DROP TRIGGER {name}{on[name]}")
    try:
        yield
    finally:
        for table in migration.TABLES:
            for statement in make(table):
                execute_sql(database_url, statement)


@pytest.fixture(scope="module")
def history(hub: Hub) -> None:
    for category in ("airline", "hotel", "coffee"):
        partner = hub.create_partner(category)
        hub.as_admin("PATCH", f"/v1/partners/{partner['id']}", json={"status": "suspended"})


def save_head(hub: Hub, tmp_path: Path) -> Path:
    head = hub.as_admin("GET", "/v1/audit/head").json()
    path = tmp_path / "head.json"
    path.write_text(json.dumps(head))
    return path


def verify(hub: Hub, head: Path | None = None) -> Any:
    args = ["admin", "audit", "verify", "--json"]
    if head:
        args += ["--head", str(head)]
    result = run_cli(hub, *args)
    return result.exit_code, json.loads(result.output)


def test_the_untouched_chain_verifies_against_its_signed_head(
    hub: Hub, history: None, tmp_path: Path
) -> None:
    head = save_head(hub, tmp_path)
    code, report = verify(hub, head)
    assert code == 0, report
    assert report["ok"] is True
    assert report["rows"] >= json.loads(head.read_text())["count"] >= 7


def test_an_edited_row_is_detected(hub: Hub, history: None) -> None:
    (seq, details), *_ = execute_sql(
        hub.database_url,
        "SELECT seq, details FROM audit_log WHERE action = 'partner.onboarded' "
        "ORDER BY seq LIMIT 1",
    )
    original = details if isinstance(details, str) else json.dumps(details)
    tampered = json.dumps({"name": "someone else", "category": "airline"})
    update = "UPDATE audit_log SET details = :d WHERE seq = :s"
    with pytest.raises(DBAPIError, match="append-only"):
        execute_sql(hub.database_url, update, d=tampered, s=seq)
    with guard_lifted(hub.database_url):
        execute_sql(hub.database_url, update, d=tampered, s=seq)
        try:
            code, report = verify(hub)
            assert code == 1
            assert any(f"row {seq} was altered" in p for p in report["problems"])
        finally:
            execute_sql(hub.database_url, update, d=original, s=seq)
    assert verify(hub)[0] == 0


def test_a_deleted_row_is_detected(hub: Hub, history: None) -> None:
    columns = (
        "seq, at, actor, partner_id, action, target_type, target_id, details, request_id, "
        "prev_hash, hash, concerns"
    )
    row = execute_sql(hub.database_url, f"SELECT {columns} FROM audit_log WHERE seq = 2")[0]
    with pytest.raises(DBAPIError, match="append-only"):
        execute_sql(hub.database_url, "DELETE FROM audit_log WHERE seq = 2")
    with guard_lifted(hub.database_url):
        execute_sql(hub.database_url, "DELETE FROM audit_log_concerns WHERE seq = 2")
        execute_sql(hub.database_url, "DELETE FROM audit_log WHERE seq = 2")
        try:
            code, report = verify(hub)
            assert code == 1
            assert any("row 2 is missing" in p for p in report["problems"])
        finally:
            names = [c.strip() for c in columns.split(",")]
            values = dict(zip(names, row, strict=True))
            for name in ("details", "concerns"):
                if values[name] is not None and not isinstance(values[name], str):
                    values[name] = json.dumps(values[name])
            execute_sql(
                hub.database_url,
                f"INSERT INTO audit_log ({columns}) VALUES ({', '.join(':' + n for n in names)})",
                **values,
            )
    assert verify(hub)[0] == 0


def test_audit_list_filters_and_pages(hub: Hub, history: None) -> None:
    suspended = hub.as_admin("GET", "/v1/audit", params={"action": "partner.suspended"}).json()[
        "items"
    ]
    assert len(suspended) >= 3
    assert all(e["action"] == "partner.suspended" for e in suspended)
    assert all(e["actor"] == f"client:{hub.admin_id}" for e in suspended)
    by_actor = hub.as_admin("GET", "/v1/audit", params={"actor": "cli:admin"}).json()["items"]
    assert [e["action"] for e in by_actor] == ["client.created"]
    first = hub.as_admin("GET", "/v1/audit", params={"limit": 2}).json()
    second = hub.as_admin(
        "GET", "/v1/audit", params={"limit": 2, "cursor": first["next_cursor"]}
    ).json()
    seqs = [e["seq"] for e in first["items"] + second["items"]]
    assert seqs == sorted(seqs, reverse=True)
    assert len(set(seqs)) == 4


def test_no_secret_ever_reaches_the_audit_log(hub: Hub) -> None:
    partner = hub.create_partner("bank_card")
    client = hub.create_client(partner["id"])
    everything = execute_sql(hub.database_url, "SELECT details FROM audit_log")
    assert client["client_secret"] not in str(everything)


# Destructive: runs last in this module.
def test_a_truncated_tail_is_detected_against_an_earlier_signed_head(
    hub: Hub, history: None, tmp_path: Path
) -> None:
    head = save_head(hub, tmp_path)
    count = json.loads(head.read_text())["count"]
    with guard_lifted(hub.database_url):
        execute_sql(hub.database_url, "DELETE FROM audit_log_concerns WHERE seq > :n", n=count - 2)
        execute_sql(hub.database_url, "DELETE FROM audit_log WHERE seq > :n", n=count - 2)
    # Without a head the shortened chain is self-consistent; the signed head catches it.
    assert verify(hub)[0] == 0
    code, report = verify(hub, head)
    assert code == 1
    assert any("removed from the tail" in p for p in report["problems"])


def test_a_forged_head_is_refused(hub: Hub, history: None, tmp_path: Path) -> None:
    head = save_head(hub, tmp_path)
    forged = json.loads(head.read_text())
    forged["count"] = 1
    head.write_text(json.dumps(forged))
    result = run_cli(hub, "admin", "audit", "verify", "--head", str(head))
    assert result.exit_code != 0
    assert "signature" in result.output or "does not verify" in result.output
