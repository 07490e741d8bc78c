"""Where a bulk upload's time goes: stage and apply one file in-process (the upload
processor's own sliced apply), timing every SQL statement of the apply and each kind of step.
A diagnostic for bench/bulk_upload.py.

    .venv/bin/python -m bench.upload_phases --backend postgres --rows 1000000
    .venv/bin/python -m bench.upload_phases --uploads 2 --mode replace   # a daily sync, unchanged
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import tempfile
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import async_sessionmaker

from bench.bulk_upload import create_database, drop_database, make_file
from bench.replace_upload import Run, add_partner
from hub.core.db import create_hub_async_engine, create_hub_sync_engine
from hub.core.keyring import load_keyring
from hub.migrate import upgrade
from partners.identifiers.crypto import IdentifierCrypto
from partners.identifiers.uploads.staging import watch_parent


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
    tmp = Path(tempfile.mkdtemp())
    url = create_database() if args.backend == "postgres" else f"sqlite:///{tmp}/hub.db"
    upgrade(url)
    crypto = IdentifierCrypto(load_keyring(tmp / "keyring.json", ""))
    engine = create_hub_sync_engine(url, busy_timeout_ms=120_000)
    async_engine = create_hub_async_engine(url)
    pool = ProcessPoolExecutor(
        2,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=watch_parent,
        initargs=(os.getpid(),),
    )
    run = Run(
        engine,
        async_sessionmaker(async_engine, expire_on_commit=False),
        crypto,
        pool,
        tmp / "spool",
    )
    # The apply runs on the async engine, the staging on the sync one: only the apply's
    # statements are timed.
    seconds: Counter[str] = Counter()
    calls: Counter[str] = Counter()

    @event.listens_for(async_engine.sync_engine, "before_cursor_execute")
    def before(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        conn.info["statement_started"] = time.perf_counter()

    @event.listens_for(async_engine.sync_engine, "after_cursor_execute")
    def after(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        key = statement_key(statement)
        seconds[key] += time.perf_counter() - conn.info["statement_started"]
        calls[key] += 1

    print(f"{args.backend}, {args.rows:,} rows, {args.mode}, {args.uploads} upload(s)")
    try:
        partner_id = add_partner(engine, "p")
        for number in range(1, args.uploads + 1):
            seconds.clear()
            calls.clear()
            total, what = await run.upload(partner_id, path, args.mode)
            print(f"-- upload {number}: {total:.1f} s ({what})")
            in_statements = sum(seconds.values())
            print(f"   apply statements: {in_statements:.1f} s in {sum(calls.values()):,} calls")
            for key, spent in seconds.most_common(args.top):
                print(f"   {spent:8.2f} s {calls[key]:6d} calls  {key}")
    finally:
        pool.shutdown()
        await async_engine.dispose()
        engine.dispose()
        if args.backend == "postgres":
            drop_database(url)


if __name__ == "__main__":
    asyncio.run(main())
