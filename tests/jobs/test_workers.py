"""`hub worker` processes: two against one database never run a job at once, and a worker
killed with SIGKILL anywhere loses no work and applies none twice (the probe job, test only,
commits each batch of items with the checkpoint that moves its cursor)."""

from __future__ import annotations

import itertools
import random
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hub.migrate import upgrade
from tests.conftest import PG_URL, drop_pg_database, make_database
from tests.jobs.helpers import probe_items, runs, start_worker, wait_until, worker_name


@pytest.fixture
def database(backend: str, tmp_path: Path) -> Iterator[str]:
    url = make_database(backend, tmp_path)
    upgrade(url)
    yield url
    if backend == "postgres":
        drop_pg_database(url)


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGABRT)  # faulthandler writes every thread's stack
        process.wait()
        process.wait()
        raise


@pytest.mark.postgres
def test_two_workers_never_run_a_job_at_once(backend: str, database: str, tmp_path: Path) -> None:
    if backend != "postgres" or not PG_URL:
        pytest.skip("two workers share a PostgreSQL database (HUB_TEST_POSTGRES_URL)")
    items = 120
    env = {
        "HUB_JOBS_TEST_PROBE_SECONDS": "0.05",
        "HUB_JOBS_TEST_PROBE_ITEMS": str(items),
        "HUB_JOBS_TEST_PROBE_BATCH": "3",
        "HUB_JOBS_TEST_PROBE_PAUSE": "0.02",
        "HUB_JOBS_TEST_PROBE_BATCHES_PER_RUN": "2",
        "HUB_JOBS_POLL_SECONDS": "0.05",
    }
    workers = [start_worker(database, tmp_path, **env) for _ in range(2)]
    try:
        wait_until(lambda: len(probe_items(database)) == items, 40, "every item")
        # Keep both contending a little longer, on runs that find nothing left to do.
        count = len(runs(database, "probe"))
        wait_until(lambda: len(runs(database, "probe")) > count + 10, 20, "more runs")
    finally:
        for worker in workers:
            stop(worker)

    done = runs(database, "probe")
    assert {run.status for run in done} <= {"succeeded", "abandoned"}
    for earlier, later in itertools.pairwise(done):
        assert earlier.finished_at is not None
        assert earlier.finished_at <= later.started_at, (earlier.id, later.id)
    assert {run.worker for run in done} == {worker_name(w) for w in workers}
    assert probe_items(database) == list(range(items))


def test_a_killed_worker_loses_nothing_and_applies_nothing_twice(
    database: str, tmp_path: Path
) -> None:
    rng = random.Random(11)
    items = 300
    env = {
        "HUB_JOBS_TEST_PROBE_SECONDS": "0.1",
        "HUB_JOBS_TEST_PROBE_ITEMS": str(items),
        "HUB_JOBS_TEST_PROBE_BATCH": "4",
        "HUB_JOBS_TEST_PROBE_PAUSE": "0.03",
        "HUB_JOBS_LEASE_SECONDS": "1.0",
    }
    killed_runs: set[int] = set()
    kills = 0
    while kills < 5 and len(probe_items(database)) < items:
        worker = start_worker(database, tmp_path, **env)
        name = worker_name(worker)

        def running_here(name: str = name) -> list[int]:
            return [r.id for r in runs(database, "probe") if r.worker == name]

        try:
            wait_until(running_here, 30, "the worker's first run")
            time.sleep(rng.uniform(0.0, 0.4))  # a random point of its work
        finally:
            worker.send_signal(signal.SIGKILL)
            worker.wait()
        kills += 1
        killed_runs |= {
            r.id for r in runs(database, "probe") if r.worker == name and r.status == "running"
        }
        applied = probe_items(database)
        assert len(applied) == len(set(applied)), "an item was applied twice"

    assert kills == 5, "the probe finished before the worker could be killed 5 times"
    assert killed_runs, "no kill interrupted a run"
    worker = start_worker(database, tmp_path, **env)
    try:
        wait_until(lambda: len(probe_items(database)) >= items, 40, "every item")
    finally:
        stop(worker)

    assert probe_items(database) == list(range(items))
    final = {run.id: run for run in runs(database, "probe")}
    assert {final[i].status for i in killed_runs} == {"abandoned"}
    assert "running" not in {run.status for run in final.values()}


def test_a_run_cut_short_by_shutdown_is_abandoned_without_an_error(
    database: str, tmp_path: Path
) -> None:
    """SIGTERM while a run outlasts the shutdown grace: the run is recorded abandoned (the
    next resumes from its cursor) and the worker logs no error (APScheduler logged the
    cancelled run as "raised an exception", seen in the soak's worker log)."""
    env = {
        "HUB_JOBS_TEST_PROBE_SECONDS": "0.1",
        "HUB_JOBS_TEST_PROBE_ITEMS": "100000",
        "HUB_JOBS_TEST_PROBE_BATCH": "1",
        "HUB_JOBS_TEST_PROBE_PAUSE": "0.05",
    }
    log = tmp_path / "workers.log"
    worker = start_worker(database, tmp_path, **env)
    name = worker_name(worker)
    try:
        wait_until(lambda: [r for r in runs(database, "probe") if r.worker == name], 30, "a run")
    finally:
        stop(worker)
    assert worker.returncode == 0
    statuses = {r.status for r in runs(database, "probe") if r.worker == name}
    assert "abandoned" in statuses
    assert "running" not in statuses
    errors = [line for line in log.read_text().splitlines() if '"level": "error"' in line]
    assert errors == []
