"""Several hub processes on one database: revocation and suspension reach every process.

The second process is a real `hub serve` subprocess; the first is the module's live server.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT, Hub, free_port

HUB = str(Path(sys.executable).with_name("hub"))


@pytest.fixture(scope="module")
def second_process(hub: Hub) -> Iterator[str]:
    port = free_port()
    issuer = hub.http.get("/.well-known/oauth-authorization-server").json()["issuer"]
    env = {
        **os.environ,
        "HUB_CONFIG": str(ROOT / "config" / "test.toml"),
        "HUB_DATABASE_URL": hub.database_url,
        "HUB_SERVER_DATA_DIR": str(hub.data_dir),
        "HUB_OAUTH_ISSUER": issuer,
    }
    process = subprocess.Popen(
        [HUB, "serve", "--port", str(port), "--no-worker"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{url}/health/ready", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(
                f"hub serve did not start: {process.stderr.read() if process.stderr else ''}"
            )
        time.sleep(0.1)
    try:
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def wait_for_status(url: str, headers: dict[str, str], status: int, within: float) -> float:
    started = time.monotonic()
    while True:
        if httpx.get(f"{url}/v1/me", headers=headers).status_code == status:
            return time.monotonic() - started
        if time.monotonic() - started > within:
            raise AssertionError(f"{url} did not answer {status} within {within} s")
        time.sleep(0.05)


def test_a_revocation_reaches_every_process_within_5_seconds(hub: Hub, second_process: str) -> None:
    _, client, headers = hub.partner_with_token("airline")
    assert httpx.get(f"{second_process}/v1/me", headers=headers).status_code == 200  # cached there
    token = headers["Authorization"].split()[1]
    hub.http.post(
        "/oauth/revoke", data={"token": token}, auth=(client["client_id"], client["client_secret"])
    )
    assert hub.http.get("/v1/me", headers=headers).status_code == 401  # at once where revoked
    wait_for_status(second_process, headers, 401, within=5.0)


def test_a_suspension_reaches_every_process(hub: Hub, second_process: str) -> None:
    partner, client, headers = hub.partner_with_token("hotel")
    assert httpx.get(f"{second_process}/v1/me", headers=headers).status_code == 200
    hub.as_admin("PATCH", f"/v1/partners/{partner['id']}", json={"status": "suspended"})
    wait_for_status(second_process, headers, 401, within=5.0)
    hub.as_admin("PATCH", f"/v1/partners/{partner['id']}", json={"status": "active"})
    # Reactivated: tokens from before the suspension stay dead everywhere, fresh ones work.
    fresh = hub.token(client["client_id"], client["client_secret"])
    wait_for_status(second_process, {"Authorization": f"Bearer {fresh}"}, 200, within=5.0)
    assert httpx.get(f"{second_process}/v1/me", headers=headers).status_code == 401


def test_a_token_issued_by_one_process_is_honoured_by_the_other(
    hub: Hub, second_process: str
) -> None:
    partner = hub.create_partner("coffee")
    client = hub.create_client(partner["id"])
    response = httpx.post(
        f"{second_process}/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=(client["client_id"], client["client_secret"]),
    )
    assert response.status_code == 200
    headers = {"Authorization": f"Bearer {response.json()['access_token']}"}
    assert hub.http.get("/v1/me", headers=headers).json()["partner"]["id"] == partner["id"]
