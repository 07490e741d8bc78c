"""An overlap request over HTTP on two partners with warm arrays ("Matching engine" issue).

Target: "an overlap request over HTTP on two 10M partners with warm arrays answers in under 1 s".

One run:

1. two gzip NDJSON files of N records (one email digest per person, shaped as `hub hash`
   writes them); a share (`--overlap`, default 30 %) of B's keys are A's (the same digests);
   each record carries ``analytics`` with probability 0.8; attributes tier (4 values) and city
   (20 values). The expected overlap (shared people whose records carry ``analytics`` on both
   sides) is computed while generating. Files are cached under ``--files`` (default /tmp).
2. a real `hub serve` on a fresh database, two partners (airline, hotel) with clients
   ``identifiers:write overlap:read``; each file as a bulk upload, polled until completed;
3. a partnership for ``analytics`` (min_audience 50) proposed by the admin, accepted by both;
4. the first overlap request after both uploads completed (before issue 18 item 1 it built
   both partners' arrays from the database; now the uploads' applies have built them, and
   it opens their files), then ``--requests`` warm requests each of: no breakdown,
   ``by=self.tier``, ``by=self.tier,partner.city`` (median, p90, max);
5. the server's peak RSS (VmHWM) after the first request, and the size of
   ``<data_dir>/arrays/``;
6. a consent change (``--changed`` of A's people withdraw ``analytics``) and an erasure (the
   next ``--changed`` of A's people), each timed, each followed by the first overlap request
   after it (before: a build of A's arrays; now: A's arrays patched before the change was
   answered);
7. `hub serve` restarted on the same database and data dir: the first request again (arrays
   read from the files, not the database).

The "upload applied" log line of each upload gives its stage, apply and arrays seconds (the
last is the build of the partner's arrays inside the apply; absent before item 1).

    .venv/bin/python -m bench.overlap_http                      # 1M rows, PostgreSQL
    .venv/bin/python -m bench.overlap_http --rows 10000000 --backend postgres
    .venv/bin/python -m bench.overlap_http --backend sqlite

``--profile DIR`` records py-spy (on PATH or in the venv; speedscope, native frames) of the
server during the cold build and during the warm requests.
Writes bench/results/overlap_http-<time>.json.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import gzip
import hashlib
import json
import multiprocessing
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.auth_layer import free_port  # noqa: E402
from bench.bulk_upload import (  # noqa: E402
    RESULTS,
    VENV_BIN,
    create_database,
    drop_database,
    hub,
    log,
    peak_rss_mb,
)

TIERS = ("blue", "silver", "gold", "platinum")
CITIES = (
    "Paris", "Lyon", "Berlin", "Madrid", "Rome", "Lisbon", "Vienna", "Prague", "Warsaw", "Oslo",
    "Dublin", "Athens", "Milan", "Munich", "Porto", "Seville", "Brussels", "Zurich", "Krakow",
    "Nice",
)  # fmt: skip
SEED = 20261125


# -- the files --------------------------------------------------------------------------------
def _digest(side: str, i: int) -> bytes:
    return base64.b64encode(hashlib.sha256(f"{side}{i}@example.org".encode()).digest())


def _write_side(
    path: Path,
    side: str,
    rows: int,
    analytics: np.ndarray,
    extra: np.ndarray,
    tier: np.ndarray,
    city: np.ndarray,
    shared_from_a: np.ndarray | None,
) -> None:
    """One side's file; B's record j < len(shared_from_a) carries A's key shared_from_a[j]."""
    # consents by (analytics, joint_offers); attributes by (tier, city): prebuilt line tails.
    consents = {
        (True, True): b'["analytics","joint_offers"]',
        (True, False): b'["analytics"]',
        (False, True): b'["joint_offers"]',
        (False, False): b"[]",
    }
    tails = {
        (c, t, ci): b'","consents":'
        + consents[c]
        + b',"attributes":{"tier":"'
        + TIERS[t].encode()
        + b'","city":"'
        + CITIES[ci].encode()
        + b'"}}'
        for c in consents
        for t in range(len(TIERS))
        for ci in range(len(CITIES))
    }
    n_shared = 0 if shared_from_a is None else len(shared_from_a)
    prefix = side.upper().encode()
    partial = path.with_suffix(".part")
    an, ex, ti, ci = analytics.tolist(), extra.tolist(), tier.tolist(), city.tolist()
    shared = [] if shared_from_a is None else shared_from_a.tolist()
    with gzip.open(partial, "wb", compresslevel=1) as out:
        chunk: list[bytes] = []
        for i in range(rows):
            digest = _digest("a", shared[i]) if i < n_shared else _digest(side, i)
            chunk.append(
                b'{"id_type":"email","id_hash":"'
                + digest
                + b'","customer_ref":"'
                + prefix
                + b"%09d" % i
                + tails[((an[i], ex[i]), ti[i], ci[i])]
            )
            if len(chunk) == 20_000:
                out.write(b"\n".join(chunk) + b"\n")
                chunk = []
        if chunk:
            out.write(b"\n".join(chunk) + b"\n")
    partial.replace(path)


