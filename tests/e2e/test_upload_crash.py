"""A `hub serve` processing a bulk upload is killed with SIGKILL at random points: the old
records stay intact, the next process resumes the upload, and it is applied exactly once."""

from __future__ import annotations

import os
import random
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
    """A hub that answers the API but leaves uploads to other processes."""
    data_dir = tmp_path_factory.mktemp(f"crash-{backend}")
    with launch_hub(backend, data_dir, HUB_UPLOADS_PROCESS_IN_SERVE="false") as running:
        yield running


def start_processor(hub: Hub) -> subprocess.Popen[bytes]:
    port = free_port()
    env = {
        **os.environ,
        "HUB_CONFIG": str(ROOT / "config" / "test.toml"),
        "HUB_DATABASE_URL": hub.database_url,
        "HUB_SERVER_DATA_DIR": str(hub.data_dir),
        "HUB_OAUTH_ISSUER": hub.url,
        "HUB_UPLOADS_BATCH_ROWS": "100",
        "HUB_UPLOADS_LEASE_SECONDS": "1.5",
        "HUB_UPLOADS_MAX_ATTEMPTS": "20",
    }
    process = subprocess.Popen(
        [HUB, "serve", "--port", str(port), "--no-worker"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return wait_until_ready(process, port)


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(stat[1]) == pid:
                found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def status(hub: Hub, headers: dict[str, str], upload_id: str) -> dict[str, Any]:
    response = hub.http.get(f"/v1/identifiers/uploads/{upload_id}", headers=headers)
    return dict(response.json())


def test_a_killed_processor_loses_nothing_and_applies_nothing_twice(api_only_hub: Hub) -> None:
    hub = api_only_hub
    rng = random.Random(7)
    partner, _, headers = hub.partner_with_token("airline")
    first = [email_record(f"k{i}", ref=f"old-{i}") for i in range(400)]
    processor = start_processor(hub)
    try:
        done = wait_for(hub, headers, send(hub, headers, ndjson(first)).json()["id"])
    finally:
        processor.kill()
        processor.wait()
    assert done["status"] == "completed"
    before = records_of(hub, partner["name"])
    events_before = execute_sql(hub.database_url, "SELECT count(*) FROM consent_events")[0][0]

    # Every old person moves to a new ref, and 29,600 new people arrive.
    second = [email_record(f"k{i}", ref=f"new-{i}") for i in range(30_000)]
    upload_id = send(hub, headers, ndjson(second), compress=True).json()["id"]
    kills = 0
    while kills < 3:
        processor = start_processor(hub)
        deadline = time.monotonic() + 30
        while status(hub, headers, upload_id)["status"] != "processing":
            assert time.monotonic() < deadline, "the upload was not picked up"
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 1.0))
        parsing = children(processor.pid)
        processor.send_signal(signal.SIGKILL)
        processor.wait()
        # Its parsing processes do not outlive it.
        deadline = time.monotonic() + 10
        while [p for p in parsing if alive(p)]:
            assert time.monotonic() < deadline, "parsing processes outlived their hub"
            time.sleep(0.1)
        now = status(hub, headers, upload_id)
        if now["status"] == "completed":
            break  # the kill came too late; nothing left to interrupt
        kills += 1
        assert now["status"] == "processing"
        assert records_of(hub, partner["name"]) == before, "a partial upload became visible"

    assert kills >= 2, "the processor finished before it could be killed; slow it down"
    processor = start_processor(hub)
    try:
        final = wait_for(hub, headers, upload_id, timeout=120)
    finally:
        processor.kill()  # perhaps between the commit and the clean-up
        processor.wait()
    assert final["status"] == "completed", final
    assert (final["rows_read"], final["accepted"], final["refused"]) == (30_000, 30_000, 0)
    assert (final["created"], final["matched"]) == (29_600, 400)
    after = records_of(hub, partner["name"])
    assert set(after) == {f"new-{i}" for i in range(30_000)}
    # One application: per person one grant, per moved-away person one withdrawal.
    events = execute_sql(hub.database_url, "SELECT count(*) FROM consent_events")[0][0]
    assert events - events_before == 30_000 + 400
    # Whatever the kill left behind, the next process sweeps away at its start.
    processor = start_processor(hub)
    try:
        deadline = time.monotonic() + 20
        while execute_sql(hub.database_url, "SELECT count(*) FROM identifier_staging")[0][
            0
        ] or list(Path(hub.data_dir, "uploads").glob("*.body")):
            assert time.monotonic() < deadline, "staging rows or spooled bodies were not swept"
            time.sleep(0.1)
    finally:
        processor.kill()
        processor.wait()
    assert records_of(hub, partner["name"]) == after
