"""The processes of a soak run: a fresh PostgreSQL database, two ``hub serve --no-worker``
(which leave uploads to the worker), one ``hub worker``; and what is sampled from them
(RSS and CPU every minute, database connections, what busy backends wait on).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg

from bench.auth_layer import create_database, drop_database, free_port
from bench.bulk_upload import children

VENV_BIN = Path(sys.executable).parent
NEVER = "0 0 1 1 *"


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    """Resident memory in MB: all of it (VmRSS), or its anonymous part (RssAnon: the heap,
    what a leak grows) or its file-backed part (RssFile: libraries and the memory-mapped
    match-key arrays, page cache shared between processes)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def postgres_cpu_seconds() -> float:
    """CPU time of the PostgreSQL server: its live processes, plus what the postmaster has
    reaped from backends that ended (its children's times). The server is the machine's, so
    this counts every database on it: measure on an otherwise quiet machine."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            name = stat.read_text().split("(", 1)[1].rsplit(")", 1)[0]
            if name != "postgres":
                continue
            fields = stat.read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
            ppid = int(fields[1])
            parent = Path(f"/proc/{ppid}/stat").read_text().split("(", 1)[1].split(")")[0]
            if parent != "postgres":  # the postmaster: add its reaped children
                total += int(fields[13]) + int(fields[14])
    return total / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU time the whole machine has been busy (all cores, not idle or waiting on I/O)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def harness_cpu_seconds() -> float:
    """CPU time of this process (the Locust users, the webhook receiver, the sampler)."""
    times = os.times()
    return times.user + times.system


# What each busy PostgreSQL backend of the hub's database is doing: waiting (on a lock, on
# I/O...) or on the CPU, and which statement (its first words).
ACTIVITY_SQL = (
    "SELECT coalesce(wait_event_type || ':' || wait_event, 'CPU'), "
    "left(regexp_replace(query, '\\s+', ' ', 'g'), 90) FROM pg_stat_activity "
    "WHERE datname = current_database() AND pid <> pg_backend_pid() AND state = 'active'"
)


class HubProcess:
    """One ``hub`` subprocess logging to a file; stopped with SIGTERM (SIGKILL after 30 s)."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self.proc = subprocess.Popen(
            [str(VENV_BIN / "hub"), *args],
            env=env,
            stdout=self.log_path.open("ab"),
            stderr=subprocess.STDOUT,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def rss(self) -> dict[str, float]:
        """The process's resident memory and its children's (upload parsers), in MB."""
        own = kids = anon = 0.0
        with contextlib.suppress(OSError):
            own = rss_mb(self.pid)
            anon = rss_mb(self.pid, "RssAnon")
        for child in children(self.pid):
            with contextlib.suppress(OSError):
                kids += rss_mb(child)
        return {
            "rss_mb": round(own, 1),
            "anon_mb": round(anon, 1),
            "children_rss_mb": round(kids, 1),
        }

    def cpu(self) -> float:
        """CPU seconds used so far by the process and its live children."""
        total = 0.0
        for pid in (self.pid, *children(self.pid)):
            with contextlib.suppress(OSError):
                total += cpu_seconds(pid)
        return round(total, 1)

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]


