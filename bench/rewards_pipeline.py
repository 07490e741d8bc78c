"""Coalition rewards pipeline benchmark (issue "Coalition rewards").

"1M reward events through the API, then sync and settlement, on PostgreSQL: sync under 60 s,
settlement under 10 s; events per second for each stage, and a crash-injection run (50 kills)
with its outcome."

One run, on a fresh PostgreSQL database:

1. a real ``hub serve --no-worker`` (jobs run only in the ``hub worker`` processes this script
   starts), an admin, two partners (airline, hotel) with clients
   ``identifiers:write rewards:write rewards:read``, a ``rewards_sharing`` partnership accepted
   by both; the hotel gets a loopback ``webhook_url`` and a signing secret, so rewards_sync
   also queues webhook deliveries (nothing listens: they only queue);
2. ``--members`` people enrolled at both brands (same email digests, different customer_refs,
   consent ``rewards_sharing``) by one gzip NDJSON bulk upload per brand;
3. **events**: ``--events`` events through ``POST /v1/rewards/events``, 1,000 per request, from
   ``--threads`` client threads: 90 % earns of 10 points at the airline (earn j is member
   j mod M), 10 % redeems of 5 points at the hotel (redeem k is member k mod M and is sent only
   after the request holding earn k has been answered, so it never exceeds the balance);
4. **sync**: a ``hub worker`` (every schedule pushed a day away), ``POST
   /v1/jobs/rewards_sync/run``, timed from the request to the run's ``finished_at``;
5. **settlement**: redeems are dated when the hub recorded them (now) and settlement closes
   complete periods only, so the script moves every ``reward_lot_uses.at`` into the previous
   month by SQL, then ``POST /v1/jobs/settlement/run``, timed the same way; the statement's
   airline -> hotel line must equal the points redeemed;
6. **crash injection**: ``--crash-events`` more events, then ``hub worker`` processes with
   ``HUB_JOBS_REWARDS_SYNC_SECONDS=0.5``, ``HUB_JOBS_LEASE_SECONDS=3``,
   ``HUB_REWARDS_SYNC_BATCH=500``, each SIGKILLed (``--kills`` times) a random 0-0.5 s after
   the feed grew, then a last worker finishes; the outcome is checked in the database.

    .venv/bin/python -m bench.rewards_pipeline --events 20000 --members 5000 --kills 5
    .venv/bin/python -m bench.rewards_pipeline                # 1M events, 100k members, 50 kills

Writes bench/results/rewards_pipeline-<events>-<time>.json; exit code 1 when a target is
missed or a check fails.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import gzip
import hashlib
import itertools
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.auth_layer import free_port  # noqa: E402
from bench.bulk_upload import (  # noqa: E402
    RESULTS,
    VENV_BIN,
    children,
    create_database,
    drop_database,
    hub,
    log,
    peak_rss_mb,
)
from bench.overlap_http import upload  # noqa: E402

PER_REQUEST = 1000
EARN_POINTS, REDEEM_POINTS = 10, 5
SYNC_TARGET_S, SETTLEMENT_TARGET_S = 60.0, 10.0
NEVER = "0 0 1 1 *"  # crons of the jobs this benchmark does not want fired on their own
QUIET_JOBS = {
    "HUB_JOBS_REWARDS_SYNC_SECONDS": "86400",
    "HUB_JOBS_WEBHOOK_REDELIVERY_SECONDS": "86400",
    "HUB_JOBS_SETTLEMENT_CRON": NEVER,
    "HUB_JOBS_POINTS_EXPIRY_CRON": NEVER,
    "HUB_JOBS_RETENTION_PURGE_CRON": NEVER,
    "HUB_JOBS_MATCH_KEY_ROTATION_CRON": NEVER,
}


def digest(i: int) -> str:
    return base64.b64encode(hashlib.sha256(f"rw{i}@example.org".encode()).digest()).decode()


# -- the hub processes ------------------------------------------------------------------------
class Proc:
    """A `hub serve --no-worker` or `hub worker` process, logging to a file."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self.proc = subprocess.Popen(
            [str(VENV_BIN / "hub"), *args],
            env=env,
            stdout=log_path.open("ab"),
            stderr=subprocess.STDOUT,
        )
        self.peak_mb = 0.0

    @property
    def pid(self) -> int:
        return self.proc.pid

    def note_rss(self) -> float:
        with contextlib.suppress(OSError):
            self.peak_mb = max(self.peak_mb, peak_rss_mb(self.pid))
        return self.peak_mb

    def wait_log(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log_path.read_text(errors="replace"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{text!r} not seen: {self.log_path.read_text()[-3000:]}")
            time.sleep(0.05)

    def kill(self) -> None:
        self.note_rss()
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self, timeout: float = 60) -> None:
        if self.proc.poll() is not None:
            return
        self.note_rss()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Creds:
    """A client's bearer token, renewed every 10 minutes (tokens live 15); thread-safe."""

    def __init__(self, url: str, client_id: str, secret: str) -> None:
        self.url, self.client_id, self.secret = url, client_id, secret
        self.issued: float | None = None
        self.lock = threading.Lock()
        self._headers: dict[str, str] = {}

    def __call__(self) -> dict[str, str]:
        with self.lock:
            if self.issued is None or time.monotonic() - self.issued > 600:
                got = httpx.post(
                    f"{self.url}/oauth/token",
                    data={"grant_type": "client_credentials"},
                    auth=(self.client_id, self.secret),
                    timeout=60,
                )
                assert got.status_code == 200, got.text
                self._headers = {"Authorization": f"Bearer {got.json()['access_token']}"}
                self.issued = time.monotonic()
            return dict(self._headers)


def ok(got: httpx.Response, *codes: int) -> Any:
    if got.status_code not in (codes or (200, 201)):
        raise RuntimeError(f"{got.request.method} {got.request.url}: {got.status_code} {got.text}")
    return got.json() if got.content else None


# -- members ----------------------------------------------------------------------------------
def member_file(where: Path, side: str, members: int) -> Path:
    path = where / f"rewards-members-{side}-{members}.ndjson.gz"
    if path.exists():
        return path
    prefix = side.upper()
    with gzip.open(path.with_suffix(".part"), "wb", compresslevel=1) as out:
        chunk = []
        for i in range(members):
            chunk.append(
                f'{{"id_type":"email","id_hash":"{digest(i)}","customer_ref":"{prefix}{i:09d}",'
                f'"consents":["rewards_sharing"]}}'
            )
            if len(chunk) == 20_000:
                out.write(("\n".join(chunk) + "\n").encode())
                chunk = []
        if chunk:
            out.write(("\n".join(chunk) + "\n").encode())
    path.with_suffix(".part").replace(path)
    return path


# -- events -----------------------------------------------------------------------------------
class Plan:
    """The requests of one batch of events, in sending order, each with the earn requests it
    must wait for (a redeem k waits for the request holding earn k: member k mod M's
    (k div M + 1)-th earn, so a member never redeems more than it earned)."""

    def __init__(self, tag: str, events: int, members: int, digests: list[str]) -> None:
        self.redeems = events // 10
        self.earns = events - self.redeems
        base = datetime(2026, 1, 1, tzinfo=UTC)
        stamps = [
            (base + timedelta(hours=r)).isoformat().replace("+00:00", "Z")
            for r in range(self.earns // members + 2)
        ]

        def earn(j: int) -> str:
            return (
                f'{{"event_id":"{tag}e{j}","id_type":"email","id_hash":"{digests[j % members]}",'
                f'"kind":"earn","points":{EARN_POINTS},"occurred_at":"{stamps[j // members]}"}}'
            )

        def redeem(k: int) -> str:
            return (
                f'{{"event_id":"{tag}r{k}","id_type":"email","id_hash":"{digests[k % members]}",'
                f'"kind":"redeem","points":{REDEEM_POINTS},'
                f'"occurred_at":"{stamps[k // members]}"}}'
            )

        def body(items: list[str]) -> bytes:
            return ('{"events":[' + ",".join(items) + "]}").encode()

        earn_reqs = [
            ("airline", body([earn(j) for j in range(s, min(s + PER_REQUEST, self.earns))]))
            for s in range(0, self.earns, PER_REQUEST)
        ]
        redeem_ranges = [
            (s, min(s + PER_REQUEST, self.redeems)) for s in range(0, self.redeems, PER_REQUEST)
        ]
        # Interleave: redeem request i after earn request ~ (i + 1) * earns / redeems.
        self.requests: list[tuple[str, bytes, list[int]]] = []
        earn_pos: dict[int, int] = {}  # earn request index -> position in self.requests
        ri = 0
        ratio = len(earn_reqs) / max(1, len(redeem_ranges))
        for ei, (side, b) in enumerate(earn_reqs):
            earn_pos[ei] = len(self.requests)
            self.requests.append((side, b, []))
            while ri < len(redeem_ranges) and (ri + 1) * ratio <= ei + 1:
                ri = self._add_redeem(redeem_ranges[ri], ri, redeem, body, earn_pos)
        while ri < len(redeem_ranges):
            ri = self._add_redeem(redeem_ranges[ri], ri, redeem, body, earn_pos)

    def _add_redeem(self, rng, ri, redeem, body, earn_pos) -> int:  # type: ignore[no-untyped-def]
        lo, hi = rng
        deps = sorted({earn_pos[k // PER_REQUEST] for k in range(lo, hi)})
        self.requests.append(("hotel", body([redeem(k) for k in range(lo, hi)]), deps))
        return ri + 1


def send_events(url: str, creds: dict[str, Creds], plan: Plan, threads: int) -> dict[str, Any]:
    n = len(plan.requests)
    done = [threading.Event() for _ in range(n)]
    counter = itertools.count()
    lock = threading.Lock()
    lat: dict[str, list[float]] = {"airline": [], "hotel": []}
    outcome = {"applied": 0, "non_200": 0, "retries": 0, "errors": []}

    def work() -> None:
        with httpx.Client(base_url=url, timeout=600) as http:
            while True:
                with lock:
                    i = next(counter)
                if i >= n:
                    return
                side, body, deps = plan.requests[i]
                for d in deps:
                    done[d].wait()
                for attempt in range(20):
                    headers = {**creds[side](), "Content-Type": "application/json"}
                    t = time.perf_counter()
                    got = http.post("/v1/rewards/events", content=body, headers=headers)
                    elapsed = time.perf_counter() - t
                    if got.status_code in (429, 503) and attempt < 19:
                        with lock:
                            outcome["retries"] += 1
                        time.sleep(float(got.headers.get("Retry-After", "1")))
                        continue
                    break
                with lock:
                    lat[side].append(elapsed)
                    if got.status_code == 200:
                        outcome["applied"] += got.json()["applied"]
                    else:
                        outcome["non_200"] += 1
                        if len(outcome["errors"]) < 5:
                            outcome["errors"].append(f"{got.status_code} {got.text[:300]}")
                done[i].set()

    start = time.perf_counter()
    pool = [threading.Thread(target=work) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    wall = time.perf_counter() - start
    events = plan.earns + plan.redeems
    return {
        "events": events,
        "earns": plan.earns,
        "redeems": plan.redeems,
        "requests": n,
        "threads": threads,
        "wall_s": round(wall, 2),
        "events_per_s": round(events / wall),
        **outcome,
        "latency_ms": {
            side: {
                "median": round(statistics.median(v) * 1000, 1),
                "p90": round(sorted(v)[max(0, -(-9 * len(v) // 10) - 1)] * 1000, 1),
                "max": round(max(v) * 1000, 1),
                "n": len(v),
            }
            for side, v in lat.items()
            if v
        },
    }


# -- jobs -------------------------------------------------------------------------------------
def run_job(
    http: httpx.Client,
    admin: Creds,
    name: str,
    timeout: float = 1800,
    on_timeout: Any = None,
) -> dict[str, Any]:
    """Ask for a run and wait for it; times from the request to the run's finished_at.
    After ``timeout`` s, ``on_timeout()`` (if given) and wait for the run to be recorded."""
    before = ok(http.get(f"/v1/jobs/{name}/runs", params={"limit": 1}, headers=admin()))
    last_id = before["items"][0]["id"] if before["items"] else 0
    asked = datetime.now(UTC)
    t0 = time.perf_counter()
    ok(http.post(f"/v1/jobs/{name}/run", headers=admin()), 202)
    deadline = time.monotonic() + timeout
    while True:
        runs = ok(http.get(f"/v1/jobs/{name}/runs", params={"limit": 5}, headers=admin()))
        new = [r for r in runs["items"] if r["id"] > last_id and r["status"] != "running"]
        if new:
            run = min(new, key=lambda r: r["id"])
            break
        if time.monotonic() > deadline:
            if on_timeout is None:
                raise RuntimeError(f"{name}: no finished run after {timeout} s")
            on_timeout()  # e.g. stop the worker: the run is recorded abandoned
            deadline = time.monotonic() + 120
            on_timeout = None
        time.sleep(0.05)
    polled = time.perf_counter() - t0
    finished = datetime.fromisoformat(run["finished_at"])
    started = datetime.fromisoformat(run["started_at"])
    return {
        "run_id": run["id"],
        "status": run["status"],
        "error": run["error"],
        "counts": run["counts"],
        "request_to_finished_s": round((finished - asked).total_seconds(), 2),
        "run_started_to_finished_s": round((finished - started).total_seconds(), 2),
        "client_polled_s": round(polled, 2),
    }


# -- the database checks ----------------------------------------------------------------------
def q(db: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(db, autocommit=True) as conn:
        return conn.execute(sql, params).fetchall()


def q1(db: str, sql: str, *params: Any) -> Any:
    return q(db, sql, *params)[0][0]


def checks(db: str, ids: dict[str, str], expect: dict[str, int]) -> dict[str, Any]:
    feed = dict(q(db, "SELECT partner_id::text, count(*) FROM reward_feed GROUP BY 1"))
    dupes = q1(
        db,
        "SELECT count(*) FROM (SELECT partner_id, event_ref, count(*) FROM reward_feed "
        "GROUP BY 1, 2 HAVING count(*) > 1) d",
    )
    # Every hotel feed item in exactly one webhook delivery (the airline has no webhook_url).
    webhook = q(
        db,
        """
        WITH ids AS (
            SELECT (jsonb_array_elements(payload::jsonb -> 'items') ->> 'id')::bigint AS id
            FROM webhook_deliveries WHERE partner_id = %s
        ), per AS (SELECT id, count(*) AS n FROM ids GROUP BY id)
        SELECT
            (SELECT count(*) FROM ids),
            (SELECT count(*) FROM per WHERE n > 1),
            (SELECT count(*) FROM reward_feed f WHERE f.partner_id = %s
                AND NOT EXISTS (SELECT 1 FROM per WHERE per.id = f.seq)),
            (SELECT count(*) FROM per WHERE NOT EXISTS
                (SELECT 1 FROM reward_feed f WHERE f.seq = per.id AND f.partner_id = %s)),
            (SELECT count(*) FROM webhook_deliveries),
            (SELECT count(*) FROM webhook_deliveries WHERE partner_id <> %s)
        """,
        ids["hotel"],
        ids["hotel"],
        ids["hotel"],
        ids["hotel"],
    )[0]
    runs = dict(
        q(db, "SELECT status, count(*) FROM job_runs WHERE name = 'rewards_sync' GROUP BY 1")
    )
    ledger_sum = q1(db, "SELECT coalesce(sum(amount), 0) FROM reward_postings")
    unbalanced = q1(
        db,
        "SELECT count(*) FROM (SELECT txn FROM reward_postings GROUP BY txn "
        "HAVING sum(amount) <> 0) t",
    )
    negative_lots = q1(db, "SELECT count(*) FROM reward_lots WHERE remaining < 0")
    max_event = q1(db, "SELECT coalesce(max(id), 0) FROM reward_events")
    cursor = q1(
        db,
        "SELECT cursor FROM job_runs WHERE name = 'rewards_sync' ORDER BY id DESC LIMIT 1",
    )
    out = {
        "feed_hotel": feed.get(ids["hotel"], 0),
        "feed_airline": feed.get(ids["airline"], 0),
        "feed_expected_hotel": expect["hotel"],
        "feed_expected_airline": expect["airline"],
        "duplicate_feed_keys": dupes,
        "webhook_items": webhook[0],
        "webhook_items_in_several_deliveries": webhook[1],
        "hotel_feed_items_in_no_delivery": webhook[2],
        "webhook_items_not_in_hotel_feed": webhook[3],
        "webhook_deliveries": webhook[4],
        "webhook_deliveries_other_partners": webhook[5],
        "sync_runs": runs,
        "ledger_sum": int(ledger_sum),
        "unbalanced_txns": unbalanced,
        "negative_lots": negative_lots,
        "max_event_id": max_event,
        "sync_cursor": cursor,
    }
    out["ok"] = (
        out["feed_hotel"] == expect["hotel"]
        and out["feed_airline"] == expect["airline"]
        and dupes == 0
        and webhook[1] == 0
        and webhook[2] == 0
        and webhook[3] == 0
        and webhook[0] == expect["hotel"]
        and ledger_sum == 0
        and unbalanced == 0
        and negative_lots == 0
    )
    return out


# -- the run ----------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> dict[str, Any]:
    files = Path(args.files)
    files.mkdir(parents=True, exist_ok=True)
    data_dir = Path(tempfile.mkdtemp(prefix="bench-rewards-"))
    db = create_database()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    env.update(
        HUB_DATABASE_URL=db,
        HUB_SERVER_DATA_DIR=str(data_dir),
        HUB_OAUTH_ISSUER=url,
        HUB_LOGGING_ACCESS_LOG="false",
        HUB_LIMITS_REQUESTS_PER_MINUTE="100000000",
        HUB_LIMITS_BURST="100000000",
        HUB_WEBHOOKS_ALLOW_LOOPBACK_HTTP="true",
    )
    result: dict[str, Any] = {
        "events": args.events,
        "members": args.members,
        "crash_events": args.crash_events,
        "kills": args.kills,
        "data_dir": str(data_dir),
        "problems": [],
    }
    problems: list[str] = result["problems"]
    server: Proc | None = None
    workers: list[Proc] = []
    worker_peak = 0.0
    try:
        hub(env, "db", "upgrade")
        admin_c = json.loads(hub(env, "admin", "bootstrap", "--json"))
        server = Proc(["serve", "--port", str(port), "--no-worker"], env, data_dir / "serve.log")
        deadline = time.monotonic() + 120
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health/ready", timeout=5).status_code == 200:
                    break
            if time.monotonic() > deadline or server.proc.poll() is not None:
                raise RuntimeError((data_dir / "serve.log").read_text()[-3000:])
            time.sleep(0.1)
        admin = Creds(url, admin_c["client_id"], admin_c["client_secret"])
        http = httpx.Client(base_url=url, timeout=1800)
        ids: dict[str, str] = {}
        creds: dict[str, Creds] = {}
        for side in ("airline", "hotel"):
            p = ok(http.post("/v1/partners", json={"name": f"bench-{side}", "category": side},
                             headers=admin()))  # fmt: skip
            ids[side] = p["id"]
            c = ok(
                http.post(
                    f"/v1/partners/{p['id']}/clients",
                    json={
                        "name": "bench",
                        "scopes": ["identifiers:write", "rewards:write", "rewards:read"],
                    },
                    headers=admin(),
                )
            )
            creds[side] = Creds(url, c["client_id"], c["client_secret"])
        ship = ok(
            http.post(
                "/v1/partnerships",
                json={"members": [ids["airline"], ids["hotel"]], "purposes": ["rewards_sharing"]},
                headers=admin(),
            )
        )
        for side in ("airline", "hotel"):
            ok(http.post(f"/v1/partnerships/{ship['id']}/accept", headers=creds[side]()))
        hook_port = free_port()  # nothing listens there: deliveries only queue
        ok(
            http.patch(
                f"/v1/partners/{ids['hotel']}",
                json={"webhook_url": f"http://127.0.0.1:{hook_port}/hook"},
                headers=admin(),
            )
        )
        ok(http.post(f"/v1/partners/{ids['hotel']}/webhook-secret", headers=admin()), 201)

        # -- members
        for side in ("airline", "hotel"):
            path = member_file(files, side[0], args.members)
            up = upload(http, creds[side], path)
            log(f"members {side}: {up}")
            result[f"members_upload_{side}"] = up
            if up["status"] != "completed" or up["accepted"] != args.members:
                raise RuntimeError(f"member upload {side}: {up}")
        digests = [digest(i) for i in range(args.members)]

        # -- stage 1: events
        plan = Plan("a", args.events, args.members, digests)
        log(f"events: {len(plan.requests)} requests ({plan.earns:,} earns, "
            f"{plan.redeems:,} redeems), {args.threads} threads")  # fmt: skip
        ev = send_events(url, creds, plan, args.threads)
        del plan
        server.note_rss()
        ev["server_peak_rss_mb"] = round(server.peak_mb, 1)
        log(f"events: {json.dumps(ev)}")
        result["events_stage"] = ev
        if ev["non_200"] or ev["applied"] != args.events:
            problems.append(f"events: {ev['non_200']} non-200, {ev['applied']} applied")
        result["row_counts_after_events"] = dict(
            q(
                db,
                "SELECT 'reward_events', count(*) FROM reward_events UNION ALL "
                "SELECT 'reward_lots', count(*) FROM reward_lots UNION ALL "
                "SELECT 'reward_lot_uses', count(*) FROM reward_lot_uses UNION ALL "
                "SELECT 'reward_postings', count(*) FROM reward_postings UNION ALL "
                "SELECT 'reward_members', count(*) FROM reward_members",
            )
        )

        # -- stage 2: sync
        quiet_env = {**env, **QUIET_JOBS}
        worker = Proc(["worker"], quiet_env, data_dir / "worker-stages.log")
        workers.append(worker)
        worker.wait_log("scheduler started")
        log("sync: POST /v1/jobs/rewards_sync/run")
        sync = run_job(http, admin, "rewards_sync", args.sync_timeout, worker.stop)
        sync["events_per_s"] = round(
            sync["counts"].get("events", 0) / max(sync["run_started_to_finished_s"], 1e-3)
        )
        sync["feed_items"] = q1(db, "SELECT count(*) FROM reward_feed")
        sync["feed_items_expected"] = args.events
        sync["webhook_deliveries"] = q1(db, "SELECT count(*) FROM webhook_deliveries")
        sync["webhook_items"] = q1(
            db, "SELECT coalesce(sum(item_count), 0) FROM webhook_deliveries"
        )
        sync["target_s"] = SYNC_TARGET_S
        sync["pass"] = (
            sync["status"] == "succeeded" and sync["request_to_finished_s"] < SYNC_TARGET_S
        )
        worker.note_rss()
        sync["worker_peak_rss_mb"] = round(worker.peak_mb, 1)
        log(f"sync: {json.dumps(sync)}")
        result["sync_stage"] = sync
        if sync["feed_items"] != args.events:
            problems.append(f"sync wrote {sync['feed_items']} feed items, expected {args.events}")
        if sync["status"] != "succeeded":
            # Stopped at --sync-timeout: the crash stage needs a complete feed to check, so it
            # is skipped.
            sync["projected_s"] = round(args.events / max(sync["events_per_s"], 1))
            problems.append(f"sync did not finish within --sync-timeout {args.sync_timeout} s")
            args.kills = args.crash_events = 0
        if worker.proc.poll() is not None:  # stopped at --sync-timeout: settlement gets its own
            worker_peak = max(worker_peak, worker.peak_mb)
            worker = Proc(["worker"], quiet_env, data_dir / "worker-settlement.log")
            workers.append(worker)
            worker.wait_log("scheduler started")

        # -- stage 3: settlement
        now = datetime.now(UTC)
        prev_start = (now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
                      - timedelta(days=1)).replace(day=1)  # fmt: skip
        moved_to = prev_start + timedelta(days=14, hours=12)
        moved = q1(
            db,
            "WITH u AS (UPDATE reward_lot_uses SET at = %s RETURNING 1) SELECT count(*) FROM u",
            moved_to,
        )
        redeemed = q1(
            db, "SELECT coalesce(sum(points), 0) FROM reward_lot_uses WHERE kind = 'redeem'"
        )
        log(f"settlement: {moved} lot uses moved to {moved_to.isoformat()}; "
            "POST /v1/jobs/settlement/run")  # fmt: skip
        st = run_job(http, admin, "settlement")
        st["lot_uses"] = moved
        st["lot_uses_per_s"] = round(moved / max(st["request_to_finished_s"], 1e-3))
        statements = ok(http.get("/v1/rewards/settlements", headers=admin()))
        items = statements.get("items", statements)
        st["statements"] = items
        lines = [line for s in items for line in s.get("lines", [])]
        owed = sum(
            line["points"] for line in lines
            if line["from_partner_id"] == ids["airline"] and line["to_partner_id"] == ids["hotel"]
        )  # fmt: skip
        st["airline_to_hotel_points"] = owed
        st["redeemed_points"] = int(redeemed)
        st["statement_ok"] = owed == redeemed == plan_redeem_points(args.events)
        st["target_s"] = SETTLEMENT_TARGET_S
        st["pass"] = (
            st["status"] == "succeeded" and st["request_to_finished_s"] < SETTLEMENT_TARGET_S
        )
        log(f"settlement: {json.dumps(st, default=str)}")
        result["settlement_stage"] = st
        if not st["statement_ok"]:
            problems.append(f"settlement: airline->hotel {owed} points, redeemed {redeemed}")
        worker.stop()
        worker_peak = max(worker_peak, worker.peak_mb)

        # -- stage 4: crash injection
        if not args.crash_events:
            return result
        crash = Plan("c", args.crash_events, args.members, digests)
        log(f"crash: sending {args.crash_events:,} more events")
        cev = send_events(url, creds, crash, args.threads)
        del crash
        result["crash_events_stage"] = cev
        if cev["non_200"] or cev["applied"] != args.crash_events:
            problems.append(f"crash events: {cev['non_200']} non-200, {cev['applied']} applied")
        total_redeems = args.events // 10 + args.crash_events // 10
        expect = {
            "hotel": args.events + args.crash_events - total_redeems,
            "airline": total_redeems,
        }
        expected_total = expect["hotel"] + expect["airline"]
        crash_env = {
            **env,
            **QUIET_JOBS,
            "HUB_JOBS_REWARDS_SYNC_SECONDS": "0.5",
            "HUB_JOBS_LEASE_SECONDS": "3",
            "HUB_REWARDS_SYNC_BATCH": "500",
        }
        rng = random.Random(args.seed)
        kills = []
        feed_sql = "SELECT count(*) FROM reward_feed"
        t_crash = time.perf_counter()
        for i in range(args.kills):
            base = q1(db, feed_sql)
            if base >= expected_total:
                log(f"crash: feed complete before kill {i + 1}")
                break
            w = Proc(["worker"], crash_env, data_dir / "worker-crash.log")
            workers.append(w)
            t_start = time.perf_counter()
            deadline = time.monotonic() + 60
            grew = False
            while time.monotonic() < deadline and w.proc.poll() is None:
                if q1(db, feed_sql) > base:
                    grew = True
                    break
                time.sleep(0.02)
            delay = rng.uniform(0, 0.5)
            time.sleep(delay)
            w.kill()
            worker_peak = max(worker_peak, w.peak_mb)
            after = q1(db, feed_sql)
            kills.append(
                {
                    "n": i + 1,
                    "grew": grew,
                    "to_growth_s": round(time.perf_counter() - t_start - delay, 2),
                    "delay_s": round(delay, 3),
                    "feed_before": base,
                    "feed_at_kill": after,
                }
            )
            log(f"crash: kill {i + 1}/{args.kills} after +{delay:.2f}s, feed {base} -> {after}")
            if not grew:
                problems.append(f"crash kill {i + 1}: the feed did not grow within 60 s")
        log("crash: final worker")
        final = Proc(["worker"], crash_env, data_dir / "worker-crash.log")
        workers.append(final)
        t_final = time.perf_counter()
        deadline = time.monotonic() + 1800
        max_event = q1(db, "SELECT max(id) FROM reward_events")
        while time.monotonic() < deadline:
            row = q(
                db,
                "SELECT status, cursor FROM job_runs WHERE name = 'rewards_sync' "
                "ORDER BY id DESC LIMIT 1",
            )
            cur = row[0][1] or {}
            if row[0][0] == "succeeded" and int(cur.get("event", 0)) >= max_event:
                break
            time.sleep(0.2)
        final_s = time.perf_counter() - t_final
        final.stop()
        worker_peak = max(worker_peak, final.peak_mb)
        outcome = checks(db, ids, expect)
        outcome.update(
            kills_done=len(kills),
            kills_mid_run=sum(1 for k in kills if k["grew"]),
            crash_phase_s=round(time.perf_counter() - t_crash, 1),
            final_worker_s=round(final_s, 1),
            feed_items_expected=expected_total,
            feed_items_written=outcome["feed_hotel"] + outcome["feed_airline"],
            abandoned_runs=outcome["sync_runs"].get("abandoned", 0),
            kill_log=kills,
        )
        log(f"crash outcome: {json.dumps({k: v for k, v in outcome.items() if k != 'kill_log'})}")
        result["crash_stage"] = outcome
        if not outcome["ok"]:
            problems.append("crash outcome checks failed")
        server.note_rss()
        result["server_peak_rss_mb"] = round(server.peak_mb, 1)
        result["server_with_children_peak_rss_mb"] = round(
            sum(peak_rss_mb(p) for p in [server.pid, *children(server.pid)]), 1
        )
        result["worker_peak_rss_mb"] = round(worker_peak, 1)
        http.close()
    finally:
        if server is not None and server.proc.poll() is None:
            server.note_rss()
            result["server_peak_rss_mb"] = round(server.peak_mb, 1)
        for w in workers:
            w.stop(timeout=20)
            worker_peak = max(worker_peak, w.peak_mb)
        result["worker_peak_rss_mb"] = round(worker_peak, 1)
        if server is not None:
            server.stop()
        logs = ""
        for f in sorted(data_dir.glob("*.log")):
            logs += f.read_text(errors="replace")
        result["log_errors"] = [
            line[:400]
            for line in logs.splitlines()
            if '"level": "error"' in line or '"level":"error"' in line or "Traceback" in line
        ][:20]
        if not args.keep:
            drop_database(db)
        else:
            result["database_url"] = db
    return result


def plan_redeem_points(events: int) -> int:
    return (events // 10) * REDEEM_POINTS


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--members", type=int, default=100_000)
    parser.add_argument("--crash-events", type=int, default=200_000)
    parser.add_argument("--kills", type=int, default=50)
    parser.add_argument(
        "--sync-timeout",
        type=float,
        default=1800,
        help="stop the sync stage's worker after this many seconds (then skip the crash stage)",
    )
    parser.add_argument("--threads", type=int, default=3)
    parser.add_argument("--seed", type=int, default=20261125)
    parser.add_argument("--files", default=str(Path(tempfile.gettempdir()) / "bench-rewards"))
    parser.add_argument("--keep", action="store_true", help="keep the database")
    args = parser.parse_args()
    if args.events // 10 > (args.events - args.events // 10):
        parser.error("more redeems than earns")
    result = run(args)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"rewards_pipeline-{args.events}-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=2, default=str))
    print(json.dumps({k: v for k, v in result.items()}, indent=2, default=str)[:20000])
    log(f"written {out}")
    passed = (
        not result["problems"]
        and result.get("sync_stage", {}).get("pass")
        and result.get("settlement_stage", {}).get("pass")
    )
    return 0 if passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
