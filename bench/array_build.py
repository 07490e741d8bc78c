"""Building one partner's arrays from its records (``matching.loader._build``), timed.

The build is what the apply of an upload runs before its flip (and what a question runs when
no process has the partner's current version): it reads every current record of the partner
in person order and turns them into the engine's arrays. This bench fills one partner's
records straight into ``identifier_records`` (no upload: random 32-byte match keys, 1.25
identifiers per person, a tier and a city on every record, as ``bench.overlap_http``'s files
have), then builds them ``--repeat`` times in a child process and reports the seconds, the
child's peak resident memory and a digest of the arrays.

With ``--before PATH`` (a checkout of an earlier commit, e.g. ``git worktree add /tmp/before
<commit>``), the same records are built by both trees, alternately, and the digests must be
equal: the same records give the same arrays, whatever the code that built them.

    .venv/bin/python -m bench.array_build --rows 1000000 --before /tmp/before
    .venv/bin/python -m bench.array_build --rows 1000000 --backend sqlite --before /tmp/before

PostgreSQL: ``BENCH_PG_URL`` (default the local server); the bench makes and drops its own
database.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.bulk_upload import create_database, drop_database, hub, peak_rss_mb

ROOT = Path(__file__).resolve().parent.parent
TIERS = ("blue", "silver", "gold", "platinum")
CITIES = ("Paris", "Lyon", "Berlin", "Madrid", "Rome", "Lisbon", "Vienna", "Prague")
BATCH = 50_000
KEY_VERSION = 1


class FixedKeys:
    """A keyring of one match-key and one data-key version (``IdentifierKeys``): every record
    is under the newest match key, so the build never decrypts."""

    match_version = KEY_VERSION
    data_version = 1

    def match_secret(self, version: int) -> bytes:
        return b"m" * 32

    def data_secret(self, version: int) -> bytes:
        return b"d" * 32

    def live_match_versions(self) -> list[int]:
        return [KEY_VERSION]


def fill(database_url: str, partner_id: uuid.UUID, rows: int, seed: int = 7) -> None:
    """``rows`` records of one partner, written in random key order (as uploads leave them)."""
    from sqlalchemy import insert

    from hub.core.db import create_hub_sync_engine
    from partners.identifiers.records import RECORDS

    rng = random.Random(seed)
    people = int(rows / 1.25)
    engine = create_hub_sync_engine(database_url, writer=True)
    now = datetime.now(UTC)
    try:
        with engine.begin() as conn:
            batch: list[dict[str, Any]] = []
            for n in range(rows):
                person = n if n < people else rng.randrange(people)
                batch.append(
                    {
                        "partner_id": partner_id,
                        "id_type": 1 if n < people else 2,
                        "match_key": rng.randbytes(32),
                        "generation": 0,
                        "retired": None,
                        "key_version": KEY_VERSION,
                        "digest_enc": bytes(60),
                        "data_version": 1,
                        "customer_ref": f"cust-{person:09d}",
                        "consents": rng.randrange(1, 8),
                        "attributes": {"tier": rng.choice(TIERS), "city": rng.choice(CITIES)},
                        "updated_at": now,
                    }
                )
                if len(batch) == BATCH:
                    conn.execute(insert(RECORDS), batch)
                    batch = []
            if batch:
                conn.execute(insert(RECORDS), batch)
        if engine.dialect.name == "postgresql":
            with engine.connect() as conn:
                conn.exec_driver_sql("ANALYZE identifier_records")
    finally:
        engine.dispose()


def child(database_url: str, partner_id: uuid.UUID, repeat: int) -> dict[str, Any]:
    """Build the partner's arrays ``repeat`` times in this process (whichever tree it runs)."""
    from hub.core.db import create_hub_sync_engine
    from matching import loader
    from partners.identifiers.crypto import IdentifierCrypto

    crypto = IdentifierCrypto(FixedKeys())
    engine = create_hub_sync_engine(database_url, writer=False)
    seconds = []
    digest = ""
    try:
        for _ in range(repeat):
            started = time.perf_counter()
            with loader._snapshot(engine) as conn:
                side, people, over = loader._build(conn, partner_id, crypto, KEY_VERSION)
            seconds.append(round(time.perf_counter() - started, 3))
            h = hashlib.sha256()
            for column in (side.hi, side.lo, side.person, side.consent, people.offsets):
                h.update(column.tobytes())
            h.update(people.blob)
            for name in sorted(side.attributes):
                h.update(name.encode())
                h.update(repr(side.attributes[name].values).encode())
                h.update(side.attributes[name].codes.tobytes())
            h.update(repr(sorted(over)).encode())
            digest = h.hexdigest()
            records, n_people = len(side.hi), side.n_people
            del side, people
    finally:
        engine.dispose()
    return {
        "seconds": seconds,
        "records": records,
        "people": n_people,
        "digest": digest,
        "vmhwm_mb": round(peak_rss_mb(os.getpid()), 1),
    }


def run_child(tree: Path, database_url: str, partner_id: uuid.UUID, repeat: int) -> Any:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    env["PYTHONPATH"] = str(tree)
    done = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).resolve()),  # this script, importing the hub from ``tree``
            "--child",
            database_url,
            str(partner_id),
            "--repeat",
            str(repeat),
        ],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"build in {tree} failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--backend", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--repeat", type=int, default=3, help="builds per tree per round")
    parser.add_argument("--rounds", type=int, default=2, help="rounds, trees alternating")
    parser.add_argument("--before", type=Path, help="a checkout of an earlier commit")
    parser.add_argument("--child", nargs=2, metavar=("URL", "PARTNER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], uuid.UUID(args.child[1]), args.repeat)))
        return 0
    data_dir = Path(tempfile.mkdtemp(prefix="bench-build-"))
    database_url = (
        create_database() if args.backend == "postgres" else f"sqlite:///{data_dir}/hub.db"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    env.update(HUB_DATABASE_URL=database_url, HUB_SERVER_DATA_DIR=str(data_dir))
    partner_id = uuid.uuid4()
    trees = {"now": ROOT} | ({"before": args.before.resolve()} if args.before else {})
    runs: dict[str, list[Any]] = {name: [] for name in trees}
    try:
        hub(env, "db", "upgrade")
        started = time.perf_counter()
        fill(database_url, partner_id, args.rows)
        print(f"filled {args.rows:,} records in {time.perf_counter() - started:.1f} s", flush=True)
        for _ in range(args.rounds):
            for name, tree in reversed(trees.items()):
                run = run_child(tree, database_url, partner_id, args.repeat)
                print(f"{name}: {json.dumps(run)}", flush=True)
                runs[name].append(run)
    finally:
        if args.backend == "postgres":
            drop_database(database_url)
        shutil.rmtree(data_dir, ignore_errors=True)
    summary: dict[str, Any] = {"rows": args.rows, "backend": args.backend}
    for name, done in runs.items():
        times = sorted(s for run in done for s in run["seconds"])
        summary[name] = {
            "median_s": times[len(times) // 2],
            "best_s": times[0],
            "vmhwm_mb": max(run["vmhwm_mb"] for run in done),
            "digest": done[-1]["digest"],
        }
    if "before" in summary:
        summary["now_over_before"] = round(
            summary["now"]["median_s"] / summary["before"]["median_s"], 3
        )
        summary["same_arrays"] = summary["now"]["digest"] == summary["before"]["digest"]
    print(json.dumps(summary, indent=2))
    return 0 if summary.get("same_arrays", True) else 1


if __name__ == "__main__":
    raise SystemExit(main())
