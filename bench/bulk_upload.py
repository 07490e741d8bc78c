"""Bulk identifier upload benchmark (issue "Identifier exchange").

1M records as a gzip NDJSON bulk upload through the HTTP API until queryable (the upload's
status is ``completed``: every record committed), on PostgreSQL and on SQLite, against the
floor measured in the same run: parse the same file with msgspec and COPY (PostgreSQL) /
executemany (SQLite) into an equivalent bare table. Also reports the server's peak resident
memory (VmHWM), for the 10M-row run.

    .venv/bin/python bench/bulk_upload.py                       # 1M rows, both databases
    .venv/bin/python bench/bulk_upload.py --rows 10000000 --backends postgres,sqlite --no-floor
    .venv/bin/python bench/bulk_upload.py --backends postgres --repeat 5   # medians of 5 rounds

Each round measures the floors and the hub one after the other on the same file; ratios are
taken within a round, and the report gives every round and the medians. On PostgreSQL every
case starts after a ``CHECKPOINT``, so no case pays for the write-ahead log of the one before.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import json
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import auth_layer  # noqa: E402
from bench.auth_layer import free_port  # noqa: E402

RESULTS = ROOT / "bench" / "results"
VENV_BIN = Path(sys.executable).parent
PG_ADMIN = os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
TIERS = ("blue", "silver", "gold", "platinum")
CITIES = ("Paris", "Lyon", "Berlin", "Madrid", "Rome", "Lisbon", "Vienna", "Prague")
CONSENTS: tuple[list[str], ...] = (
    ["analytics"],
    ["analytics", "joint_offers"],
    ["analytics", "rewards_sharing"],
    [],
)


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def make_file(rows: int) -> Path:
    """gzip NDJSON of ``rows`` records shaped as `hub hash` writes them (made once, cached)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"bulk-{rows}.ndjson.gz"
    if path.exists():
        return path
    log(f"writing {path.name}")
    encoder = msgspec.json.Encoder()
    partial = path.with_suffix(".part")
    with gzip.open(partial, "wb", compresslevel=6) as out:
        chunk: list[bytes] = []
        for i in range(rows):
            digest = hashlib.sha256(f"member{i}@example.org".encode()).digest()
            record = {
                "id_type": "email",
                "id_hash": __import__("base64").b64encode(digest).decode(),
                "customer_ref": f"C{i:09d}",
                "consents": CONSENTS[i % 4],
                "attributes": {"tier": TIERS[i % 4], "city": CITIES[i % 8]},
            }
            chunk.append(encoder.encode(record))
            if len(chunk) == 10_000:
                out.write(b"\n".join(chunk) + b"\n")
                chunk = []
        if chunk:
            out.write(b"\n".join(chunk) + b"\n")
    partial.replace(path)
    return path


# -- the floor: parse with msgspec, COPY / executemany into a bare table ------------------------
class Row(msgspec.Struct):
    id_type: str
    id_hash: str
    customer_ref: str
    consents: list[str] = []
    attributes: dict[str, str] | None = None


def _rows(path: Path) -> Iterator[tuple[Any, ...]]:
    decoder = msgspec.json.Decoder(Row)
    encoder = msgspec.json.Encoder()
    with gzip.open(path, "rb") as fh:
        for line in fh:
            r = decoder.decode(line)
            attrs = None if r.attributes is None else encoder.encode(r.attributes).decode()
            yield (r.id_type, r.id_hash, r.customer_ref, "|".join(r.consents), attrs)


# The floor's table: the upload's columns, no indexes ("bare"), or with the two lookups that
# make records queryable, as identifier_records has them ("indexed": unique identifier, person).
INDEXES = (
    "CREATE UNIQUE INDEX bare_key ON bare (id_type, id_hash)",
    "CREATE INDEX bare_person ON bare (customer_ref)",
)


def checkpoint() -> None:
    """Flush what earlier cases wrote: each case then starts from the same state."""
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute("CHECKPOINT")


def floor_postgres(path: Path, indexed: bool) -> float:
    url = create_database()
    checkpoint()
    try:
        with psycopg.connect(url) as conn:
            conn.execute(
                "CREATE TABLE bare (id bigserial primary key, id_type text, id_hash text, "
                "customer_ref text, consents text, attributes jsonb)"
            )
            for statement in INDEXES if indexed else ():
                conn.execute(statement)
            conn.commit()
            start = time.perf_counter()
            with (
                conn.cursor() as cur,
                cur.copy(
                    "COPY bare (id_type, id_hash, customer_ref, consents, attributes) FROM STDIN"
                ) as copy,
            ):
                for row in _rows(path):
                    copy.write_row(row)
            conn.commit()
            return time.perf_counter() - start
    finally:
        drop_database(url)


