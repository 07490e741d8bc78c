"""An embedded database busy past the writer's wait (a large upload being applied holds
SQLite's write lock) is a 503 problem with Retry-After, and nothing is written."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from structlog.testing import CapturedCall, CapturingLogger

from partners.identifiers.uploads import processor
from tests.api.uploads_helpers import email_record, ndjson, upload_and_wait
from tests.conftest import Hub, launch_hub, table_counts


@pytest.fixture(scope="module")
def impatient_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    with launch_hub(
        "sqlite",
        tmp_path_factory.mktemp("busy"),
        HUB_DATABASE_SQLITE_BUSY_TIMEOUT_MS="200",
    ) as running:
        yield running


def test_a_writer_kept_waiting_gets_503_and_nothing_changes(impatient_hub: Hub) -> None:
    hub = impatient_hub
    before = table_counts(hub.database_url)
    holder = sqlite3.connect(Path(hub.database_url.split("///", 1)[1]), isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")  # as the apply of a large upload does
        response = hub.as_admin("POST", "/v1/partners", json={"name": "x", "category": "hotel"})
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "5"
    assert response.headers["content-type"].startswith("application/problem+json")
    assert "busy" in response.json()["detail"]
    assert table_counts(hub.database_url) == before
    again = hub.as_admin("POST", "/v1/partners", json={"name": "x", "category": "hotel"})
    assert again.status_code == 201


def test_the_upload_processor_waits_out_a_busy_database_with_a_warning(
    impatient_hub: Hub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its claim loop meets SQLite's lock (held here as a long apply holds it) at every poll:
    each is a warning naming the driver's error, never an error with a traceback, and the
    processor carries on once the lock is free."""
    hub = impatient_hub
    _, _, headers = hub.partner_with_token()
    captured = capture_processor_log(monkeypatch)
    holder = sqlite3.connect(Path(hub.database_url.split("///", 1)[1]), isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        time.sleep(1.5)  # the processor polls every 0.2 s and waits 0.2 s on the lock
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    calls = [(call.method_name, call.kwargs) for call in captured.calls]
    waits = [kw for name, kw in calls if name == "warning"]
    assert waits, calls
    assert all(kw["event"] == "upload processing waits for the database" for kw in waits)
    assert all(kw["error"] == "OperationalError" for kw in waits)
    assert not [kw for name, kw in calls if name in ("error", "exception", "critical")], calls
    done = upload_and_wait(hub, headers, ndjson([email_record(1), email_record(2)]))
    assert done["status"] == "completed", done
    assert (done["accepted"], done["created"]) == (2, 2), done


def test_a_bug_in_the_claim_loop_is_still_an_error_with_its_traceback(
    impatient_hub: Hub, monkeypatch: pytest.MonkeyPatch
) -> None:
    captured = capture_processor_log(monkeypatch)
    upload_processor = hub_processor(impatient_hub)

    async def broken(busy: frozenset[object] = frozenset()) -> None:
        raise LookupError("a bug")

    monkeypatch.setattr(upload_processor, "claim", broken)
    deadline = time.monotonic() + 10
    while not failures(captured) and time.monotonic() < deadline:
        time.sleep(0.05)
    monkeypatch.undo()
    first = failures(captured)[0]
    assert first.method_name == "error", captured.calls
    assert first.kwargs["event"] == "upload processing failed"
    assert "LookupError: a bug" in first.kwargs["exception"]


def failures(captured: CapturingLogger) -> list[CapturedCall]:
    return [call for call in captured.calls if call.method_name in ("warning", "error")]


def capture_processor_log(monkeypatch: pytest.MonkeyPatch) -> CapturingLogger:
    """The upload processor's log lines, as structlog renders them (tracebacks as text)."""
    captured = CapturingLogger()
    monkeypatch.setattr(
        processor,
        "log",
        structlog.wrap_logger(
            captured,
            processors=[structlog.processors.format_exc_info],
            wrapper_class=structlog.make_filtering_bound_logger(0),
        ),
    )
    return captured


def hub_processor(hub: Hub) -> processor.UploadProcessor:
    found = hub.app.state.upload_processor
    assert isinstance(found, processor.UploadProcessor)
    return found
