"""GET /v1/jobs, POST /v1/jobs/{name}/run and the real jobs, on a hub that runs the scheduler
in-process (as `hub serve` does on the embedded default)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any, cast

import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlalchemy.orm import Session

from hub.core.db import create_hub_async_engine, create_hub_sync_engine
from hub.jobs.context import JobContext
from hub.jobs.models import JobRun, JobRunRequest
from hub.jobs.registry import JOB_NAMES, DomainJob, JobFailed, JobSpec
from hub.jobs.runner import JobRunner
from partners.kit import hash_identifier
from tests.conftest import Hub, execute_sql, launch_hub, run_cli
from tests.jobs.helpers import QUIET_JOBS, runs, wait_until


@pytest.fixture(scope="module")
def scheduled_hub(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    data_dir = tmp_path_factory.mktemp(f"jobs-{backend}")
    with launch_hub(backend, data_dir, HUB_JOBS_RUN_IN_SERVE="true", **QUIET_JOBS) as running:
        yield running


def request_run(hub: Hub, name: str) -> dict[str, Any]:
    response = hub.as_admin("POST", f"/v1/jobs/{name}/run")
    assert response.status_code == 202, response.text
    return dict(response.json())


def job(hub: Hub, name: str) -> dict[str, Any]:
    response = hub.as_admin("GET", "/v1/jobs")
    assert response.status_code == 200, response.text
    return next(item for item in response.json()["items"] if item["name"] == name)


def finished_run(hub: Hub, name: str, after: int = 0, timeout: float = 20) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        last = job(hub, name)["last_run"]
        if last and last["id"] > after and last["status"] != "running":
            return dict(last)
        return None

    return dict(wait_until(done, timeout, f"a finished run of {name}"))


def last_run_id(hub: Hub, name: str) -> int:
    last = job(hub, name)["last_run"]
    return int(last["id"]) if last else 0


def test_the_jobs_list_shows_every_job_with_its_schedule(scheduled_hub: Hub) -> None:
    response = scheduled_hub.as_admin("GET", "/v1/jobs")
    assert response.status_code == 200
    body = response.json()
    assert [item["name"] for item in body["items"]] == list(JOB_NAMES)
    assert body["next_cursor"] is None
    schedules = {item["name"]: item["schedule"] for item in body["items"]}
    assert schedules["rewards_sync"] == "every 3600 s"
    assert schedules["settlement"] == "cron 0 2 1 * * (UTC)"


def test_a_run_request_is_picked_up_within_a_second(scheduled_hub: Hub) -> None:
    hub = scheduled_hub
    before = last_run_id(hub, "retention_purge")
    requested = request_run(hub, "retention_purge")
    asked_at = time.monotonic()
    assert requested["name"] == "retention_purge"
    assert requested["status"] == "requested"
    wait_until(lambda: last_run_id(hub, "retention_purge") > before, 1.0, "the run to start")
    assert time.monotonic() - asked_at < 1.0
    run = finished_run(hub, "retention_purge", after=before)
    assert run["status"] == "succeeded"
    assert run["trigger"] == "request"
    assert set(run["counts"]) >= {"job_runs", "job_run_requests"}
    assert run["finished_at"] >= run["started_at"]
    picked = execute_sql(
        hub.database_url,
        "SELECT run_id FROM job_run_requests WHERE id = :id",
        id=requested["request_id"],
    )
    assert picked[0][0] == run["id"]
    audit = hub.as_admin("GET", "/v1/audit", params={"action": "job.run_requested"}).json()
    assert audit["items"][0]["target_id"] == "retention_purge"
    assert audit["items"][0]["actor"] == f"client:{hub.admin_id}"


def test_an_unknown_job_is_a_404_problem(scheduled_hub: Hub) -> None:
    for method, path in (("POST", "/v1/jobs/nope/run"), ("GET", "/v1/jobs/nope/runs")):
        response = scheduled_hub.as_admin(method, path)
        assert response.status_code == 404
        assert response.headers["content-type"].startswith("application/problem+json")
        assert "retention_purge" in response.json()["fix"]


def test_jobs_are_for_admins_only(scheduled_hub: Hub) -> None:
    _, _, headers = scheduled_hub.partner_with_token("airline")
    assert scheduled_hub.http.get("/v1/jobs", headers=headers).status_code == 403
    response = scheduled_hub.http.post("/v1/jobs/retention_purge/run", headers=headers)
    assert response.status_code == 403


def test_a_jobs_runs_are_paginated_newest_first(scheduled_hub: Hub) -> None:
    hub = scheduled_hub
    for _ in range(2):
        before = last_run_id(hub, "retention_purge")
        request_run(hub, "retention_purge")
        finished_run(hub, "retention_purge", after=before)
    first = hub.as_admin("GET", "/v1/jobs/retention_purge/runs", params={"limit": 1}).json()
    assert first["next_cursor"]
    second = hub.as_admin(
        "GET", "/v1/jobs/retention_purge/runs", params={"limit": 1, "cursor": first["next_cursor"]}
    ).json()
    assert second["items"][0]["id"] < first["items"][0]["id"]


def add_old_rows(database_url: str) -> dict[str, int]:
    old = datetime.now(UTC) - timedelta(days=60)
    engine = create_hub_sync_engine(database_url)
    try:
        with Session(engine, expire_on_commit=False) as session:

            def run(name: str) -> JobRun:
                return JobRun(
                    name=name, status="succeeded", trigger="schedule", started_at=old,
                    heartbeat_at=old, finished_at=old, worker="gone:1", counts={},
                    cursor={"at": name},
                )  # fmt: skip

            rows = {
                "old": run("settlement"),
                "newer_old": run("settlement"),
                "only": run("points_expiry_old_test"),
            }
            request = JobRunRequest(
                name="settlement", requested_at=old, requested_by="client:x", picked_at=old
            )
            session.add_all([*rows.values(), request])
            session.commit()
            ids = {key: row.id for key, row in rows.items()}
            ids["request"] = request.id
            return ids
    finally:
        engine.dispose()


def test_retention_purge_deletes_old_runs_but_keeps_each_jobs_cursor(scheduled_hub: Hub) -> None:
    hub = scheduled_hub
    ids = add_old_rows(hub.database_url)
    before = last_run_id(hub, "retention_purge")
    request_run(hub, "retention_purge")
    run = finished_run(hub, "retention_purge", after=before)
    assert run["status"] == "succeeded"
    assert run["counts"]["job_runs"] >= 1
    assert run["counts"]["job_run_requests"] >= 1
    left = {row.id for row in runs(hub.database_url, "settlement")}
    assert ids["old"] not in left
    # A job's newest run holds the cursor its next run starts from: kept whatever its age.
    assert ids["newer_old"] in left
    assert [r.id for r in runs(hub.database_url, "points_expiry_old_test")] == [ids["only"]]
    requests = execute_sql(hub.database_url, "SELECT id FROM job_run_requests")
    assert ids["request"] not in {row[0] for row in requests}


def test_match_key_rotation_rekeys_every_record(scheduled_hub: Hub) -> None:
    hub = scheduled_hub
    _, _, headers = hub.partner_with_token("hotel")
    records = [
        {
            "id_type": "email",
            "id_hash": hash_identifier("email", f"rotate{i}@example.org"),
            "customer_ref": f"r-{i}",
            "consents": ["analytics"],
        }
        for i in range(25)
    ]
    response = hub.http.post("/v1/identifiers", json={"records": records}, headers=headers)
    assert response.status_code == 200, response.text
    added = run_cli(hub, "admin", "keys", "add-match-key", "--json")
    assert added.exit_code == 0, added.output
    target = json.loads(added.output)["match_version"]

    before = last_run_id(hub, "match_key_rotation")
    request_run(hub, "match_key_rotation")
    run = finished_run(hub, "match_key_rotation", after=before)
    assert run["status"] == "succeeded", run
    assert run["counts"]["rekeyed"] >= 25
    assert run["counts"]["remaining"] == 0
    versions = execute_sql(hub.database_url, "SELECT DISTINCT key_version FROM identifier_records")
    assert [row[0] for row in versions] == [target]
    keys = run_cli(hub, "admin", "keys", "list", "--json")
    live = [k for k in json.loads(keys.output) if k["kind"] == "match" and not k["retired_at"]]
    assert [k["id"] for k in live] == [f"v{target}"]


def run_once(hub: Hub, spec: JobSpec) -> JobRun:
    """Run ``spec`` once through a runner of this process, against the hub's database."""

    async def main() -> int | None:
        state = hub.app.state
        engine = create_hub_async_engine(hub.database_url)
        try:
            runner = JobRunner(
                async_sessionmaker(engine, expire_on_commit=False),
                state.settings,
                state.keyring,
                state.identifier_crypto,
                {spec.name: spec},
            )
            return await runner.run(spec.name)
        finally:
            await engine.dispose()

    run_id = asyncio.run(main())
    return next(run for run in runs(hub.database_url, spec.name) if run.id == run_id)


