"""`hub worker` processes bulk uploads (issue 19's scale-out): with the serving process told
not to (`HUB_UPLOADS_PROCESS_IN_SERVE=false`), a real `hub worker` subprocess parses, applies
and builds the arrays, and the serving process answers the first question from the files it
saved, without a build of its own. SIGTERM stops the worker cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from matching.array_files import version_name
from matching.loader import ArrayCache
from tests.api.matching_helpers import email, members, overlap, rec
from tests.api.uploads_helpers import ndjson, send, upload_and_wait
from tests.conftest import ROOT, Hub, launch_hub

HUB = str(Path(sys.executable).with_name("hub"))
QUIET = {"HUB_MATCHING_MAINTENANCE_SECONDS": "3600"}


@pytest.fixture(scope="module")
def front(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    data_dir = tmp_path_factory.mktemp(f"front-{backend}")
    with launch_hub(backend, data_dir, HUB_UPLOADS_PROCESS_IN_SERVE="false", **QUIET) as hub:
        yield hub


def start_worker(hub: Hub, **env: str) -> subprocess.Popen[bytes]:
    """A `hub worker` subprocess, returned once its scheduler has started (its signal
    handlers are in place from then on)."""
    worker = subprocess.Popen(
        [HUB, "worker"],
        env={
            **os.environ,
            "HUB_CONFIG": str(ROOT / "config" / "test.toml"),
            "HUB_DATABASE_URL": hub.database_url,
            "HUB_SERVER_DATA_DIR": str(hub.data_dir),
            "HUB_LOGGING_LEVEL": "INFO",
            **env,
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert worker.stdout is not None
    lines = []
    for line in worker.stdout:  # ends when the worker exits (then the assertion says why)
        lines.append(line)
        if b"scheduler started" in line:
            break
    assert worker.poll() is None, b"".join(lines)
    # The rest of its output is read by nobody: a thread drains it so the pipe never fills.
    threading.Thread(target=worker.stdout.read, daemon=True).start()
    return worker


def stop(worker: subprocess.Popen[bytes]) -> int:
    worker.send_signal(signal.SIGTERM)
    return worker.wait(timeout=30)


def test_the_worker_applies_uploads_and_leaves_the_arrays_the_server_opens(front: Hub) -> None:
    worker = start_worker(front)
    try:
        a, b, partnership = members(front)
        for member, prefix in ((a, "a"), (b, "b")):
            body = ndjson([rec(email(f"{a.id}{n}"), f"{prefix}{n:03d}") for n in range(25)])
            done = upload_and_wait(front, member.headers, body)
            assert done["status"] == "completed", done
            assert done["created"] == 25
            version = member.get(front, "/v1/identifiers/summary").json()["version"]
            key_version = front.app.state.identifier_crypto.keys.match_version
            built = front.data_dir / "arrays" / member.id / version_name(version, key_version)
            assert built.is_dir(), "the worker saved no arrays for the upload's version"
        cache: ArrayCache = front.app.state.array_cache
        builds = cache.builds
        answer = overlap(front, a, partnership)
        assert answer.status_code == 200, answer.text
        assert answer.json()["count"] == 25
        assert cache.builds == builds  # opened the worker's files
    finally:
        code = stop(worker)
    assert code == 0, worker.stderr.read() if worker.stderr else ""


def test_a_worker_told_not_to_leaves_uploads_alone(front: Hub) -> None:
    worker = start_worker(front, HUB_UPLOADS_PROCESS_IN_WORKER="false")
    try:
        _, _, headers = front.partner_with_token()
        response = send(front, headers, ndjson([rec(email("alone"), "x1")]))
        assert response.status_code == 202, response.text
        time.sleep(3)  # the worker's poll interval is 0.2 s here
        status = front.http.get(f"/v1/identifiers/uploads/{response.json()['id']}", headers=headers)
        assert status.json()["status"] == "pending", status.text
    finally:
        code = stop(worker)
    assert code == 0, worker.stderr.read() if worker.stderr else ""
    # Another worker that processes uploads takes it up (nothing was lost meanwhile).
    second = start_worker(front)
    try:
        deadline = time.monotonic() + 60
        while True:
            status = front.http.get(
                f"/v1/identifiers/uploads/{response.json()['id']}", headers=headers
            ).json()
            if status["status"] == "completed":
                break
            assert time.monotonic() < deadline, status
            time.sleep(0.1)
    finally:
        assert stop(second) == 0
