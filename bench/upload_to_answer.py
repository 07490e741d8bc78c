"""From a brand's upload to the first answer (issue 18, "upload → first answer").

What a user waits for is the whole path: two brands each upload their daily snapshot, then
one of them asks their overlap. One run, per database:

1. **the floor**, measured in the same run on the same two files: parse each file with msgspec,
   the same per-row work the hub must do (base64 decode, HMAC-SHA256 match key, AES-GCM seal
   of the digest under a random nonce), then ``COPY`` (PostgreSQL) / ``executemany`` (SQLite,
   WAL) into a table with the lookups a queryable partner needs (unique (id type, match key),
   and the person). The two files one after the other;
2. **the hub**: a real ``hub serve`` on a fresh database (uploads processed in the serving
   process, its parsers as children), two partners and a partnership for ``analytics``
   accepted by both *before* the uploads; then A's file, polled until ``completed``, then B's,
   then the first overlap request. Times: from the first byte of A's upload to each upload's
   completion and to the first answer; and the first answer alone, after B's completion;
3. the summed peak resident memory (VmHWM) of the server and every process it started (the
   upload parsers), read after the first answer.

    .venv/bin/python -m bench.upload_to_answer --rows 1000000,10000000 --backends postgres
    .venv/bin/python -m bench.upload_to_answer --rows 1000000 --backends postgres,sqlite

Targets (issue 18): uploads at most 2 times the floor; first answer ≤ 1 s after the second upload
completes; summed VmHWM ≤ 2 GB; 1M → 10M growth of the path at most 11 times.
Writes bench/results/upload_to_answer-<time>.json.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import json
import os
import secrets
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import psycopg
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bench.auth_layer import free_port
from bench.bulk_upload import (
    RESULTS,
    Row,
    checkpoint,
    children,
    create_database,
    drop_database,
    hub,
    log,
    peak_rss_mb,
)
from bench.overlap_http import Creds, Server, applied_line, ask, make_files, upload
from partners.identifiers.crypto import NONCE_BYTES, _Hmac
from partners.identifiers.models import CONSENT_BITS


# -- the floor --------------------------------------------------------------------------------
def _rows(path: Path) -> Iterator[tuple[Any, ...]]:
    """Each record as the hub must hold it: match key, sealed digest, person, consents."""
    decoder = msgspec.json.Decoder(Row)
    encoder = msgspec.json.Encoder()
    mac = _Hmac(secrets.token_bytes(32))
    encrypt = AESGCM(AESGCM.generate_key(bit_length=256)).encrypt
    associated = secrets.token_bytes(17)
    with gzip.open(path, "rb") as fh:
        for line in fh:
            r = decoder.decode(line)
            digest = base64.b64decode(r.id_hash)
            nonce = os.urandom(NONCE_BYTES)
            bits = 0
            for c in r.consents:
                bits |= CONSENT_BITS[c]
            attrs = None if r.attributes is None else encoder.encode(r.attributes).decode()
            yield (
                1,
                mac(digest),
                nonce + encrypt(nonce, digest, associated),
                r.customer_ref,
                bits,
                attrs,
            )


TABLE = (
    "CREATE TABLE floor (id_type smallint, match_key {blob}, digest_enc {blob}, "
    "customer_ref text, consents smallint, attributes {json})"
)
INDEXES = (
    "CREATE UNIQUE INDEX floor_key ON floor (id_type, match_key)",
    "CREATE INDEX floor_person ON floor (customer_ref)",
)
COLUMNS = "id_type, match_key, digest_enc, customer_ref, consents, attributes"
INSERT = (
    "INSERT INTO floor (id_type, match_key, digest_enc, customer_ref, consents, attributes) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)


def floor_postgres(paths: list[Path]) -> float:
    url = create_database()
    checkpoint()
    try:
        with psycopg.connect(url) as conn:
            conn.execute(TABLE.format(blob="bytea", json="jsonb"))
            for statement in INDEXES:
                conn.execute(statement)
            conn.commit()
            start = time.perf_counter()
            for path in paths:
                with conn.cursor() as cur, cur.copy(f"COPY floor ({COLUMNS}) FROM STDIN") as copy:
                    for row in _rows(path):
                        copy.write_row(row)
                conn.commit()
            return time.perf_counter() - start
    finally:
        drop_database(url)


def floor_sqlite(paths: list[Path]) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        conn = sqlite3.connect(Path(tmp) / "floor.db", isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(TABLE.format(blob="blob", json="text"))
        for statement in INDEXES:
            conn.execute(statement)
        sql = INSERT
        start = time.perf_counter()
        for path in paths:
            batch: list[tuple[Any, ...]] = []
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
def run_hub(backend: str, paths: list[Path], expected: int) -> dict[str, Any]:
    data_dir = Path(tempfile.mkdtemp(prefix="bench-u2a-"))
    database_url = create_database() if backend == "postgres" else f"sqlite:///{data_dir}/hub.db"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    env.update(
        HUB_DATABASE_URL=database_url,
        HUB_SERVER_DATA_DIR=str(data_dir),
        HUB_OAUTH_ISSUER=f"http://127.0.0.1:{port}",
        HUB_LOGGING_ACCESS_LOG="false",
    )
    server = Server(env, port, data_dir)
    result: dict[str, Any] = {"backend": backend}
    try:
        hub(env, "db", "upgrade")
        admin = json.loads(hub(env, "admin", "bootstrap", "--json"))
        if backend == "postgres":
            checkpoint()
        server.start("server.log")
        with httpx.Client(base_url=server.url, timeout=3600) as http:
            admin_h = Creds(http, admin["client_id"], admin["client_secret"])
            members = []
            for category in ("airline", "hotel"):
                partner = http.post(
                    "/v1/partners",
                    json={"name": f"bench-{category}", "category": category},
                    headers=admin_h(),
                )
                assert partner.status_code == 201, partner.text
                client = http.post(
                    f"/v1/partners/{partner.json()['id']}/clients",
                    json={"name": "bench", "scopes": ["identifiers:write", "overlap:read"]},
                    headers=admin_h(),
                ).json()
                creds = Creds(http, client["client_id"], client["client_secret"])
                members.append((partner.json()["id"], creds))
            made = http.post(
                "/v1/partnerships",
                json={
                    "members": [m[0] for m in members],
                    "purposes": ["analytics"],
                    "min_audience": 50,
                },
                headers=admin_h(),
            )
            assert made.status_code == 201, made.text
            pid = made.json()["id"]
            for _, creds in members:
                got = http.post(f"/v1/partnerships/{pid}/accept", headers=creds())
                assert got.status_code in (200, 201), got.text
                creds()  # a token in hand before the clock starts
            start = time.perf_counter()
            for side, path, (_, creds) in zip("ab", paths, members, strict=True):
                log(f"{backend}: uploading {path.name}")
                up = upload(http, creds, path)
                up["done_at_s"] = round(time.perf_counter() - start, 2)
                line = applied_line(data_dir / "server.log", up["id"])
                for key in ("stage_seconds", "apply_seconds", "arrays_seconds"):
                    up[key] = line.get(key)
                log(f"{backend}: upload {side}: {up}")
                result[f"upload_{side}"] = up
                if up["status"] != "completed":
                    raise RuntimeError(f"upload {side}: {up}")
            uploads_done = time.perf_counter()
            first_s, got = ask(http, members[0][1], pid, None)
            result["uploads_s"] = round(uploads_done - start, 2)
            result["first_answer_after_uploads_s"] = round(first_s, 3)
            result["upload_to_answer_s"] = round(time.perf_counter() - start, 2)
            result["status"] = got.status_code
            result["count"] = got.json().get("count") if got.status_code == 200 else got.text
            result["count_ok"] = result["count"] == expected
            pids = [server.pid, *children(server.pid)]
            result["server_vmhwm_mb"] = round(peak_rss_mb(server.pid), 1)
            # Peaks added up: an upper bound of what the processes held at once. Parsers that
            # have exited are not counted (the hub keeps its pool of parsers alive).
            result["summed_vmhwm_mb"] = round(sum(peak_rss_mb(p) for p in pids), 1)
            result["processes"] = len(pids)
    finally:
        server.stop()
        if backend == "postgres":
            drop_database(database_url)
        shutil.rmtree(data_dir, ignore_errors=True)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", default="1000000", help="rows per side, comma-separated")
    parser.add_argument("--backends", default="postgres")
    parser.add_argument("--overlap", type=float, default=0.3)
    parser.add_argument("--files", default=str(Path(tempfile.gettempdir()) / "bench-overlap"))
    parser.add_argument("--no-floor", action="store_true")
    args = parser.parse_args()
    results = []
    for rows in (int(r) for r in args.rows.split(",")):
        path_a, path_b, meta = make_files(rows, args.overlap, Path(args.files))
        for backend in args.backends.split(","):
            entry: dict[str, Any] = {"rows": rows, "backend": backend}
            if not args.no_floor:
                log(f"{backend} {rows:,}: floor (parse + HMAC + AES-GCM + indexed write) x2")
                measure = floor_postgres if backend == "postgres" else floor_sqlite
                entry["floor_s"] = round(measure([path_a, path_b]), 2)
                log(f"{backend} {rows:,}: floor {entry['floor_s']} s")
            entry.update(run_hub(backend, [path_a, path_b], meta["expected_analytics"]))
            if "floor_s" in entry:
                entry["uploads_over_floor"] = round(entry["uploads_s"] / entry["floor_s"], 2)
            log(json.dumps(entry))
            results.append(entry)
    for backend in args.backends.split(","):
        mine = {r["rows"]: r for r in results if r["backend"] == backend}
        if len(mine) > 1:
            small, big = min(mine), max(mine)
            growth = mine[big]["upload_to_answer_s"] / mine[small]["upload_to_answer_s"]
            log(f"{backend}: {small:,} → {big:,} growth of the path: {growth:.2f} times")
            mine[big]["growth"] = {"from_rows": small, "x": round(growth, 2)}
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"upload_to_answer-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    return 0 if all(r.get("count_ok") for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
