"""The canonical form of an audit entry: concerns inside the hash, older rows unchanged; which
job runs and key operations become entries."""

from __future__ import annotations

import ast
from datetime import UTC, datetime
from pathlib import Path

from hub.core.audit import AuditEvent, chain_hash, job_run_event, key_operation_event

AT = datetime(2026, 11, 1, 12, 0, 0, 123456, tzinfo=UTC)
EVENT = AuditEvent(
    actor="client:cl_1",
    action="partner.onboarded",
    target_type="partner",
    target_id="p1",
    details={"name": "Café", "n": 2},
    request_id="r1",
)
# Computed with hub/core/audit.py as it stood before concerns existed (commit b068eab).
HASH_BEFORE_CONCERNS = "cdb4a4c79e9dadf542ecb29a1a5b6da301b03e2d850a783cc9b72dc7a813f027"


def test_a_row_without_concerns_hashes_as_it_did_before_concerns_existed() -> None:
    assert chain_hash("0" * 64, 1, AT, EVENT) == HASH_BEFORE_CONCERNS


def test_concerns_are_inside_the_hash_even_when_empty() -> None:
    hashes = {
        chain_hash("0" * 64, 1, AT, AuditEvent(**{**_fields(EVENT), "concerns": concerns}))
        for concerns in (None, (), ("p1",), ("p2",), ("p1", "p2"))
    }
    assert len(hashes) == 5


def _fields(event: AuditEvent) -> dict[str, object]:
    return {f: getattr(event, f) for f in event.__struct_fields__}


def test_a_job_run_that_changed_nothing_and_did_not_fail_is_no_entry() -> None:
    for counts in ({}, {"events": 0, "feed_items": 0}, {"skipped": 1}, {"remaining": 7}, None):
        assert job_run_event("rewards_sync", 1, "succeeded", counts, failed=False) is None


def test_a_job_run_that_changed_data_or_failed_is_an_entry_concerning_no_partner() -> None:
    changed = job_run_event("rewards_sync", 4, "succeeded", {"feed_items": 3}, failed=False)
    assert changed is not None
    assert (changed.action, changed.target_id, changed.concerns) == (
        "job.succeeded",
        "rewards_sync",
        (),
    )
    assert changed.details == {"run_id": 4, "counts": {"feed_items": 3}}
    failed = job_run_event("settlement", 5, "failed", {}, failed=True, error="Boom.")
    assert failed is not None
    assert (failed.action, failed.details["error"], failed.concerns) == ("job.failed", "Boom.", ())
    abandoned = job_run_event("points_expiry", 6, "abandoned", {"lots": 2}, failed=False)
    assert abandoned is not None
    assert abandoned.action == "job.abandoned"


def test_a_key_operation_is_an_entry_concerning_no_partner() -> None:
    event = key_operation_event("data_key_added", "data", "v2", saved=True)
    assert (event.actor, event.action, event.target_type, event.target_id) == (
        "cli:admin",
        "keys.data_key_added",
        "keyring",
        "v2",
    )
    assert event.details == {"kind": "data", "saved": True}
    assert event.concerns == ()


# Targets whose entries concern more than the acting partner (DESIGN.md "Audit").
SHARED_TARGETS = {"partnership", "offer", "coalition"}


def test_every_partnership_offer_and_matrix_entry_names_its_concerns() -> None:
    """Walks the code (``ast``): an ``actor.event(<action>, "partnership" | "offer" |
    "coalition", ...)`` without ``concerns=`` would concern the actor's partner alone, and
    the other member would never read it."""
    root = Path(__file__).resolve().parents[2]
    missing = []
    for package in ("hub", "partners", "matching"):
        for path in sorted((root / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                if not (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "event"
                    and len(node.args) >= 2
                    and isinstance(node.args[1], ast.Constant)
                    and node.args[1].value in SHARED_TARGETS
                ):
                    continue
                if not any(k.arg == "concerns" for k in node.keywords):
                    missing.append(f"{path.relative_to(root)}:{node.lineno}")
    assert missing == []
