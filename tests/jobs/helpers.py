"""Workers as subprocesses (`hub worker`) and reads of the jobs' tables, for tests/jobs."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import DatabaseError
from sqlalchemy.orm import Session

from hub.core.db import create_hub_sync_engine
from hub.jobs.models import JobRun
from tests.conftest import ROOT, execute_sql

HUB = str(Path(sys.executable).with_name("hub"))
QUIET_JOBS = {
    # The real jobs stay out of the way of the probe.
    "HUB_JOBS_REWARDS_SYNC_SECONDS": "3600",
    "HUB_JOBS_WEBHOOK_REDELIVERY_SECONDS": "3600",
}


def start_worker(database_url: str, data_dir: Path, **env: str) -> subprocess.Popen[bytes]:
    environ = {
        **os.environ,
        "HUB_CONFIG": str(ROOT / "config" / "test.toml"),
        "HUB_DATABASE_URL": database_url,
        "HUB_SERVER_DATA_DIR": str(data_dir),
        "HUB_JOBS_TEST_PROBE": "1",
        "PYTHONFAULTHANDLER": "1",
        **QUIET_JOBS,
        **env,
    }
    log = (data_dir / "workers.log").open("ab")  # inherited by the child, kept on failure
    try:
        return subprocess.Popen([HUB, "worker"], env=environ, stdout=log, stderr=log)
    finally:
        log.close()


def worker_name(process: subprocess.Popen[bytes]) -> str:
    return f"{socket.gethostname()}:{process.pid}"


def wait_until(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def runs(database_url: str, name: str) -> list[JobRun]:
    """The job's runs, oldest first (read through the model: datetimes on both databases)."""
    engine = create_hub_sync_engine(database_url, writer=False)
    try:
        with Session(engine, expire_on_commit=False) as session:
            stmt = select(JobRun).where(JobRun.name == name).order_by(JobRun.id)
            return list(session.scalars(stmt))
    finally:
        engine.dispose()


def probe_items(database_url: str) -> list[int]:
    try:
        rows = execute_sql(database_url, "SELECT item FROM job_probe_items ORDER BY item")
    except DatabaseError:  # the table is created by the probe's first run
        return []
    return [int(row[0]) for row in rows]