def test_a_failing_job_is_recorded_without_its_exception_text(scheduled_hub: Hub) -> None:
    async def leaks(ctx: JobContext) -> dict[str, int]:
        raise ValueError("customer alice@example.org")

    async def says(ctx: JobContext) -> dict[str, int]:
        await ctx.checkpoint({"at": 3}, {"done": 3})
        raise JobFailed("The partner's endpoint refused the batch.")

    failed = run_once(scheduled_hub, JobSpec("leaks_test", leaks, "test"))
    assert failed.status == "failed"
    assert failed.error is not None
    assert failed.error.startswith("ValueError")
    assert "alice" not in failed.error
    explained = run_once(scheduled_hub, JobSpec("says_test", says, "test"))
    assert explained.status == "failed"
    assert explained.error == "The partner's endpoint refused the batch."
    assert (explained.cursor, explained.counts) == ({"at": 3}, {"done": 3})
    # The lease was released: the next run starts at once, from the saved cursor.
    seen: list[dict[str, Any]] = []

    async def resumes(ctx: JobContext) -> dict[str, int]:
        seen.append(ctx.cursor)
        return {}

    assert run_once(scheduled_hub, JobSpec("says_test", resumes, "test")).status == "succeeded"
    assert seen == [{"at": 3}]


def test_a_domain_job_not_written_yet_is_skipped() -> None:
    ctx = cast(JobContext, SimpleNamespace(name="later"))
    assert asyncio.run(DomainJob("partners.not_yet_written.jobs:later")(ctx)) == {"skipped": 1}
