"""A burst beyond a process's PostgreSQL pool (``database.pool_size`` + ``max_overflow``) is a
503 problem with Retry-After after ``database.pool_timeout_seconds``, never a 500; the
request after it is answered. (The soak ran two hub processes and a worker with pools of
20 + 20 each against PostgreSQL's 100 connections: requests got "too many clients".)"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import httpx
import pytest
from litestar.testing import AsyncTestClient

from hub.app import create_app
from hub.migrate import upgrade
from tests.conftest import bootstrap_admin, create_pg_database, drop_pg_database, hub_settings

pytestmark = pytest.mark.skipif(
    not os.environ.get("HUB_TEST_POSTGRES_URL"), reason="PostgreSQL pools only"
)


def test_a_request_finding_no_free_connection_gets_503(tmp_path: Path) -> None:
    database_url = create_pg_database()
    try:
        upgrade(database_url)
        admin_id, admin_secret = bootstrap_admin(database_url, tmp_path)
        settings = hub_settings(
            database_url,
            tmp_path,
            HUB_DATABASE_POOL_SIZE="1",
            HUB_DATABASE_MAX_OVERFLOW="0",
            HUB_DATABASE_POOL_TIMEOUT_SECONDS="0.3",
            # Nothing in the background takes the pool's one connection: had the test's own
            # checkout below waited for a background task, the pool's queue would be bound to
            # the test's event loop and the request's wait would fail on the app's (a 500
            # seen once in a fresh-clone run, not the rule under test).
            HUB_OAUTH_REVOCATION_POLL_SECONDS="3600",
            HUB_MATCHING_MAINTENANCE_SECONDS="3600",
            HUB_UPLOADS_PROCESS_IN_SERVE="false",
            HUB_JOBS_RUN_IN_SERVE="false",
        )
        app = create_app(settings)
        engine = app.state.engine
        assert (engine.pool.size(), engine.pool._max_overflow) == (1, 0)

        async def scenario() -> tuple[httpx.Response, httpx.Response]:
            async with AsyncTestClient(app) as client:
                issued = await client.post(
                    "/oauth/token",
                    data={"grant_type": "client_credentials"},
                    auth=(admin_id, admin_secret),
                )
                assert issued.status_code == 200, issued.text
                headers = {"Authorization": f"Bearer {issued.json()['access_token']}"}
                async with engine.connect() as held:  # the pool's only connection, taken
                    await held.exec_driver_sql("SELECT 1")
                    starved = await client.get("/v1/partners", headers=headers)
                return starved, await client.get("/v1/partners", headers=headers)

        starved, after = asyncio.run(scenario())
        assert starved.status_code == 503, starved.text
        assert starved.headers["content-type"].startswith("application/problem+json")
        assert starved.headers["retry-after"] == "5"
        assert "busy or unreachable" in starved.json()["detail"]
        assert after.status_code == 200, after.text
    finally:
        drop_pg_database(database_url)
