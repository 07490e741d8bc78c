"""signing_key_rotation on a hub that runs the scheduler in-process, with 12-second tokens and
a 1-second clock leeway, so "until every token it signed has expired" passes in seconds: a new
key signs, the old one verifies its tokens until they expire, then leaves the JWKS; with a
keyring the job cannot write, the run is recorded skipped with the reason."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from joserfc import jws
from sqlalchemy.ext.asyncio import async_sessionmaker

from hub.core import keyring as keyring_module
from hub.core.db import create_hub_async_engine
from hub.core.keyring import load_keyring
from hub.jobs.registry import job_specs
from hub.jobs.runner import JobRunner
from tests.conftest import Hub, launch_hub, run_cli
from tests.jobs.helpers import QUIET_JOBS, runs, wait_until

TTL = 12  # seconds: long enough for a loaded machine to check the old token before it expires
LEEWAY = 1
JOB = "signing_key_rotation"


@pytest.fixture(scope="module")
def short_tokens_hub(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    data_dir = tmp_path_factory.mktemp(f"signing-{backend}")
    with launch_hub(
        backend,
        data_dir,
        HUB_JOBS_RUN_IN_SERVE="true",
        HUB_OAUTH_ACCESS_TOKEN_TTL_SECONDS=str(TTL),
        HUB_OAUTH_CLOCK_LEEWAY_SECONDS=str(LEEWAY),
        **QUIET_JOBS,
    ) as running:
        yield running


def as_admin(hub: Hub, method: str, path: str, **kw: Any) -> httpx.Response:
    hub._admin_token = None  # tokens live 4 s here: a fresh one for every call
    return hub.as_admin(method, path, **kw)


def kid_of(token: str) -> str:
    return str(jws.extract_compact(token.encode()).protected["kid"])


def jwks_kids(hub: Hub) -> set[str]:
    response = hub.http.get("/.well-known/jwks.json")
    assert response.status_code == 200
    return {key["kid"] for key in response.json()["keys"]}


def me(hub: Hub, token: str) -> int:
    return hub.http.get("/v1/me", headers={"Authorization": f"Bearer {token}"}).status_code


def run_job(hub: Hub) -> dict[str, Any]:
    """Ask for a run through the API and wait for its outcome."""
    last = as_admin(hub, "GET", f"/v1/jobs/{JOB}/runs", params={"limit": 1}).json()["items"]
    before = last[0]["id"] if last else 0
    assert as_admin(hub, "POST", f"/v1/jobs/{JOB}/run").status_code == 202

    def finished() -> dict[str, Any] | None:
        items = as_admin(hub, "GET", f"/v1/jobs/{JOB}/runs", params={"limit": 1}).json()["items"]
        if items and items[0]["id"] > before and items[0]["status"] != "running":
            return dict(items[0])
        return None

    return dict(wait_until(finished, 20, "a finished signing_key_rotation run"))


def audit_actions(hub: Hub, action: str) -> list[dict[str, Any]]:
    response = as_admin(hub, "GET", "/v1/audit", params={"action": action})
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


def test_the_job_is_listed_with_its_weekly_schedule(short_tokens_hub: Hub) -> None:
    jobs = as_admin(short_tokens_hub, "GET", "/v1/jobs").json()["items"]
    schedule = {job["name"]: job["schedule"] for job in jobs}
    assert schedule[JOB] == "cron 0 5 * * 1 (UTC)"


def test_old_tokens_verify_until_they_expire_then_their_key_leaves_the_jwks(
    short_tokens_hub: Hub,
) -> None:
    hub = short_tokens_hub
    _, client, _ = hub.partner_with_token("airline")
    old_token = hub.token(client["client_id"], client["client_secret"])
    old_kid = kid_of(old_token)
    assert old_kid in jwks_kids(hub)

    run = run_job(hub)
    assert run["status"] == "succeeded", run
    assert run["counts"] == {"added": 1, "retired": 1, "removed_from_jwks": 0}
    rotated_at = time.monotonic()
    new_token = hub.token(client["client_id"], client["client_secret"])
    new_kid = kid_of(new_token)
    assert new_kid != old_kid
    assert jwks_kids(hub) >= {old_kid, new_kid}
    assert me(hub, old_token) == 200  # signed by the retired key, not expired yet
    assert me(hub, new_token) == 200
    introspected = hub.http.post(
        "/oauth/introspect",
        data={"token": old_token},
        auth=(client["client_id"], client["client_secret"]),
    )
    assert introspected.json()["active"] is True

    # Past its expiry (and the leeway) the old token is refused, whatever key signed it.
    wait_until(lambda: me(hub, old_token) == 401, TTL + LEEWAY + 5, "the old token to expire")
    # Once no token the old key signed can be accepted anywhere (lifetime + the keyring poll
    # + the leeway after its retirement), the next run removes it from the JWKS.
    grace = TTL + 1 + LEEWAY
    time.sleep(max(0.0, rotated_at + grace + 1.5 - time.monotonic()))
    second = run_job(hub)
    assert second["status"] == "succeeded", second
    assert second["counts"] == {"added": 1, "retired": 1, "removed_from_jwks": 1}
    kids = jwks_kids(hub)
    assert old_kid not in kids
    assert new_kid in kids  # retired by this run: its tokens may still be alive
    newest = hub.token(client["client_id"], client["client_secret"])
    assert kid_of(newest) not in {old_kid, new_kid}
    assert me(hub, newest) == 200

    entries = audit_actions(hub, "keys.signing_rotated")
    assert len(entries) >= 2
    assert entries[0]["actor"] == "system"
    assert entries[0]["details"]["removed"] == [old_kid]
    assert entries[1]["details"]["new_kid"] == new_kid
    assert entries[1]["details"]["retired"] == [old_kid]


def run_with_keyring(hub: Hub, ring: Any) -> int | None:
    """Run the real job once through a runner of this process holding ``ring``."""

    async def main() -> int | None:
        state = hub.app.state
        engine = create_hub_async_engine(hub.database_url)
        try:
            runner = JobRunner(
                async_sessionmaker(engine, expire_on_commit=False),
                state.settings,
                ring,
                state.identifier_crypto,
                {JOB: job_specs(state.settings)[JOB]},
            )
            return await runner.run(JOB)
        finally:
            await engine.dispose()

    return asyncio.run(main())


def test_a_keyring_from_the_environment_skips_the_run_with_the_reason(
    short_tokens_hub: Hub,
) -> None:
    hub = short_tokens_hub
    before = len(audit_actions(hub, "keys.signing_rotated"))
    file_ring = hub.app.state.keyring
    inline = load_keyring(hub.data_dir / "unused.json", inline=file_ring.to_json())
    run_id = run_with_keyring(hub, inline)

    runs_page = as_admin(hub, "GET", f"/v1/jobs/{JOB}/runs").json()["items"]
    run = next(item for item in runs_page if item["id"] == run_id)
    assert run["status"] == "skipped"
    assert "HUB_KEYRING" in run["error"]
    assert inline.data.signing == file_ring.data.signing  # nothing rotated
    assert len(audit_actions(hub, "keys.signing_rotated")) == before


def test_a_keyring_file_that_cannot_be_written_skips_the_run(
    short_tokens_hub: Hub, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub = short_tokens_hub
    path = hub.data_dir / "keyring.json"
    content = path.read_bytes()
    before = len(audit_actions(hub, "keys.signing_rotated"))

    def refuse(target: Path, data: Any) -> None:
        # What a read-only mount or a file owned by another user answers (the tests run as
        # root here, which no file mode stops).
        raise PermissionError(13, "Permission denied", str(target))

    monkeypatch.setattr(keyring_module, "write_keyring_file", refuse)
    ring = load_keyring(path, create=False)
    active = ring.active_signing().kid
    run_id = run_with_keyring(hub, ring)

    [run] = [r for r in runs(hub.database_url, JOB) if r.id == run_id]
    assert run.status == "skipped"
    assert run.error is not None
    assert "cannot be written" in run.error
    assert "Permission denied" in run.error
    assert path.read_bytes() == content
    assert ring.active_signing().kid == active  # the change was dropped, not kept in memory
    assert len(audit_actions(hub, "keys.signing_rotated")) == before


def test_a_new_audit_key_signs_new_heads_and_old_heads_still_verify(
    short_tokens_hub: Hub, tmp_path: Path
) -> None:
    hub = short_tokens_hub
    old_head = as_admin(hub, "GET", "/v1/audit/head").json()
    added = run_cli(hub, "admin", "keys", "add-audit-key", "--json")
    assert added.exit_code == 0, added.output
    outcome = json.loads(added.output)
    assert "back it up" in outcome["reminder"]
    assert outcome["verifying_kids"][-1] == outcome["new_kid"] != old_head["kid"]
    assert old_head["kid"] in outcome["verifying_kids"]

    def new_head() -> dict[str, Any] | None:
        head = as_admin(hub, "GET", "/v1/audit/head").json()
        return dict(head) if head["kid"] == outcome["new_kid"] else None

    head = wait_until(new_head, 5, "heads signed with the new audit key")
    assert head["count"] > old_head["count"]  # the key operation itself was audited
    saved = tmp_path / "old-head.json"
    saved.write_text(json.dumps(old_head))
    verified = run_cli(hub, "admin", "audit", "verify", "--head", str(saved), "--json")
    assert verified.exit_code == 0, verified.output
    [entry] = audit_actions(hub, "keys.audit_key_added")
    assert entry["actor"] == "cli:admin"
    assert entry["details"]["new_kid"] == outcome["new_kid"]


def test_a_rotation_by_another_process_reaches_the_hub_within_its_poll(
    short_tokens_hub: Hub,
) -> None:
    hub = short_tokens_hub
    _, client, _ = hub.partner_with_token("hotel")
    before = hub.token(client["client_id"], client["client_secret"])
    # A worker process holds its own keyring, read from the shared file.
    worker_ring = load_keyring(hub.data_dir / "keyring.json", create=False)
    run_id = run_with_keyring(hub, worker_ring)
    [run] = [r for r in runs(hub.database_url, JOB) if r.id == run_id]
    assert run.status == "succeeded", run.error
    new_kid = worker_ring.active_signing().kid
    assert new_kid != kid_of(before)

    def signed_with_new_key() -> bool:
        return kid_of(hub.token(client["client_id"], client["client_secret"])) == new_kid

    wait_until(signed_with_new_key, 3, "the hub to sign with the worker's new key")
    assert new_kid in jwks_kids(hub)