def floor_sqlite(path: Path, indexed: bool) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        conn = sqlite3.connect(Path(tmp) / "bare.db", isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(
            "CREATE TABLE bare (id integer primary key, id_type text, id_hash text, "
            "customer_ref text, consents text, attributes text)"
        )
        for statement in INDEXES if indexed else ():
            conn.execute(statement)
        start = time.perf_counter()
        batch: list[tuple[Any, ...]] = []
        sql = "INSERT INTO bare (id_type, id_hash, customer_ref, consents, attributes) VALUES "
        sql += "(?, ?, ?, ?, ?)"
        for row in _rows(path):
            batch.append(row)
            if len(batch) == 20_000:
                conn.execute("BEGIN")
                conn.executemany(sql, batch)
                conn.execute("COMMIT")
                batch = []
        conn.execute("BEGIN")
        conn.executemany(sql, batch)
        conn.execute("COMMIT")
        elapsed = time.perf_counter() - start
        conn.close()
        return elapsed


# -- the hub ----------------------------------------------------------------------------------
def create_database() -> str:
    return auth_layer.create_database(PG_ADMIN)


def drop_database(url: str) -> None:
    auth_layer.drop_database(PG_ADMIN, url)


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def children(pid: int) -> list[int]:
    """Every descendant process of ``pid`` (the parsing processes of the hub)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                parents[int(entry.name)] = int(stat[1])
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        kids = [child for child, ppid in parents.items() if ppid == parent]
        found += kids
        frontier += kids
    return found


def hub(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [str(VENV_BIN / "hub"), *args], env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"hub {' '.join(args)}: {done.stderr}")
    return done.stdout


def run_hub(backend: str, path: Path) -> dict[str, Any]:
    data_dir = Path(tempfile.mkdtemp(prefix="bench-bulk-"))
    database_url = create_database() if backend == "postgres" else f"sqlite:///{data_dir}/hub.db"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    env.update(
        HUB_DATABASE_URL=database_url,
        HUB_SERVER_DATA_DIR=str(data_dir),
        HUB_OAUTH_ISSUER=f"http://127.0.0.1:{port}",
        HUB_LOGGING_ACCESS_LOG="false",
    )
    hub(env, "db", "upgrade")
    admin = json.loads(hub(env, "admin", "bootstrap", "--json"))
    if backend == "postgres":
        checkpoint()
    server = subprocess.Popen(
        [str(VENV_BIN / "hub"), "serve", "--port", str(port)],
        env=env,
        stdout=(data_dir / "server.log").open("w"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    profiler = None
    if os.environ.get("BENCH_PYSPY"):
        profiler = subprocess.Popen(
            [
                str(VENV_BIN / "py-spy"),
                "record",
                "-p",
                str(server.pid),
                "-f",
                "speedscope",
                "-o",
                os.environ["BENCH_PYSPY"],
                "--threads",
                "-r",
                "50",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    try:
        with httpx.Client(base_url=url, timeout=600) as http:
            deadline = time.monotonic() + 60
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if http.get("/health/ready").status_code == 200:
                        break
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError((data_dir / "server.log").read_text())
                time.sleep(0.1)
            token = http.post(
                "/oauth/token",
                data={"grant_type": "client_credentials"},
                auth=(admin["client_id"], admin["client_secret"]),
            ).json()["access_token"]
            admin_headers = {"Authorization": f"Bearer {token}"}
            partner = http.post(
                "/v1/partners", json={"name": "bench", "category": "airline"}, headers=admin_headers
            ).json()
            client = http.post(
                f"/v1/partners/{partner['id']}/clients",
                json={"name": "bulk", "scopes": ["identifiers:write"]},
                headers=admin_headers,
            ).json()
            partner_token = http.post(
                "/oauth/token",
                data={"grant_type": "client_credentials"},
                auth=(client["client_id"], client["client_secret"]),
            ).json()["access_token"]
            headers = {
                "Authorization": f"Bearer {partner_token}",
                "Content-Type": "application/x-ndjson",
                "Content-Encoding": "gzip",
            }
            start = time.perf_counter()
            with path.open("rb") as body:
                sent = http.post("/v1/identifiers/uploads", content=body, headers=headers)
            assert sent.status_code == 202, sent.text
            received = time.perf_counter() - start
            upload_id = sent.json()["id"]
            while True:
                status = http.get(f"/v1/identifiers/uploads/{upload_id}", headers=headers).json()
                if status["status"] in ("completed", "failed"):
                    break
                time.sleep(0.1)
            total = time.perf_counter() - start
            # The processor logs its phases just after the commit: wait for that line.
            deadline = time.monotonic() + 60
            log_path = data_dir / "server.log"
            while "upload applied" not in log_path.read_text() and time.monotonic() < deadline:
                time.sleep(0.2)
            summary = http.get("/v1/identifiers/summary", headers=headers).json()
        result = {
            "backend": backend,
            "status": status["status"],
            "error": status.get("error"),
            "rows": status["rows_read"],
            "accepted": status["accepted"],
            "records_queryable": summary["records"],
            "received_s": round(received, 2),
            "total_s": round(total, 2),
            "server_peak_rss_mb": round(peak_rss_mb(server.pid), 1),
            # Peaks of the server and each of its parsing processes, added up (an upper
            # bound of what they held at once).
            "with_children_peak_rss_mb": round(
                sum(peak_rss_mb(p) for p in [server.pid, *children(server.pid)]), 1
            ),
        }
    finally:
        if profiler is not None:
            profiler.send_signal(signal.SIGINT)
            profiler.wait(timeout=60)
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        if backend == "postgres":
            drop_database(database_url)
    # Read once the server has stopped: the line is written after the upload's commit.
    result["phases"] = [
        line
        for line in (data_dir / "server.log").read_text().splitlines()
        if "upload applied" in line
    ]
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--backends", default="postgres,sqlite")
    parser.add_argument("--no-floor", action="store_true", help="skip the floor (e.g. at 10M)")
    parser.add_argument("--repeat", type=int, default=1, help="rounds per backend (medians)")
    args = parser.parse_args()
    path = make_file(args.rows)
    log(f"{path.name}: {path.stat().st_size / 1e6:.1f} MB")
    results = []
    for backend in args.backends.split(","):
        for round_ in range(1, args.repeat + 1):
            result = run_round(backend, path, floor=not args.no_floor)
            result["round"] = round_
            log(json.dumps(result))
            results.append(result)
    out = RESULTS / f"bulk-{args.rows}-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(
        "| backend | round | rows | floor bare s | floor indexed s | hub s (until queryable) "
        "| stage s | apply s | ÷ bare | ÷ indexed | stage ÷ bare | server peak RSS MB "
        "| with parsing processes |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r['backend']} | {r['round']} | {r['rows']:,} | {r.get('floor_bare_s')} | "
            f"{r.get('floor_indexed_s')} | {r['total_s']} | {r.get('stage_s')} | "
            f"{r.get('apply_s')} | {r.get('ratio_bare')} | {r.get('ratio_indexed')} | "
            f"{r.get('stage_ratio_bare')} | "
            f"{r['server_peak_rss_mb']} | {r['with_children_peak_rss_mb']} |"
        )
    for backend in args.backends.split(","):
        mine = [r for r in results if r["backend"] == backend]
        medians = {
            key: statistics.median(r[key] for r in mine)
            for key in ("total_s", "ratio_bare", "ratio_indexed", "stage_ratio_bare")
            if all(r.get(key) is not None for r in mine)
        }
        print(f"{backend}: medians over {len(mine)} round(s): {json.dumps(medians)}")
    return 0


def run_round(backend: str, path: Path, *, floor: bool) -> dict[str, Any]:
    floors: dict[str, float] = {}
    if floor:
        writer = "COPY" if backend == "postgres" else "executemany"
        measure = floor_postgres if backend == "postgres" else floor_sqlite
        for kind in ("bare", "indexed"):
            log(f"{backend}: floor, {kind} table (msgspec + {writer})")
            floors[kind] = measure(path, kind == "indexed")
            log(f"{backend}: floor {kind} {floors[kind]:.2f} s")
    log(f"{backend}: hub upload")
    result = run_hub(backend, path)
    for line in result["phases"]:
        phases = json.loads(line)
        result["stage_s"], result["apply_s"] = phases["stage_seconds"], phases["apply_seconds"]
    for kind, seconds in floors.items():
        result[f"floor_{kind}_s"] = round(seconds, 2)
        result[f"ratio_{kind}"] = round(result["total_s"] / seconds, 2)
    if "bare" in floors and result.get("stage_s"):
        # The stage alone (read, check, key, seal, write to staging: nothing applied yet).
        result["stage_ratio_bare"] = round(result["stage_s"] / floors["bare"], 2)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