def make_files(rows: int, overlap: float, where: Path) -> tuple[Path, Path, dict[str, Any]]:
    """Both sides' files (made once, cached with their expectation) and the expectation."""
    where.mkdir(parents=True, exist_ok=True)
    stem = f"overlap-{rows}-{overlap}"
    paths = where / f"{stem}-a.ndjson.gz", where / f"{stem}-b.ndjson.gz"
    meta_path = where / f"{stem}.json"
    if meta_path.exists() and all(p.exists() for p in paths):
        return *paths, json.loads(meta_path.read_text())
    rng = np.random.default_rng(SEED)
    n_shared = int(rows * overlap)
    shared_from_a = rng.permutation(rows)[:n_shared]  # B's record j < n_shared is A's person
    sides = {}
    for side in ("a", "b"):
        sides[side] = (
            rng.random(rows) < 0.8,  # analytics
            rng.random(rows) < 0.5,  # joint_offers
            rng.integers(0, len(TIERS), rows),
            rng.integers(0, len(CITIES), rows),
        )
    a_an, b_an = sides["a"][0], sides["b"][0]
    both = a_an[shared_from_a] & b_an[:n_shared]
    meta = {
        "rows": rows,
        "overlap": overlap,
        "shared_keys": n_shared,
        "expected_analytics": int(both.sum()),
        "a_analytics": int(a_an.sum()),
        "b_analytics": int(b_an.sum()),
    }
    start = time.perf_counter()
    log(f"writing {paths[0].name} and {paths[1].name} (2 processes)")
    ctx = multiprocessing.get_context("fork")
    procs = [
        ctx.Process(
            target=_write_side,
            args=(paths[i], side, rows, *sides[side], shared_from_a if side == "b" else None),
        )
        for i, side in enumerate(("a", "b"))
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
        if p.exitcode != 0:
            raise RuntimeError("file generation failed")
    log(f"files written in {time.perf_counter() - start:.1f} s")
    meta_path.write_text(json.dumps(meta))
    return *paths, meta


# -- the hub ----------------------------------------------------------------------------------
class Server:
    def __init__(self, env: dict[str, str], port: int, data_dir: Path) -> None:
        self.env, self.port, self.data_dir = env, port, data_dir
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"http://127.0.0.1:{port}"

    def start(self, log_name: str) -> None:
        self.proc = subprocess.Popen(
            [str(VENV_BIN / "hub"), "serve", "--port", str(self.port)],
            env=self.env,
            stdout=(self.data_dir / log_name).open("w"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 120
        with httpx.Client(base_url=self.url, timeout=10) as http:
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if http.get("/health/ready").status_code == 200:
                        return
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError((self.data_dir / log_name).read_text())
                time.sleep(0.1)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


class Creds:
    """A client's credentials; a fresh bearer token every 10 minutes (tokens live 15)."""

    def __init__(self, http: httpx.Client, client_id: str, secret: str) -> None:
        self.http, self.client_id, self.secret = http, client_id, secret
        self.issued: float | None = None
        self._headers: dict[str, str] = {}

    def __call__(self) -> dict[str, str]:
        if self.issued is None or time.monotonic() - self.issued > 600:
            got = self.http.post(
                "/oauth/token",
                data={"grant_type": "client_credentials"},
                auth=(self.client_id, self.secret),
            )
            assert got.status_code == 200, got.text
            self._headers = {"Authorization": f"Bearer {got.json()['access_token']}"}
            self.issued = time.monotonic()
        return self._headers


def upload(http: httpx.Client, creds: Creds, path: Path) -> dict[str, Any]:
    start = time.perf_counter()
    with path.open("rb") as body:
        sent = http.post(
            "/v1/identifiers/uploads",
            content=body,
            headers={
                **creds(),
                "Content-Type": "application/x-ndjson",
                "Content-Encoding": "gzip",
            },
        )
    assert sent.status_code == 202, sent.text
    upload_id = sent.json()["id"]
    while True:
        status = http.get(f"/v1/identifiers/uploads/{upload_id}", headers=creds()).json()
        if status["status"] in ("completed", "failed"):
            break
        time.sleep(0.2)
    return {
        "id": upload_id,
        "status": status["status"],
        "error": status.get("error"),
        "rows": status.get("rows_read"),
        "accepted": status.get("accepted"),
        "refused": status.get("refused"),
        "total_s": round(time.perf_counter() - start, 2),
    }


def ask(http: httpx.Client, creds: Creds, pid: str, by: str | None) -> tuple[float, httpx.Response]:
    params = {"purpose": "analytics", **({"by": by} if by else {})}
    headers = creds()  # issued (when due) outside the timed request
    start = time.perf_counter()
    got = http.get(f"/v1/partnerships/{pid}/overlap", params=params, headers=headers)
    return time.perf_counter() - start, got


def applied_line(log_path: Path, upload_id: str) -> dict[str, Any]:
    """The server's "upload applied" log line (JSON) of one upload: logged just after the
    upload turned completed, so it may take a moment to appear."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for line in log_path.read_text().splitlines():
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if (
                    isinstance(entry, dict)
                    and entry.get("upload_id") == upload_id
                    and (entry.get("event") == "upload applied")
                ):
                    return entry
        time.sleep(0.1)
    return {}


def change_then_ask(
    http: httpx.Client,
    creds: Creds,
    pid: str,
    path: str,
    body: dict[str, Any],
) -> dict[str, Any]:
    """One change of A's records (timed), then the first overlap request after it (timed)."""
    start = time.perf_counter()
    changed = http.post(path, json=body, headers=creds())
    change_s = time.perf_counter() - start
    first_s, got = ask(http, creds, pid, None)
    return {
        "change_status": changed.status_code,
        "change_s": round(change_s, 3),
        "first_after_s": round(first_s, 3),
        "first_after_status": got.status_code,
        "count": got.json().get("count") if got.status_code == 200 else None,
    }


def stats(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
    return {
        "median_ms": round(statistics.median(ordered) * 1000, 1),
        "p90_ms": round(p90 * 1000, 1),
        "max_ms": round(ordered[-1] * 1000, 1),
        "n": len(ordered),
    }


def dir_mb(path: Path) -> float:
    if not path.exists():
        return 0.0
    return round(sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6, 1)


@contextlib.contextmanager
def profiled(pid: int, out: Path | None):  # type: ignore[no-untyped-def]
    if out is None:
        yield
        return
    py_spy = shutil.which("py-spy") or str(VENV_BIN / "py-spy")
    proc = subprocess.Popen(
        [py_spy, "record", "-p", str(pid), "-f", "speedscope", "-o", str(out),
         "--threads", "--native", "-r", "100"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    time.sleep(1.0)
    try:
        yield
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=120)


def run(args: argparse.Namespace) -> dict[str, Any]:
    path_a, path_b, meta = make_files(args.rows, args.overlap, Path(args.files))
    expected = meta["expected_analytics"]
    log(f"expected overlap (analytics on both sides): {expected:,}")
    profile_dir = Path(args.profile) if args.profile else None
    if profile_dir:
        profile_dir.mkdir(parents=True, exist_ok=True)
    data_dir = Path(tempfile.mkdtemp(prefix="bench-overlap-"))
    backend = args.backend
    database_url = create_database() if backend == "postgres" else f"sqlite:///{data_dir}/hub.db"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    env.update(
        HUB_DATABASE_URL=database_url,
        HUB_SERVER_DATA_DIR=str(data_dir),
        HUB_OAUTH_ISSUER=f"http://127.0.0.1:{port}",
        HUB_LOGGING_ACCESS_LOG="false",
    )
    result: dict[str, Any] = {"backend": backend, **meta, "data_dir": str(data_dir)}
    server = Server(env, port, data_dir)
    problems: list[str] = []
    try:
        hub(env, "db", "upgrade")
        admin = json.loads(hub(env, "admin", "bootstrap", "--json"))
        server.start("server.log")
        with httpx.Client(base_url=server.url, timeout=1800) as http:
            admin_h = Creds(http, admin["client_id"], admin["client_secret"])
            members: dict[str, dict[str, Any]] = {}
            for side, category in (("a", "airline"), ("b", "hotel")):
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
                )
                assert client.status_code == 201, client.text
                c = client.json()
                members[side] = {
                    "id": partner.json()["id"],
                    "creds": Creds(http, c["client_id"], c["client_secret"]),
                    "client": c,
                }
            for side, path in (("a", path_a), ("b", path_b)):
                log(f"{backend}: uploading {path.name}")
                up = upload(http, members[side]["creds"], path)
                line = applied_line(data_dir / "server.log", up["id"])
                for key in ("stage_seconds", "apply_seconds", "arrays_seconds"):
                    up[key] = line.get(key)
                log(f"{backend}: upload {side}: {up}")
                result[f"upload_{side}"] = up
                if up["status"] != "completed":
                    raise RuntimeError(f"upload {side} {up}")
            made = http.post(
                "/v1/partnerships",
                json={
                    "members": [members["a"]["id"], members["b"]["id"]],
                    "purposes": ["analytics"],
                    "min_audience": 50,
                },
                headers=admin_h(),
            )
            assert made.status_code == 201, made.text
            pid = made.json()["id"]
            for side in ("a", "b"):
                got = http.post(f"/v1/partnerships/{pid}/accept", headers=members[side]["creds"]())
                assert got.status_code in (200, 201), got.text
            asker = members["a"]["creds"]
            log(f"{backend}: first overlap request after the uploads completed")
            with profiled(server.pid, profile_dir / f"{backend}-{args.rows}-cold.json"
                          if profile_dir else None):  # fmt: skip
                cold_s, cold = ask(http, asker, pid, None)
            if cold.status_code != 200:
                problems.append(f"cold: {cold.status_code} {cold.text[:300]}")
            body = cold.json()
            result["cold_s"] = round(cold_s, 3)
            result["count"] = body.get("count")
            result["count_ok"] = body.get("count") == expected
            if not result["count_ok"]:
                problems.append(f"count {body.get('count')} != expected {expected}")
            result["server_peak_rss_mb_after_cold"] = round(peak_rss_mb(server.pid), 1)
            result["arrays_mb"] = dir_mb(data_dir / "arrays")
            log(f"{backend}: cold {cold_s:.2f} s, count {body.get('count')}, "
                f"peak RSS {result['server_peak_rss_mb_after_cold']} MB, "
                f"arrays {result['arrays_mb']} MB")  # fmt: skip
            warm: dict[str, Any] = {}
            with profiled(server.pid, profile_dir / f"{backend}-{args.rows}-warm.json"
                          if profile_dir else None):  # fmt: skip
                for by in (None, "self.tier", "self.tier,partner.city"):
                    times, statuses = [], []
                    for _ in range(args.requests):
                        t, got = ask(http, asker, pid, by)
                        times.append(t)
                        statuses.append(got.status_code)
                        if got.status_code != 200:
                            problems.append(f"warm by={by}: {got.status_code} {got.text[:300]}")
                    key = by or "total"
                    warm[key] = {**stats(times), "non_200": sum(s != 200 for s in statuses)}
                    if by and got.status_code == 200:
                        cells = got.json().get("breakdown") or []
                        warm[key]["cells"] = len(cells)
                        warm[key]["suppressed_cells"] = sum(c["suppressed"] for c in cells)
                    log(f"{backend}: warm by={by}: {warm[key]}")
            result["warm"] = warm
            result["server_peak_rss_mb_after_warm"] = round(peak_rss_mb(server.pid), 1)
            n = args.changed
            withdrawn = [
                {"customer_ref": f"A{i:09d}", "consents": ["joint_offers"]} for i in range(n)
            ]
            erased = [f"A{i:09d}" for i in range(n, 2 * n)]
            for name, path, body in (
                ("consent_change", "/v1/identifiers/consents", {"updates": withdrawn}),
                ("erasure", "/v1/identifiers/erase", {"customer_refs": erased}),
            ):
                result[name] = change_then_ask(http, asker, pid, path, body)
                log(f"{backend}: {name}: {result[name]}")
                if result[name]["first_after_status"] != 200:
                    problems.append(f"after {name}: {result[name]}")
        server.stop()
        log(f"{backend}: restarting hub serve on the same database and data dir")
        server.start("server2.log")
        with httpx.Client(base_url=server.url, timeout=1800) as http:
            c = members["a"]["client"]
            asker = Creds(http, c["client_id"], c["client_secret"])
            restart_s, got = ask(http, asker, pid, None)
            if got.status_code != 200:
                problems.append(f"after restart: {got.status_code} {got.text[:300]}")
            result["after_restart_first_s"] = round(restart_s, 3)
            # The changes above moved the count: the answer after the restart is the last one.
            result["after_restart_count_ok"] = got.json().get("count") == result["erasure"]["count"]
            times = [ask(http, asker, pid, None)[0] for _ in range(5)]
            result["after_restart_warm"] = stats(times)
            result["server_peak_rss_mb_after_restart"] = round(peak_rss_mb(server.pid), 1)
            log(f"{backend}: after restart first {restart_s:.3f} s")
    finally:
        server.stop()
        result["problems"] = problems
        logs = ""
        for name in ("server.log", "server2.log"):
            with contextlib.suppress(OSError):
                logs += (data_dir / name).read_text()
        result["server_errors"] = [
            line[:4000] for line in logs.splitlines() if "Traceback" in line or " 500 " in line
        ][:20]
        if backend == "postgres":
            drop_database(database_url)
        if not args.keep:
            shutil.rmtree(data_dir, ignore_errors=True)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--overlap", type=float, default=0.3)
    parser.add_argument("--backend", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--changed", type=int, default=1000, help="people per change")
    parser.add_argument("--files", default=str(Path(tempfile.gettempdir()) / "bench-overlap"))
    parser.add_argument("--profile", default=None, help="py-spy speedscope files into DIR")
    parser.add_argument("--keep", action="store_true", help="keep the hub's data dir")
    args = parser.parse_args()
    result = run(args)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"overlap_http-{args.backend}-{args.rows}-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0 if not result["problems"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
