"""Where a bulk upload's time goes: stage and apply one file in-process, timing every SQL
statement of the apply (PostgreSQL or SQLite). A diagnostic for bench/bulk_upload.py.

    .venv/bin/python bench/upload_phases.py --backend postgres --rows 1000000
    .venv/bin/python -m bench.upload_phases --uploads 2 --mode replace   # a daily sync, unchanged
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import event, insert
from sqlalchemy.ext.asyncio import async_sessionmaker

from bench.bulk_upload import create_database, drop_database, make_file
from hub.core.db import create_hub_async_engine, create_hub_sync_engine, writing
from hub.core.keyring import load_keyring
from hub.migrate import upgrade
from partners.identifiers.crypto import IdentifierCrypto
from partners.identifiers.service import IdentifierService
from partners.identifiers.uploads.apply import UploadApplier, apply_settings
from partners.identifiers.uploads.models import IdentifierUpload
from partners.identifiers.uploads.staging import (
    StagingJob,
    clear_staging_in_batches,
    refuse_duplicates,
    stage,
)
from partners.partners.models import Partner


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", default="postgres")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--mode", default="upsert")
    parser.add_argument("--stage-only", action="store_true", help="stage, keep the database")
    parser.add_argument("--uploads", type=int, default=1, help="the same file, N times")
    args = parser.parse_args()
    path = make_file(args.rows)
    tmp = Path(tempfile.mkdtemp())
    url = create_database() if args.backend == "postgres" else f"sqlite:///{tmp}/hub.db"
    upgrade(url)
    keyring = load_keyring(tmp / "keyring.json", "")
    crypto = IdentifierCrypto(keyring)
    sync_engine = create_hub_sync_engine(url)
    engine = create_hub_async_engine(url)
    partner_id = uuid.uuid4()
    now = datetime.now(UTC)
    with sync_engine.begin() as conn:
        conn.execute(
            insert(Partner.__table__),  # type: ignore[arg-type]
            [
                {
                    "id": partner_id,
                    "name": "p",
                    "category": "airline",
                    "status": "active",
                    "created_at": now,
                    "updated_at": now,
                    "token_epoch": 0,
                }
            ],
        )
    timings: Counter[str] = Counter()

    @event.listens_for(engine.sync_engine, "before_cursor_execute")
    def before(conn: Any, cursor: Any, statement: str, *a: Any) -> None:
        conn.info["t0"] = time.perf_counter()

    @event.listens_for(engine.sync_engine, "after_cursor_execute")
    def after(conn: Any, cursor: Any, statement: str, *a: Any) -> None:
        timings[" ".join(statement.split())[:110]] += time.perf_counter() - conn.info["t0"]

    for number in range(1, args.uploads + 1):
        print(f"-- upload {number} of the same file ({args.mode})")
        upload_id = uuid.uuid4()
        with sync_engine.begin() as conn:
            conn.execute(
                insert(IdentifierUpload.__table__),  # type: ignore[arg-type]
                [
                    {
                        "id": upload_id,
                        "partner_id": partner_id,
                        "client_id": "c",
                        "mode": args.mode,
                        "format": "ndjson",
                        "gzip": True,
                        "status": "processing",
                        "bytes": 0,
                        "body_sha256": "",
                        "rows_read": 0,
                        "accepted": 0,
                        "refused": 0,
                        "created": 0,
                        "updated": 0,
                        "removed": 0,
                        "attempts": 1,
                        "created_at": now,
                    }
                ],
            )
        job = StagingJob(upload_id, partner_id, "ndjson", True, 1, 20_000, 1000)
        start = time.perf_counter()
        with path.open("rb") as body:
            report = stage(sync_engine, crypto, job, body)
        refuse_duplicates(sync_engine, job, report)
        print(f"stage: {time.perf_counter() - start:.2f} s for {report.rows_read} rows")
        if args.stage_only:
            print(f"kept: {url} upload {upload_id} partner {partner_id}")
            return
        timings.clear()
        sessions = async_sessionmaker(engine, expire_on_commit=False)
        start = time.perf_counter()
        with writing():
            async with sessions() as session, apply_settings(session):
                applier = UploadApplier(session, IdentifierService(session, crypto))
                result = await applier.apply(
                    job.stage_key,
                    partner_id,
                    args.mode,
                    keyring.match_version,
                    accepted_rows=report.accepted,
                    sent_at=now,
                )
                t_commit = time.perf_counter()
                await session.commit()
        elapsed, commit = time.perf_counter() - start, time.perf_counter() - t_commit
        print(f"apply: {elapsed:.2f} s (commit {commit:.2f}) {result}")
        for statement, seconds in timings.most_common():
            print(f"{seconds:8.2f} s  {statement}")
        start = time.perf_counter()
        clear_staging_in_batches(sync_engine, upload_id)
        print(f"clean-up of the staging rows: {time.perf_counter() - start:.2f} s")
    await engine.dispose()
    sync_engine.dispose()
    if args.backend == "postgres":
        drop_database(url)


if __name__ == "__main__":
    asyncio.run(main())
