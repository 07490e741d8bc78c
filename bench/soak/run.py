"""One soak run from start to report (``python -m bench.soak``; see ``__main__``)."""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gevent
import httpx
import psycopg
from locust.env import Environment

from bench.soak import audit, report
from bench.soak.coalition import seed
from bench.soak.mix import Mix
from bench.soak.population import upload_file
from bench.soak.receiver import Receiver
from bench.soak.stack import Stack
from bench.soak.users import user_classes
from bench.soak.world import World, set_world

ROOT = Path(__file__).resolve().parents[2]
FILES = ROOT / "bench" / "results" / "soak"


@dataclass
class Options:
    minutes: float
    preset: str
    mix: Mix
    pg_admin_url: str
    sample_seconds: float = 60.0
    catch_up_seconds: float = 600.0
    # At the end a user finishes the request in progress (within this), so what the hub
    # commits after the load stopped is what the users saw answered.
    stop_timeout: float = 120.0
    keep_db: bool = False
    # The hub processes' log level (their logs stay in the run's directory): INFO shows
    # what they did and why (array builds, patches skipped), WARNING keeps the logs small.
    hub_log_level: str = "WARNING"


def log(message: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {message}", flush=True)


def git_commit() -> str:
    done = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip() or "unknown"


def run(options: Options) -> dict[str, Any]:
    mix = options.mix
    work_dir = Path(tempfile.mkdtemp(prefix="soak-"))
    receiver = Receiver().start()
    stack = Stack(
        options.pg_admin_url, work_dir, mix.token_ttl_seconds, log_level=options.hub_log_level
    )
    try:
        log(f"starting the hub processes (logs in {work_dir})")
        stack.start(receiver.port)
        log(f"seeding the coalition ({max(mix.population, mix.preload_rows):,} people a brand)")
        coalition = seed(stack, receiver, mix.population, FILES, mix.preload_rows)
        files = {b.code: upload_file(FILES, b.code, mix.upload_rows) for b in coalition.brands}
        world = World(coalition, mix, files)
        set_world(world)
        activity: Counter[tuple[str, str]] = Counter()
        samples, env = play(options, stack, world, activity)
        log("load stopped; letting the jobs catch up")
        caught_up: dict[str, Any] = {}
        try:
            caught_up = audit.catch_up(stack, coalition, options.catch_up_seconds)
            refresh_uploads(stack, world)
            log("auditing")
            checks = audit.consistency(stack, coalition, world, receiver)
        except (psycopg.Error, httpx.HTTPError, RuntimeError, KeyError, ValueError) as exc:
            # The load's numbers are kept; the audit that could not finish fails the run.
            checks = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:2000]}
        out = summarise(options, env, world, samples, stack, caught_up, checks)
        out["database_activity"] = [
            {"backend_seconds": n, "wait": wait, "statement": statement}
            for (wait, statement), n in activity.most_common(25)
        ]
    finally:
        codes = stack.stop(keep_db=options.keep_db)
        receiver.stop()
    out["exit_codes"] = codes
    out["work_dir"] = str(work_dir)
    return out


def play(
    options: Options, stack: Stack, world: World, activity: Counter[tuple[str, str]]
) -> tuple[list[dict[str, Any]], Environment]:
    classes = user_classes(world.mix, len(world.coalition.brands))
    users = sum(int(getattr(c, "fixed_count", 0)) for c in classes)
    env = Environment(user_classes=classes, stop_timeout=options.stop_timeout)
    runner = env.create_local_runner()
    samples: list[dict[str, Any]] = []
    started = time.monotonic()

    def sample() -> None:
        samples.append(stack.sample((time.monotonic() - started) / 60))

    sample()
    watcher = gevent.spawn(watch_database, stack, activity)
    runner.start(users, spawn_rate=users)
    log(f"{users} users for {options.minutes} min: {[c.__name__ for c in classes]}")
    end = started + options.minutes * 60
    while (now := time.monotonic()) < end:
        gevent.sleep(min(options.sample_seconds, end - now))
        sample()
        last = samples[-1]
        log(f"minute {last['minute']}: rss {last['rss']} pg {last['pg_connections']}")
    runner.stop()
    runner.quit()
    watcher.kill()
    return samples, env


def watch_database(stack: Stack, activity: Counter[tuple[str, str]]) -> None:
    """Every second: what each busy backend is waiting on (or CPU), by statement. A count is
    about one backend-second: where the database's time goes, lock waits included."""
    while True:
        activity.update(stack.activity())
        gevent.sleep(1.0)


def refresh_uploads(stack: Stack, world: World) -> None:
    """An upload whose polling the end of the load cut short: its final state."""
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        for record in world.uploads:
            row = conn.execute(
                "SELECT status, accepted, refused, created_at, finished_at "
                "FROM identifier_uploads WHERE id = %s",
                (record["id"],),
            ).fetchone()
            if row:
                record.update(status=row[0], accepted=row[1], refused=row[2])
                if row[4] is not None:
                    record["processing_seconds"] = round((row[4] - row[3]).total_seconds(), 1)


def summarise(
    options: Options,
    env: Environment,
    world: World,
    samples: list[dict[str, Any]],
    stack: Stack,
    caught_up: dict[str, Any],
    checks: dict[str, Any],
) -> dict[str, Any]:
    routes = report.routes(env, world.statuses)
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        jobs = conn.execute(
            "SELECT name, status, count(*) FROM job_runs GROUP BY 1, 2 ORDER BY 1, 2"
        ).fetchall()
    return {
        "git": git_commit(),
        "minutes": options.minutes,
        "preset": options.preset,
        "mix": world.mix.as_dict(),
        "routes": routes,
        "requests": sum(r["requests"] for r in routes.values()),
        "failures": sum(r["failures"] for r in routes.values()),
        "status_5xx": sum(r["status_5xx"] for r in routes.values()),
        "status_429": sum(r["status_429"] for r in routes.values()),
        "errors": report.errors(env),
        "tokens_issued": world.tokens_issued,
        "samples": samples,
        "rss_drift": report.drift(samples, options.minutes),
        "pg_connections_max": max(s["pg_connections"]["total"] for s in samples),
        # Samples for which PostgreSQL had no connection left ("too many clients").
        "pg_connections_refused": sum(1 for s in samples if "refused" in s["pg_connections"]),
        "processes_alive_throughout": all(all(s["alive"].values()) for s in samples),
        "job_runs": {f"{name}:{status}": int(n) for name, status, n in jobs},
        "catch_up": caught_up,
        "audit": checks,
        "stalls": report.stalls({p.name: p.log_path for p in stack.processes}),
    }


def write(out: dict[str, Any], path: Path | None) -> Path:
    if path is None:
        FILES.mkdir(parents=True, exist_ok=True)
        path = FILES / f"soak-{out['preset']}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(out, indent=2, default=str))
    return path
