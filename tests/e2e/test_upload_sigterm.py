"""SIGTERM while an upload is being applied: `hub serve` stops at once, and the next process
finishes the upload exactly once: before the flip the old records stay current and the
unfinished generation is discarded; after it only the tidying is left. A test-only pause
(between two slices, or after the flip) makes the signal land in that phase every time."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.api.uploads_helpers import email_record, ndjson, records_of, send, wait_for
from tests.conftest import ROOT, Hub, execute_sql, free_port, launch_hub
from tests.e2e.serving import wait_until_ready

HUB = str(Path(sys.executable).with_name("hub"))


@pytest.fixture(scope="module")
def api_only_hub(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    data_dir = tmp_path_factory.mktemp(f"sigterm-{backend}")
    with launch_hub(backend, data_dir, HUB_UPLOADS_PROCESS_IN_SERVE="false") as running:
        yield running


def start_processor(hub: Hub, **env: str) -> subprocess.Popen[bytes]:
    port = free_port()
    process = subprocess.Popen(
        [HUB, "serve", "--port", str(port), "--no-worker"],
        env={
            **os.environ,
            "HUB_CONFIG": str(ROOT / "config" / "test.toml"),
            "HUB_DATABASE_URL": hub.database_url,
            "HUB_SERVER_DATA_DIR": str(hub.data_dir),
            "HUB_OAUTH_ISSUER": hub.url,
            "HUB_UPLOADS_LEASE_SECONDS": "1.5",
            **env,
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return wait_until_ready(process, port)


def status(hub: Hub, headers: dict[str, str], upload_id: str) -> dict[str, Any]:
    return dict(hub.http.get(f"/v1/identifiers/uploads/{upload_id}", headers=headers).json())


@pytest.mark.parametrize(
    ("pause", "phase"),
    [
        ("HUB_UPLOADS_TEST_APPLY_PAUSE_SECONDS", "applying"),
        ("HUB_UPLOADS_TEST_FLIP_PAUSE_SECONDS", "tidying"),
    ],
    ids=["between-slices", "after-the-flip"],
)
def test_sigterm_mid_apply_stops_the_hub_and_the_upload_resumes_once(
    api_only_hub: Hub, pause: str, phase: str
) -> None:
    """Stopped between two slices, the unfinished generation is discarded and the upload
    applied again; stopped after its flip, only its tidying is left and it is not applied a
    second time. Either way: the records once, the consent events once."""
    hub = api_only_hub
    partner, _, headers = hub.partner_with_token(f"airline-{phase}")
    processor = start_processor(hub)
    try:
        first = [email_record(f"t{i}", ref=f"old-{i}") for i in range(300)]
        loaded = wait_for(hub, headers, send(hub, headers, ndjson(first)).json()["id"])
        assert loaded["status"] == "completed", loaded
    finally:
        processor.kill()
        processor.wait()
    before = records_of(hub, partner["name"])
    events_before = execute_sql(hub.database_url, "SELECT count(*) FROM consent_events")[0][0]

    # A replace: t0-t99 go, t100-t299 move to a new ref, 500 people arrive.
    snapshot = [email_record(f"t{i}", ref=f"new-{i}") for i in range(100, 800)]
    upload_id = send(hub, headers, ndjson(snapshot), mode="replace").json()["id"]
    processor = start_processor(hub, **{pause: "600"})
    phases = []
    deadline = time.monotonic() + 60
    while (now := status(hub, headers, upload_id))["phase"] != phase:
        phases.append(now["phase"])
        assert now["status"] in ("pending", "processing"), now
        assert time.monotonic() < deadline, f"the upload never reached {phase}"
        time.sleep(0.02)
    assert set(phases) <= {None, "staging", "applying"}
    processor.send_signal(signal.SIGTERM)
    # It stops: neither the 600 s pause nor SQLite's 30 s busy timeout is waited out.
    assert processor.wait(timeout=20) is not None
    assert status(hub, headers, upload_id)["status"] == "processing"
    snapshot_refs = {f"new-{i}" for i in range(100, 800)}
    if phase == "applying":
        assert records_of(hub, partner["name"]) == before, "a partial apply became visible"
    else:  # flipped: the new records are current, all of them
        assert set(records_of(hub, partner["name"])) == snapshot_refs
    events = execute_sql(hub.database_url, "SELECT count(*) FROM consent_events")[0][0]
    assert events == events_before  # published by the tidying, which has not run

    processor = start_processor(hub)
    try:
        final = wait_for(hub, headers, upload_id, timeout=120)
    finally:
        processor.kill()
        processor.wait()
    assert final["status"] == "completed", final
    assert (final["created"], final["matched"], final["removed"]) == (500, 200, 100)
    assert (final["phase"], final["rows_read"]) == (None, 700)
    assert set(records_of(hub, partner["name"])) == snapshot_refs
    # Applied once: a grant per new person, a withdrawal per moved-away or removed one.
    events = execute_sql(hub.database_url, "SELECT count(*) FROM consent_events")[0][0]
    assert events - events_before == 700 + 300
