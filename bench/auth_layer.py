"""Benchmark for the "Foundation" issue: what the hub's auth layer and GET /v1/me cost.

Three servers, one after the other, each ONE uvicorn process (single worker, no access log,
log level warning) on its own free loopback port, each measured with
``wrk -t2 -c32 -d15s --latency``:

  bare   a minimal Litestar app, one GET route returning a constant small JSON dict
         (bench/bare_app.py)                                              -> GET /bench/bare
  auth   the hub's real app (hub.app.create_app) plus one benchmark-only route that returns
         the verified token's claims (bench/hub_bench_app.py), on a fresh PostgreSQL
         database; the route itself reads no database                    -> GET /bench/claims
  me     the hub's real app (hub.app:create_app) on a fresh PostgreSQL database, a partner
         with one client and its token                                   -> GET /v1/me

Targets (issue 18): auth rps / bare rps >= 0.80, me rps / bare rps >= 0.60, p99 < 10 ms for
auth and me, as medians of the rounds (``--rounds 5``).

Run from the repository root:

    .venv/bin/python bench/auth_layer.py                 # full run, 15 s per case
    .venv/bin/python bench/auth_layer.py --duration 3s   # smoke run

Results: a markdown table on stdout and JSON in bench/results/ (gitignored).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"
VENV_BIN = Path(sys.executable).parent
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/postgres"
# High enough that the per-client token bucket never throttles the benchmark.
NO_RATE_LIMIT = "100000000"
TARGET_AUTH_RATIO = 0.80
TARGET_ME_RATIO = 0.60
TARGET_P99_MS = 10.0
# The bare case sends an Authorization header of about a real token's size, so every case
# sends requests of similar size (the bare app ignores it).
DUMMY_TOKEN_LEN = 820


# -- helpers ----------------------------------------------------------------------------------
def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    """The parent environment minus any HUB_* variable (the run must not depend on the shell's
    HUB_CONFIG or the like), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


def parse_duration(text: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(ms|s|m)?", text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 15s, 3s, 1m)")
    value, unit = float(m.group(1)), m.group(2) or "s"
    return value * {"ms": 0.001, "s": 1.0, "m": 60.0}[unit]