@dataclass
class Stack:
    """The database, the processes and the environment they share (keyring, issuer)."""

    pg_admin_url: str
    work_dir: Path
    token_ttl_seconds: int
    log_level: str = "WARNING"
    database_url: str = ""
    env: dict[str, str] = field(default_factory=dict)
    servers: list[HubProcess] = field(default_factory=list)
    worker: HubProcess | None = None
    urls: list[str] = field(default_factory=list)
    admin_id: str = ""
    admin_secret: str = ""

    @property
    def processes(self) -> list[HubProcess]:
        return [*self.servers, *([self.worker] if self.worker else [])]

    def start(self, webhook_port: int) -> None:
        self.database_url = create_database(self.pg_admin_url)
        ports = [free_port(), free_port()]
        data_dir = Path(tempfile.mkdtemp(prefix="data-", dir=self.work_dir))
        env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
        env.update(
            HUB_DATABASE_URL=self.database_url,
            HUB_SERVER_DATA_DIR=str(data_dir),  # one keyring, shared by every process
            # One issuer for both processes: a token from one is honoured by the other.
            HUB_OAUTH_ISSUER=f"http://127.0.0.1:{ports[0]}",
            HUB_OAUTH_ACCESS_TOKEN_TTL_SECONDS=str(self.token_ttl_seconds),
            HUB_WEBHOOKS_ALLOW_LOOPBACK_HTTP="true",
            HUB_LOGGING_LEVEL=self.log_level,
            HUB_LOGGING_ACCESS_LOG="false",
            # Stalls of the event loop as long as a read route's p99 target, logged with
            # where the loop was (the report sums them by place).
            HUB_LOGGING_STALL_SECONDS="0.25",
            # The daily crons stay off: the run asks for what it needs and the audit reads
            # the ledger as the events left it.
            HUB_JOBS_SETTLEMENT_CRON=NEVER,
            HUB_JOBS_POINTS_EXPIRY_CRON=NEVER,
            HUB_JOBS_MATCH_KEY_ROTATION_CRON=NEVER,
            HUB_JOBS_SIGNING_KEY_ROTATION_CRON=NEVER,
        )
        self.env = env
        self.cli("db", "upgrade")
        admin = json.loads(self.cli("admin", "bootstrap", "--json"))
        self.admin_id, self.admin_secret = admin["client_id"], admin["client_secret"]
        # The scale-out the README describes: the serving processes receive upload bodies and
        # answer; the worker runs the jobs and processes the uploads (parse, apply, arrays).
        serving = {**env, "HUB_UPLOADS_PROCESS_IN_SERVE": "false"}
        for n, port in enumerate(ports, start=1):
            args = ["serve", "--no-worker", "--host", "127.0.0.1", "--port", str(port)]
            self.servers.append(HubProcess(f"serve-{n}", args, serving, self.work_dir))
            self.urls.append(f"http://127.0.0.1:{port}")
        self.worker = HubProcess("worker", ["worker"], env, self.work_dir)
        for server, url in zip(self.servers, self.urls, strict=True):
            self._wait_ready(server, url)

    def cli(self, *args: str, env: dict[str, str] | None = None) -> str:
        done = subprocess.run(
            [str(VENV_BIN / "hub"), *args],
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"hub {' '.join(args)} failed: {done.stdout} {done.stderr}")
        return done.stdout

    def _wait_ready(self, server: HubProcess, url: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health/ready", timeout=2).status_code == 200:
                    return
            if not server.alive() or time.monotonic() > deadline:
                raise RuntimeError(f"{server.name} did not start: {server.tail()}")
            time.sleep(0.2)

    def stop(self, keep_db: bool = False) -> dict[str, int | None]:
        codes = {p.name: p.stop() for p in self.processes}
        if self.database_url and not keep_db:
            drop_database(self.pg_admin_url, self.database_url)
        return codes

    # -- sampling ------------------------------------------------------------------------
    def connections(self) -> dict[str, int]:
        """Backends connected to the run's database, by state (``refused`` when the server
        had no connection left for the sampler: the finding, not the end of the run)."""
        try:
            with psycopg.connect(self.database_url, autocommit=True) as conn:
                rows = conn.execute(
                    "SELECT coalesce(state, 'unknown'), count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid() GROUP BY 1"
                ).fetchall()
        except psycopg.OperationalError:
            return {"refused": 1, "total": -1}
        out = {str(state): int(n) for state, n in rows}
        out["total"] = sum(out.values())
        return out

    def activity(self) -> list[tuple[str, str]]:
        """(wait, statement) of every busy backend now; nothing when none can connect."""
        try:
            with psycopg.connect(self.database_url, autocommit=True, connect_timeout=5) as conn:
                return [(str(w), str(q)) for w, q in conn.execute(ACTIVITY_SQL).fetchall()]
        except psycopg.OperationalError:
            return []

    def sample(self, minute: float) -> dict[str, Any]:
        return {
            "minute": round(minute, 2),
            "rss": {p.name: p.rss() for p in self.processes},
            "cpu_s": {
                **{p.name: p.cpu() for p in self.processes},
                "postgres (all databases)": round(postgres_cpu_seconds(), 1),
                "harness": round(harness_cpu_seconds(), 1),
                "machine (all cores)": round(machine_busy_seconds(), 1),
            },
            "alive": {p.name: p.alive() for p in self.processes},
            "pg_connections": self.connections(),
        }
