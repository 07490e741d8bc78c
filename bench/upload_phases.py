"""Where a bulk upload's time goes: stage and apply one file in-process (the upload
processor's own sliced apply), timing every SQL statement of the apply and each kind of step.
A diagnostic for bench/bulk_upload.py.

    .venv/bin/python -m bench.upload_phases --backend postgres --rows 1000000
    .venv/bin/python -m bench.upload_phases --uploads 2 --mode replace   # a daily sync, unchanged
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any

from sqlalchemy import event

from bench.bulk_upload import make_file
from bench.replace_upload import Run, add_partner, running


def statement_key(statement: str) -> str:
    return " ".join(statement.split())[:120]


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", default="postgres", choices=("postgres", "sqlite"))
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--mode", default="upsert", choices=("upsert", "replace"))
    parser.add_argument("--uploads", type=int, default=1, help="the same file, N times")
    parser.add_argument("--top", type=int, default=15, help="statements listed per upload")
    args = parser.parse_args()
    path = make_file(args.rows)
    async with running(args.backend) as (run, _):
        await profile(run, path, args)


async def profile(run: Run, path: Path, args: argparse.Namespace) -> None:
    # The apply runs on the async engine, the staging on the sync one: only the apply's
    # statements are timed.
    seconds: Counter[str] = Counter()
    calls: Counter[str] = Counter()
    apply_engine = run.sessions.kw["bind"].sync_engine

    @event.listens_for(apply_engine, "before_cursor_execute")
    def before(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        conn.info["statement_started"] = time.perf_counter()

    @event.listens_for(apply_engine, "after_cursor_execute")
    def after(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        key = statement_key(statement)
        seconds[key] += time.perf_counter() - conn.info["statement_started"]
        calls[key] += 1

    print(f"{args.backend}, {args.rows:,} rows, {args.mode}, {args.uploads} upload(s)")
    partner_id = add_partner(run.engine, "p")
    for number in range(1, args.uploads + 1):
        seconds.clear()
        calls.clear()
        total, what = await run.upload(partner_id, path, args.mode)
        print(f"-- upload {number}: {total:.1f} s ({what})")
        in_statements = sum(seconds.values())
        print(f"   apply statements: {in_statements:.1f} s in {sum(calls.values()):,} calls")
        for key, spent in seconds.most_common(args.top):
            print(f"   {spent:8.2f} s {calls[key]:6d} calls  {key}")


if __name__ == "__main__":
    asyncio.run(main())