def to_ms(value: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value.strip())
    if not m:
        raise ValueError(f"unrecognised wrk time {value!r}")
    return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[m.group(2)]


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def cpu_snapshot() -> dict[int, tuple[str, int, int]]:
    """{pid: (command name, utime + stime ticks, start time)} for every process (/proc)."""
    snap: dict[int, tuple[str, int, int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue
        comm = raw[raw.index("(") + 1 : raw.rindex(")")]
        fields = raw.rsplit(")", 1)[1].split()
        snap[int(entry.name)] = (comm, int(fields[11]) + int(fields[12]), int(fields[19]))
    return snap


def busy_seconds() -> float:
    """CPU seconds spent busy by all CPUs since boot (/proc/stat)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def cpu_by_group(
    before: dict[int, tuple[str, int, int]],
    after: dict[int, tuple[str, int, int]],
    server_pid: int,
    wrk_seconds: float,
) -> dict[str, float]:
    """CPU seconds between two snapshots: the server, wrk, PostgreSQL, everything else.
    wrk has exited by then: its CPU time comes from getrusage. Processes that exited in between
    are missing (short-lived PostgreSQL backends too)."""
    tck = os.sysconf("SC_CLK_TCK")
    groups: dict[str, float] = {"server": 0.0, "wrk": wrk_seconds, "postgres": 0.0, "other": 0.0}
    others: dict[str, float] = {}
    for pid, (comm, ticks, started) in after.items():
        prev = before.get(pid)
        delta = (ticks - prev[1] if prev and prev[2] == started else ticks) / tck
        if delta <= 0:
            continue
        if pid == server_pid:
            groups["server"] += delta
        elif comm.startswith("postgres"):
            groups["postgres"] += delta
        else:
            groups["other"] += delta
            others[comm] = others.get(comm, 0.0) + delta
    groups = {k: round(v, 2) for k, v in groups.items()}
    groups["top_other"] = dict(sorted(others.items(), key=lambda kv: -kv[1])[:5])  # type: ignore[assignment]
    return groups


def wait_for_quiet(max_wait: float, threshold: float = 0.15) -> float:
    """Wait (up to ``max_wait`` s) until the machine is nearly idle before a measurement:
    other work on a 2-core box (a test suite...) skews every number. Returns the busy fraction
    of the last 1 s sample (all CPUs)."""
    deadline = time.monotonic() + max_wait
    ncpu = os.cpu_count() or 1
    warned = False
    while True:
        b0, t0 = busy_seconds(), time.monotonic()
        time.sleep(1.0)
        frac = (busy_seconds() - b0) / ((time.monotonic() - t0) * ncpu)
        if frac < threshold or time.monotonic() >= deadline:
            if frac >= threshold:
                log(f"WARNING: machine still {frac:.0%} busy with other work; measuring anyway")
            return round(frac, 3)
        if not warned:
            log(f"machine {frac:.0%} busy with other work; waiting up to {max_wait:g}s for quiet")
            warned = True


# -- wrk --------------------------------------------------------------------------------------
@dataclass
class WrkResult:
    requests: int
    duration_s: float
    rps: float
    latency_ms: dict[str, float]  # "50", "75", "90", "99" -> ms
    non_2xx: int
    socket_errors: dict[str, int]
    raw: str

    @property
    def p50(self) -> float:
        return self.latency_ms["50"]

    @property
    def p99(self) -> float:
        return self.latency_ms["99"]


def parse_wrk(output: str) -> WrkResult:
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.M)
    total = re.search(r"^\s*(\d+) requests in ([\d.]+\w+),", output, re.M)
    if not rps or not total:
        raise RuntimeError(f"could not parse wrk output:\n{output}")
    latency = {
        pct: to_ms(val)
        for pct, val in re.findall(r"^\s+(50|75|90|99)%\s+([\d.]+\w+)\s*$", output, re.M)
    }
    if set(latency) != {"50", "75", "90", "99"}:
        raise RuntimeError(f"no latency distribution in wrk output (--latency?):\n{output}")
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    sock = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    socket_errors = (
        dict(zip(("connect", "read", "write", "timeout"), map(int, sock.groups()), strict=True))
        if sock
        else {"connect": 0, "read": 0, "write": 0, "timeout": 0}
    )
    return WrkResult(
        requests=int(total.group(1)),
        duration_s=to_ms(total.group(2)) / 1000.0,
        rps=float(rps.group(1)),
        latency_ms=latency,
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=socket_errors,
        raw=output,
    )


def run_wrk(url: str, headers: dict[str, str], args: argparse.Namespace, seconds: float) -> str:
    cmd = [
        "wrk",
        f"-t{args.threads}",
        f"-c{args.connections}",
        f"-d{max(1, round(seconds))}s",
        "--latency",
        "--timeout",
        "10s",
    ]
    for name, value in headers.items():
        cmd += ["-H", f"{name}: {value}"]
    cmd.append(url)
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    return done.stdout


# -- servers ----------------------------------------------------------------------------------
class Server:
    """One uvicorn process (single worker, no access log, log level warning)."""

    def __init__(self, name: str, target: list[str], env: dict[str, str], port: int) -> None:
        self.name = name
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = Path(tempfile.mkstemp(prefix=f"bench-{name}-", suffix=".log")[1])
        cmd = [
            sys.executable,
            "-m",
            "uvicorn",
            *target,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-access-log",
            "--log-level",
            "warning",
        ]
        self.cmd = cmd
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT
        )

    def wait_ready(self, path: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} server exited:\n{self.log_path.read_text()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + path, timeout=2).status_code == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} server not ready in {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        if self.proc.returncode in (0, -signal.SIGTERM):
            self.log_path.unlink(missing_ok=True)  # kept only when the server failed
        else:
            log(f"{self.name}: server exited with {self.proc.returncode}; log in {self.log_path}")


# -- PostgreSQL + hub setup -------------------------------------------------------------------
def create_database(admin_url: str) -> str:
    name = f"bench_hub_{secrets.token_hex(6)}"
    admin = make_url(admin_url).set(drivername="postgresql")
    with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return admin.set(database=name).render_as_string(hide_password=False)


def drop_database(admin_url: str, url: str) -> None:
    admin = make_url(admin_url).set(drivername="postgresql")
    name = make_url(url).database
    with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class HubSetup:
    database_url: str
    data_dir: Path
    admin_id: str
    admin_secret: str
    # Settings for the hub's servers only (--hub-env), e.g. a diagnostic run with the
    # once-a-second refreshes slowed down.
    extra_env: dict[str, str] = field(default_factory=dict)


def prepare_hub(admin_pg_url: str) -> HubSetup:
    """Fresh database, migrations, and an admin client through `hub admin bootstrap --json`."""
    from hub.migrate import upgrade

    database_url = create_database(admin_pg_url)
    data_dir = Path(tempfile.mkdtemp(prefix="bench-hub-data-"))
    upgrade(database_url)
    env = clean_env(HUB_DATABASE_URL=database_url, HUB_SERVER_DATA_DIR=str(data_dir))
    hub_cli = VENV_BIN / "hub"
    done = subprocess.run(
        [str(hub_cli), "admin", "bootstrap", "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"hub admin bootstrap failed: {done.stderr or done.stdout}")
    out = json.loads(done.stdout)
    return HubSetup(database_url, data_dir, out["client_id"], out["client_secret"])


def hub_env(setup: HubSetup, port: int) -> dict[str, str]:
    return clean_env(
        HUB_DATABASE_URL=setup.database_url,
        HUB_SERVER_DATA_DIR=str(setup.data_dir),
        HUB_OAUTH_ISSUER=f"http://127.0.0.1:{port}",
        HUB_LOGGING_ACCESS_LOG="false",
        HUB_LIMITS_REQUESTS_PER_MINUTE=NO_RATE_LIMIT,
        HUB_LIMITS_BURST=NO_RATE_LIMIT,
        **setup.extra_env,
    )


def get_token(http: httpx.Client, client_id: str, secret: str) -> str:
    r = http.post(
        "/oauth/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret)
    )
    if r.status_code != 200:
        raise RuntimeError(f"POST /oauth/token: {r.status_code} {r.text}")
    return str(r.json()["access_token"])


def partner_token(server: Server, setup: HubSetup) -> tuple[str, dict[str, Any]]:
    """Admin token -> partner -> client (overlap:read, client_secret_basic) -> client token."""
    with httpx.Client(base_url=server.url, timeout=30) as http:
        admin = {"Authorization": f"Bearer {get_token(http, setup.admin_id, setup.admin_secret)}"}
        r = http.post(
            "/v1/partners",
            json={"name": f"bench-{secrets.token_hex(4)}", "category": "airline"},
            headers=admin,
        )
        if r.status_code != 201:
            raise RuntimeError(f"POST /v1/partners: {r.status_code} {r.text}")
        partner = r.json()
        r = http.post(
            f"/v1/partners/{partner['id']}/clients",
            json={
                "name": "bench",
                "scopes": ["overlap:read"],
                "auth_method": "client_secret_basic",
            },
            headers=admin,
        )
        if r.status_code != 201:
            raise RuntimeError(f"POST /v1/partners/{{id}}/clients: {r.status_code} {r.text}")
        client = r.json()
        return get_token(http, client["client_id"], client["client_secret"]), client


# -- one case ---------------------------------------------------------------------------------
@dataclass
class CaseResult:
    name: str
    description: str
    path: str
    server_cmd: list[str]
    database: str | None
    requests: int
    duration_s: float
    rps: float
    latency_ms: dict[str, float]
    non_2xx: int
    socket_errors: dict[str, int]
    server_cpu_s: float
    server_cpu_us_per_request: float
    cpu_seconds: dict[str, Any]
    sample_response: Any
    rounds: list[dict[str, Any]] = field(default_factory=list)
    wrk_output: str = ""


def measure(
    name: str,
    description: str,
    server: Server,
    path: str,
    headers: dict[str, str],
    args: argparse.Namespace,
    database: str | None,
) -> CaseResult:
    url = server.url + path
    check = httpx.get(url, headers=headers, timeout=10)
    if check.status_code != 200:
        raise RuntimeError(f"{name}: GET {path} -> {check.status_code} {check.text}")
    sample = check.json()
    if args.warmup > 0:
        log(f"{name}: warm-up {args.warmup:g}s")
        run_wrk(url, headers, args, args.warmup)
    rounds: list[tuple[WrkResult, float, dict[str, Any]]] = []
    for i in range(args.rounds):
        log(
            f"{name}: wrk -t{args.threads} -c{args.connections} -d{args.duration:g}s --latency "
            f"{url}" + (f" (round {i + 1}/{args.rounds})" if args.rounds > 1 else "")
        )
        idle_busy = wait_for_quiet(args.quiet_wait) if args.quiet_wait > 0 else None
        cpu_before, snap_before = proc_cpu_seconds(server.proc.pid), cpu_snapshot()
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        result = parse_wrk(run_wrk(url, headers, args, args.duration))
        cpu = proc_cpu_seconds(server.proc.pid) - cpu_before
        children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        wrk_cpu = (children_after.ru_utime - children.ru_utime) + (
            children_after.ru_stime - children.ru_stime
        )
        groups = cpu_by_group(snap_before, cpu_snapshot(), server.proc.pid, wrk_cpu)
        groups["busy_before_run"] = idle_busy  # type: ignore[assignment]
        rounds.append((result, cpu, groups))
        if groups["other"] > 0.1 * args.duration:
            log(
                f"{name}: WARNING other processes used {groups['other']:.1f} CPU-s during the run "
                f"({groups['top_other']}); numbers are skewed"
            )
        if result.non_2xx or any(result.socket_errors.values()):
            log(f"{name}: WARNING non-2xx={result.non_2xx} socket errors={result.socket_errors}")
    # Report the median round by throughput.
    rounds_sorted = sorted(rounds, key=lambda rc: rc[0].rps)
    best, cpu, groups = rounds_sorted[len(rounds_sorted) // 2]
    if server.proc.poll() is not None:
        raise RuntimeError(f"{name} server died during the run:\n{server.log()}")
    return CaseResult(
        name=name,
        description=description,
        path=path,
        server_cmd=server.cmd,
        database=database,
        requests=best.requests,
        duration_s=best.duration_s,
        rps=best.rps,
        latency_ms=best.latency_ms,
        non_2xx=best.non_2xx,
        socket_errors=best.socket_errors,
        server_cpu_s=round(cpu, 3),
        server_cpu_us_per_request=round(cpu / best.requests * 1e6, 1) if best.requests else 0.0,
        cpu_seconds=groups,
        sample_response=sample,
        rounds=[
            {"rps": r.rps, "latency_ms": r.latency_ms, "requests": r.requests, "cpu_s": g}
            for r, _, g in rounds
        ],
        wrk_output=best.raw,
    )


def run_bare(args: argparse.Namespace) -> CaseResult:
    port = free_port()
    server = Server("bare", ["bench.bare_app:app"], clean_env(), port)
    try:
        server.wait_ready("/bench/bare")
        headers = {"Authorization": "Bearer " + "x" * DUMMY_TOKEN_LEN}
        return measure(
            "bare",
            "minimal Litestar app, constant JSON dict",
            server,
            "/bench/bare",
            headers,
            args,
            None,
        )
    finally:
        server.stop()


def start_hub(name: str, setup: HubSetup, factory: str) -> Server:
    port = free_port()
    env = hub_env(setup, port)
    server = Server(name, ["--factory", factory], env, port)
    try:
        server.wait_ready("/health/ready")
    except BaseException:
        server.stop()
        raise
    return server


def run_hub_case(args: argparse.Namespace, name: str) -> tuple[CaseResult, list[CaseResult]]:
    """One hub case (auth or me) on a fresh database; with --breakdown, the auth case also
    measures diagnostic variants on the same database (not targets)."""
    log(f"{name}: fresh PostgreSQL database, migrations, hub admin bootstrap")
    setup = prepare_hub(args.pg_url)
    setup.extra_env = dict(item.split("=", 1) for item in args.hub_env)
    database = make_url(setup.database_url).database
    breakdown: list[CaseResult] = []
    try:
        if name == "me":
            server = start_hub(name, setup, "hub.app:create_app")
            try:
                token, _client = partner_token(server, setup)
                headers = {"Authorization": f"Bearer {token}"}
                result = measure(
                    name,
                    "hub app, GET /v1/me (PostgreSQL)",
                    server,
                    "/v1/me",
                    headers,
                    args,
                    database,
                )
            finally:
                server.stop()
            return result, breakdown

        server = start_hub(name, setup, "bench.hub_bench_app:create")
        try:
            token, _client = partner_token(server, setup)
            headers = {"Authorization": f"Bearer {token}"}
            result = measure(
                name,
                "hub app, bearer auth, returns token claims (no DB)",
                server,
                "/bench/claims",
                headers,
                args,
                database,
            )
            if args.breakdown:
                breakdown.append(
                    measure(
                        "hub-live",
                        "hub app, public /health/live: middleware stack, no auth, no DB",
                        server,
                        "/health/live",
                        headers,
                        args,
                        database,
                    )
                )
                breakdown.append(
                    measure(
                        "hub-ready",
                        "hub app, public /health/ready: session + SELECT 1 + commit",
                        server,
                        "/health/ready",
                        headers,
                        args,
                        database,
                    )
                )
        finally:
            server.stop()
        return result, breakdown
    finally:
        if args.keep_db:
            log(f"{name}: kept database {setup.database_url} and data dir {setup.data_dir}")
        else:
            drop_database(args.pg_url, setup.database_url)
            shutil.rmtree(setup.data_dir, ignore_errors=True)


# -- report -----------------------------------------------------------------------------------
def machine_info() -> dict[str, Any]:
    cpu_model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    versions = {}
    for mod in ("litestar", "uvicorn", "uvloop", "httptools", "joserfc", "sqlalchemy", "psycopg"):
        try:
            from importlib.metadata import version

            versions[mod] = version(mod)
        except Exception:  # noqa: BLE001 - missing is "absent"
            versions[mod] = "absent"
    wrk_version = subprocess.run(
        ["wrk", "--version"], capture_output=True, text=True, check=False
    ).stdout.splitlines()
    git = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--", "hub", "partners", "config"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split("\n")
    return {
        "git_commit": git,
        "uncommitted_hub_changes": [line for line in dirty if line.strip()],
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "packages": versions,
        "wrk": wrk_version[0].strip() if wrk_version else "",
    }


def verdicts(results: dict[str, CaseResult]) -> list[dict[str, Any]]:
    bare = results.get("bare")
    out = []

    def add(target: str, value: float | None, ok: bool | None, unit: str = "") -> None:
        out.append({"target": target, "value": value, "unit": unit, "pass": ok})

    if bare and "auth" in results:
        ratio = results["auth"].rps / bare.rps
        add(
            f"auth rps / bare rps >= {TARGET_AUTH_RATIO}",
            round(ratio, 3),
            ratio >= TARGET_AUTH_RATIO,
        )
    if bare and "me" in results:
        ratio = results["me"].rps / bare.rps
        add(
            f"/v1/me rps / bare rps >= {TARGET_ME_RATIO}", round(ratio, 3), ratio >= TARGET_ME_RATIO
        )
    for name in ("auth", "me"):
        if name in results:
            p99 = results[name].latency_ms["99"]
            add(f"{name} p99 < {TARGET_P99_MS:g} ms", p99, p99 < TARGET_P99_MS, "ms")
    return out


def markdown(results: dict[str, CaseResult], checks: list[dict[str, Any]]) -> str:
    bare = results.get("bare")
    lines = [
        "| case | route | requests | req/s | p50 ms | p75 ms | p90 ms | p99 ms | vs bare "
        "| server CPU µs/req | CPU-s server/wrk/pg/other | errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results.values():
        ratio = f"{r.rps / bare.rps:.2f}" if bare else "-"
        errors = r.non_2xx + sum(r.socket_errors.values())
        g = r.cpu_seconds
        cpu_groups = f"{g['server']:.1f}/{g['wrk']:.1f}/{g['postgres']:.1f}/{g['other']:.1f}"
        lines.append(
            f"| {r.name} | GET {r.path} | {r.requests} | {r.rps:,.0f} | {r.latency_ms['50']:.2f} "
            f"| {r.latency_ms['75']:.2f} | {r.latency_ms['90']:.2f} | {r.latency_ms['99']:.2f} "
            f"| {ratio} | {r.server_cpu_us_per_request:.0f} | {cpu_groups} | {errors} |"
        )
    if bare and len(bare.rounds) > 1:
        # Round i of a case against round i of bare (the cases run one after the other).
        lines += ["", "| case | req/s per round | vs bare per round |", "|---|---|---|"]
        for r in results.values():
            rps = [x["rps"] for x in r.rounds]
            ratios = [a / b for a, b in zip(rps, (x["rps"] for x in bare.rounds), strict=False)]
            lines.append(
                f"| {r.name} | {' / '.join(f'{x:,.0f}' for x in rps)} "
                f"| {' / '.join(f'{x:.3f}' for x in ratios)} |"
            )
    if checks:
        lines += ["", "| target | measured | verdict |", "|---|---:|---|"]
    for c in checks:
        verdict = "PASS" if c["pass"] else "FAIL"
        lines.append(
            f"| {c['target']} | {c['value']}{(' ' + c['unit']) if c['unit'] else ''} | {verdict} |"
        )
    return "\n".join(lines)


# -- main -------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--duration",
        type=parse_duration,
        default=15.0,
        help="wrk duration per case (default 15s; e.g. 3s for a smoke run)",
    )
    p.add_argument(
        "--warmup",
        type=parse_duration,
        default=2.0,
        help="unmeasured wrk run before each case (default 2s; 0 to skip)",
    )
    p.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    p.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    p.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="measured wrk runs per case; the median by req/s is reported",
    )
    p.add_argument(
        "--cases",
        default="bare,auth,me",
        help="comma-separated subset of bare,auth,me (default all)",
    )
    p.add_argument(
        "--pg-url",
        default=os.environ.get("BENCH_PG_URL", DEFAULT_PG),
        help=f"PostgreSQL server URL to create databases on (default {DEFAULT_PG})",
    )
    p.add_argument("--keep-db", action="store_true", help="keep the benchmark databases")
    p.add_argument(
        "--quiet-wait",
        type=parse_duration,
        default=120.0,
        help="before each measured run, wait up to this long for the machine to be idle\n"
        "(< 15%% busy); 0 to skip (default 120s)",
    )
    p.add_argument(
        "--breakdown",
        action="store_true",
        help="also measure diagnostic variants of the auth case (not targets): /health/live\n"
        "and /health/ready on the same server",
    )
    p.add_argument(
        "--hub-env",
        action="append",
        default=[],
        metavar="HUB_X=VALUE",
        help="a setting for the hub's servers (repeatable; diagnostics, not the targets' runs)",
    )
    p.add_argument("--output", type=Path, default=None, help="JSON results file")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        print(
            "error: wrk is not on PATH. Install it (Debian/Ubuntu):\n"
            "    apt-get update && apt-get install -y wrk",
            file=sys.stderr,
        )
        return 2
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = set(cases) - {"bare", "auth", "me"}
    if unknown:
        print(f"error: unknown case(s) {sorted(unknown)}", file=sys.stderr)
        return 2
    started = datetime.now(UTC)
    info = machine_info()
    log(
        f"machine: {info['cpus']} CPUs ({info['cpu_model']}), Python {info['python']}, "
        f"{info['wrk']}"
    )
    log(
        f"code: git {info['git_commit'][:12]}"
        + (
            " + uncommitted changes in hub/partners/config"
            if info["uncommitted_hub_changes"]
            else ""
        )
    )
    log(
        "access logging is OFF in every case (uvicorn --no-access-log; "
        "HUB_LOGGING_ACCESS_LOG=false for the hub)"
    )

    results: dict[str, CaseResult] = {}
    breakdown: dict[str, CaseResult] = {}
    for case in cases:
        if case == "bare":
            results[case] = run_bare(args)
        else:
            results[case], extra = run_hub_case(args, case)
            breakdown.update((r.name, r) for r in extra)
        for r in [results[case], *(breakdown.values() if case == "auth" else [])]:
            log(
                f"{r.name}: {r.rps:,.0f} req/s, p50 {r.latency_ms['50']:.2f} ms, p99 "
                f"{r.latency_ms['99']:.2f} ms, server CPU {r.server_cpu_us_per_request:.0f} µs/req"
            )

    checks = verdicts(results)
    table = markdown(results, checks)
    print()
    print(
        f"## Results ({started:%Y-%m-%d %H:%M} UTC, {info['cpus']} CPUs, "
        f"wrk -t{args.threads} -c{args.connections} -d{args.duration:g}s)"
    )
    print()
    print(table)
    print()
    if breakdown:
        breakdown_table = markdown(
            {
                **({"bare": results["bare"]} if "bare" in results else {}),
                **({"auth": results["auth"]} if "auth" in results else {}),
                **breakdown,
            },
            [],
        )
        print("## Breakdown (diagnostics, not targets)")
        print()
        print(breakdown_table)
        print()

    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    output = args.output or RESULTS_DIR / f"auth_layer-{started:%Y%m%dT%H%M%SZ}.json"
    payload = {
        "benchmark": "auth_layer",
        "started_at": started.isoformat(),
        "finished_at": datetime.now(UTC).isoformat(),
        "machine": info,
        "wrk": {
            "threads": args.threads,
            "connections": args.connections,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "rounds": args.rounds,
        },
        "access_log": False,
        "database": "PostgreSQL (fresh database per hub case)",
        "results": {name: asdict(r) for name, r in results.items()},
        "breakdown": {name: asdict(r) for name, r in breakdown.items()},
        "ratios_vs_bare": {
            name: round(r.rps / results["bare"].rps, 3)
            for name, r in results.items()
            if "bare" in results
        },
        "checks": checks,
        "markdown": table,
    }
    output.write_text(json.dumps(payload, indent=2, default=str))
    log(f"results written to {output.relative_to(ROOT) if output.is_relative_to(ROOT) else output}")
    failed = [c for c in checks if not c["pass"]]
    errors = any(r.non_2xx or any(r.socket_errors.values()) for r in results.values())
    if errors:
        log("WARNING: some responses were not 2xx or had socket errors; see the JSON")
    return 1 if failed or errors else 0


if __name__ == "__main__":
    sys.exit(main())
