"""`hub admin keys add-data-key` then match_key_rotation: every identifier record, reward member
and webhook secret sealed under the new data-key version, online and resumably, with overlaps
and balances unchanged; the old version retired; every step audited."""

from __future__ import annotations

import asyncio
import json
import os
import stat
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker

from hub.core.db import create_hub_async_engine
from hub.jobs.context import JobContext
from hub.jobs.match_keys import match_key_rotation
from hub.jobs.registry import JobSpec
from hub.jobs.runner import JobRunner
from tests.api.matching_helpers import Member, email, overlap, rec
from tests.conftest import Hub, execute_sql, launch_hub, run_cli
from tests.jobs.helpers import QUIET_JOBS, runs, wait_until
from tests.rewards.helpers import SHARE, balance, brands, event, ledger_problems, send

JOB = "match_key_rotation"


@pytest.fixture(scope="module")
def scheduled_hub(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    data_dir = tmp_path_factory.mktemp(f"data-key-{backend}")
    with launch_hub(backend, data_dir, HUB_JOBS_RUN_IN_SERVE="true", **QUIET_JOBS) as running:
        yield running


def upload(hub: Hub, member: Member, prefix: str, numbers: range) -> None:
    member.upload(hub, [rec(email(f"m{prefix}{i}"), f"{prefix}-{i}", SHARE) for i in numbers])


def versions(hub: Hub, sql: str) -> set[int]:
    return {int(v) for (v,) in execute_sql(hub.database_url, sql)}


def data_versions(hub: Hub) -> dict[str, set[int]]:
    return {
        "records": versions(hub, "SELECT DISTINCT data_version FROM identifier_records"),
        "members": versions(
            hub,
            "SELECT DISTINCT data_version FROM reward_members WHERE digest_enc IS NOT NULL",
        ),
        "webhook_secrets": versions(hub, "SELECT DISTINCT key_version FROM webhook_secrets"),
    }


def add_key(hub: Hub, kind: str) -> dict[str, Any]:
    added = run_cli(hub, "admin", "keys", f"add-{kind}-key", "--json")
    assert added.exit_code == 0, added.output
    outcome = dict(json.loads(added.output))
    assert "back it up again" in outcome["reminder"]
    ring = hub.app.state.keyring
    version = outcome[f"{kind}_version"]
    current = {"data": lambda: ring.data_version, "match": lambda: ring.match_version}[kind]
    wait_until(lambda: current() == version, 5, "the hub to reload the keyring")
    return outcome


def request_and_wait(hub: Hub) -> dict[str, Any]:
    last = hub.as_admin("GET", f"/v1/jobs/{JOB}/runs", params={"limit": 1}).json()["items"]
    before = last[0]["id"] if last else 0
    assert hub.as_admin("POST", f"/v1/jobs/{JOB}/run").status_code == 202

    def finished() -> dict[str, Any] | None:
        items = hub.as_admin("GET", f"/v1/jobs/{JOB}/runs", params={"limit": 1}).json()["items"]
        if items and items[0]["id"] > before and items[0]["status"] != "running":
            return dict(items[0])
        return None

    return dict(wait_until(finished, 30, "a finished match_key_rotation run"))


def audit_entries(hub: Hub, action: str) -> list[dict[str, Any]]:
    response = hub.as_admin("GET", "/v1/audit", params={"action": action})
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


def test_a_new_data_key_reseals_every_record_member_and_secret(scheduled_hub: Hub) -> None:
    hub = scheduled_hub
    pair = brands(hub)
    upload(hub, pair.a, "dk", range(0, 30))
    upload(hub, pair.b, "dk", range(15, 45))
    assert send(hub, pair.a, [event(f"a{i}", f"dk{i}", "earn", 10) for i in range(5)]).is_success
    assert send(
        hub, pair.b, [event(f"b{i}", f"dk{i}", "earn", 7) for i in range(40, 45)]
    ).is_success
    secret = hub.as_admin("POST", f"/v1/partners/{pair.a.id}/webhook-secret")
    assert secret.status_code in (200, 201), secret.text
    shared = overlap(hub, pair.a, pair.partnership).json()["count"]
    assert shared == 15
    before = balance(hub, pair.a, "dk0")
    start = hub.app.state.keyring.data_version
    assert data_versions(hub) == {
        "records": {start},
        "members": {start},
        "webhook_secrets": {start},
    }

    added = add_key(hub, "data")
    assert added["data_version"] == start + 1
    assert added["live_versions"] == [start + 1, start]
    refused = run_cli(hub, "admin", "keys", "add-data-key")
    assert refused.exit_code == 1  # one data-key rotation at a time
    assert "unfinished" in refused.output
    # Sealed under the new version from now on; the rest is re-sealed by the job.
    upload(hub, pair.b, "dk", range(45, 50))

    run = request_and_wait(hub)
    assert run["status"] == "succeeded", run
    assert run["counts"]["resealed"] == 60 + 10 + 1  # records, members, one webhook secret
    assert run["counts"]["rekeyed"] == 0
    assert run["counts"]["remaining"] == 0
    assert run["counts"]["retired_versions"] == 1
    assert data_versions(hub) == {
        "records": {start + 1},
        "members": {start + 1},
        "webhook_secrets": {start + 1},
    }
    # Matching, balances and the ledger work on the re-sealed rows.
    assert overlap(hub, pair.a, pair.partnership).json()["count"] == shared
    assert balance(hub, pair.a, "dk0") == before
    assert send(hub, pair.a, [event("a-after", "dk0", "earn", 1)]).is_success
    assert balance(hub, pair.a, "dk0")["points"] == before["points"] + 1
    assert ledger_problems(hub.database_url) == []
    erased = pair.b.post(hub, "/v1/identifiers/erase", {"id_hashes": [email("mdk44")]})
    assert erased.json()["records_removed"] == 1  # found by its digest: the seal opens

    listed = json.loads(run_cli(hub, "admin", "keys", "list", "--json").output)
    data = {row["id"]: row["retired_at"] for row in listed if row["kind"] == "data"}
    assert data[f"v{start}"] is not None
    assert data[f"v{start + 1}"] is None
    [added_entry] = audit_entries(hub, "keys.data_key_added")
    assert added_entry["actor"] == "cli:admin"
    assert added_entry["details"]["data_version"] == start + 1
    rotated = audit_entries(hub, "keys.rows_rotated")[0]
    assert rotated["actor"] == "system"
    assert rotated["details"]["resealed"] == 71
    assert rotated["details"]["retired_data_versions"] == [start]
    # Nothing left to do: the next run changes nothing and audits nothing.
    again = request_and_wait(hub)
    assert again["counts"] == {"rekeyed": 0, "resealed": 0, "remaining": 0, "retired_versions": 0}
    assert len(audit_entries(hub, "keys.rows_rotated")) == 1


def test_the_keyring_file_is_replaced_atomically_with_mode_0600(scheduled_hub: Hub) -> None:
    hub = scheduled_hub
    path = hub.data_dir / "keyring.json"
    inode = os.stat(path).st_ino
    assert run_cli(hub, "admin", "keys", "add-match-key").exit_code == 0
    after = os.stat(path)
    assert after.st_ino != inode  # a new file renamed over the old one, never rewritten
    assert stat.S_IMODE(after.st_mode) == 0o600
    assert not [p.name for p in hub.data_dir.iterdir() if p.name.startswith(".keyring-")]
    # Leave no rotation pending for the next test.
    assert request_and_wait(hub)["status"] == "succeeded"
    assert len(hub.app.state.keyring.live_match_versions()) == 1


def run_once(hub: Hub, func: Any, batch: int) -> int:
    """One run of match_key_rotation through a runner of this process, ``batch`` rows a batch."""

    async def main() -> int | None:
        state = hub.app.state
        settings = msgspec.structs.replace(
            state.settings,
            jobs=msgspec.structs.replace(state.settings.jobs, key_rotation_batch=batch),
        )
        engine = create_hub_async_engine(hub.database_url)
        try:
            runner = JobRunner(
                async_sessionmaker(engine, expire_on_commit=False),
                settings,
                state.keyring,
                state.identifier_crypto,
                {JOB: JobSpec(JOB, func, "test")},
            )
            return await runner.run(JOB)
        finally:
            await engine.dispose()

    run_id = asyncio.run(main())
    assert run_id is not None
    return run_id


def test_an_interrupted_rotation_resumes_where_it_stopped(scheduled_hub: Hub) -> None:
    hub = scheduled_hub
    pair = brands(hub)
    upload(hub, pair.a, "ir", range(0, 40))
    upload(hub, pair.b, "ir", range(20, 60))
    shared = overlap(hub, pair.a, pair.partnership).json()["count"]
    total = int(execute_sql(hub.database_url, "SELECT count(*) FROM identifier_records")[0][0])
    members = int(
        execute_sql(
            hub.database_url, "SELECT count(*) FROM reward_members WHERE digest_enc IS NOT NULL"
        )[0][0]
    )
    match = add_key(hub, "match")["match_version"]
    data = add_key(hub, "data")["data_version"]

    async def killed_after_three_batches(ctx: JobContext) -> dict[str, int]:
        save = ctx.checkpoint
        calls = 0

        async def checkpoint(*args: Any, **kwargs: Any) -> None:
            nonlocal calls
            calls += 1
            if calls == 4:  # dies before the fourth batch commits
                raise RuntimeError("worker killed")
            await save(*args, **kwargs)

        ctx.checkpoint = checkpoint  # type: ignore[method-assign]
        return await match_key_rotation(ctx)

    first_id = run_once(hub, killed_after_three_batches, batch=7)
    [first] = [r for r in runs(hub.database_url, JOB) if r.id == first_id]
    assert first.status == "failed"
    assert first.cursor["phase"] == "rekey_records"
    assert first.cursor["after"] is not None
    assert first.counts["rekeyed"] == 21
    moved = versions(hub, "SELECT key_version FROM identifier_records")
    assert moved == {match - 1, match}  # a part done, the rest still under the old version

    seen: list[dict[str, Any]] = []

    async def resumed(ctx: JobContext) -> dict[str, int]:
        seen.append(dict(ctx.cursor))
        return await match_key_rotation(ctx)

    second_id = run_once(hub, resumed, batch=7)
    [second] = [r for r in runs(hub.database_url, JOB) if r.id == second_id]
    assert second.status == "succeeded", second.error
    assert seen == [first.cursor]  # started from where the first run stopped
    assert second.counts["rekeyed"] == total - 21 + members
    secrets = int(execute_sql(hub.database_url, "SELECT count(*) FROM webhook_secrets")[0][0])
    assert second.counts["resealed"] == total + members + secrets
    assert second.counts["remaining"] == 0
    count = int(execute_sql(hub.database_url, "SELECT count(*) FROM identifier_records")[0][0])
    assert count == total  # nothing lost, nothing doubled
    assert versions(hub, "SELECT DISTINCT key_version FROM identifier_records") == {match}
    assert versions(hub, "SELECT DISTINCT data_version FROM identifier_records") == {data}
    assert overlap(hub, pair.a, pair.partnership).json()["count"] == shared
    ring = hub.app.state.keyring
    assert ring.live_match_versions() == [match]
    assert ring.live_data_versions() == [data]


def test_with_hub_keyring_the_cli_prints_the_new_keyring_and_writes_no_file(
    scheduled_hub: Hub,
) -> None:
    hub = scheduled_hub
    path = hub.data_dir / "keyring.json"
    content = path.read_bytes()
    before = len(audit_entries(hub, "keys.data_key_added"))
    live = hub.app.state.keyring.data_version
    added = run_cli(hub, "admin", "keys", "add-data-key", env={"HUB_KEYRING": content.decode()})
    assert added.exit_code == 0, added.output
    assert "HUB_KEYRING is in use" in added.output
    assert "back it up again" in added.output
    printed = json.loads(added.output.splitlines()[0])
    assert len(printed["data"]) == len(json.loads(content)["data"]) + 1
    assert path.read_bytes() == content
    entries = audit_entries(hub, "keys.data_key_added")
    assert len(entries) == before + 1
    assert entries[0]["details"]["keyring"] == "HUB_KEYRING (printed)"
    assert hub.app.state.keyring.data_version == live  # the hub's own keyring is untouched
