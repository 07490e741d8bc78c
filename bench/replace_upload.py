"""``replace`` against ``upsert`` of the same file, and how long a concurrent writer waits.

A partner holds N records; the file holds N rows: 90 % of those records unchanged and 10 %
new people, so a ``replace`` removes 10 % of the records and an ``upsert`` removes none. Each
mode runs on its own partner loaded with the same N records, in the same run, in-process
(stage, then the upload processor's own apply: slices of 10,000 staged rows into a new
generation of the partner's records, the flip, the tidying). Meanwhile a thread
writes one small row a time on its own connection (another partner's change counter, as a
consent update would) and records how long each write waited: on SQLite that is the longest
hold of the write lock.

    .venv/bin/python -m bench.replace_upload --backend sqlite --rows 1000000
    .venv/bin/python -m bench.replace_upload --backend postgres --rows 1000000
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import gzip
import hashlib
import multiprocessing
import os
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import msgspec
from sqlalchemy import Engine, insert, select, update
from sqlalchemy.ext.asyncio import async_sessionmaker

from bench.bulk_upload import RESULTS, create_database, drop_database
from hub.core.db import create_hub_async_engine, create_hub_sync_engine
from hub.core.keyring import load_keyring
from hub.migrate import upgrade
from hub.settings import UploadSettings
from partners.identifiers.crypto import IdentifierCrypto
from partners.identifiers.models import IdentifierState
from partners.identifiers.uploads.models import IdentifierUpload
from partners.identifiers.uploads.processor import UploadProcessor
from partners.identifiers.uploads.sliced import Claim
from partners.identifiers.uploads.staging import (
    UPLOADS,
    StagingJob,
    clear_staging_in_batches,
    refuse_duplicates,
    stage,
    watch_parent,
)
from partners.partners.models import Partner

STATE = IdentifierState.__table__


def write_file(name: str, numbers: range) -> Path:
    """gzip NDJSON of one email record per number (made once, cached)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    if path.exists():
        return path
    encoder = msgspec.json.Encoder()
    with gzip.open(path.with_suffix(".part"), "wb", compresslevel=6) as out:
        chunk: list[bytes] = []
        for i in numbers:
            digest = hashlib.sha256(f"member{i}@example.org".encode()).digest()
            chunk.append(
                encoder.encode(
                    {
                        "id_type": "email",
                        "id_hash": base64.b64encode(digest).decode(),
                        "customer_ref": f"C{i:09d}",
                        "consents": ["analytics", "joint_offers"],
                        "attributes": {"tier": ("gold", "silver")[i % 2]},
                    }
                )
            )
            if len(chunk) == 10_000:
                out.write(b"\n".join(chunk) + b"\n")
                chunk = []
        if chunk:
            out.write(b"\n".join(chunk) + b"\n")
    path.with_suffix(".part").rename(path)
    return path


@dataclass
class Writer:
    """Small writes, one transaction each, timed: the longest is the longest wait."""

    engine: Engine
    partner_id: uuid.UUID
    waits: list[float] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.is_set():
            start = time.perf_counter()
            with self.engine.begin() as conn:
                conn.execute(
                    update(STATE)
                    .where(STATE.c.partner_id == self.partner_id)
                    .values(version=STATE.c.version + 1)
                )
            self.waits.append(time.perf_counter() - start)
            time.sleep(0.01)


def add_partner(engine: Engine, name: str) -> uuid.UUID:
    partner_id, now = uuid.uuid4(), datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(
            insert(Partner.__table__),  # type: ignore[arg-type]
            [
                {
                    "id": partner_id,
                    "name": name,
                    "category": "airline",
                    "status": "active",
                    "created_at": now,
                    "updated_at": now,
                    "token_epoch": 0,
                }
            ],
        )
        conn.execute(insert(STATE).values(partner_id=partner_id, version=0, updated_at=now))
    return partner_id


@dataclass
class Run:
    engine: Engine
    sessions: async_sessionmaker  # type: ignore[type-arg]
    crypto: IdentifierCrypto
    pool: ProcessPoolExecutor
    spool: Path

    @property
    def processor(self) -> UploadProcessor:
        return UploadProcessor(
            self.sessions, self.engine, self.crypto, UploadSettings(), self.spool
        )

    async def upload(self, partner_id: uuid.UUID, path: Path, mode: str) -> tuple[float, str]:
        """Stage and apply one file; returns (seconds, what the apply did)."""
        upload_id, now = uuid.uuid4(), datetime.now(UTC)
        with self.engine.begin() as conn:
            conn.execute(
                insert(IdentifierUpload.__table__),  # type: ignore[arg-type]
                [
                    {
                        "id": upload_id,
                        "partner_id": partner_id,
                        "client_id": "c",
                        "mode": mode,
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
            report = await asyncio.to_thread(
                stage, self.engine, self.crypto, job, body, pool=self.pool
            )
        refuse_duplicates(self.engine, job, report)
        staged = time.perf_counter()
        # The processor's own apply: slices into a new generation, the flip, the tidying.
        claim = Claim(upload_id, partner_id, "c", mode, "ndjson", True, 1, now)
        processor = self.processor
        processor.applier.step_totals.clear()
        await processor._apply(claim, report)
        with self.engine.connect() as conn:
            result = conn.execute(
                select(UPLOADS.c.created, UPLOADS.c.updated, UPLOADS.c.removed).where(
                    UPLOADS.c.id == upload_id
                )
            ).one()
        done = time.perf_counter()
        await asyncio.to_thread(clear_staging_in_batches, self.engine, upload_id)
        what = (
            f"stage {staged - start:.1f} s, apply {done - staged:.1f} s: created "
            f"{result.created:,}, updated {result.updated:,}, removed {result.removed:,}; "
            f"longest apply transaction {processor.applier.longest_step:.2f} s "
            f"({', '.join(f'{k} {v:.2f}' for k, v in processor.applier.step_seconds.items())}); "
            "steps added up: "
            f"{', '.join(f'{k} {v:.1f}' for k, v in processor.applier.step_totals.items())}"
        )
        return done - start, what


@contextlib.asynccontextmanager
async def running(backend: str) -> AsyncIterator[tuple[Run, str]]:
    """A fresh database (PostgreSQL: created, then dropped) with the hub's schema, and what
    drives the processor's apply in-process; yields it with the database's URL."""
    tmp = Path(tempfile.mkdtemp())
    url = create_database() if backend == "postgres" else f"sqlite:///{tmp}/hub.db"
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
    sessions = async_sessionmaker(async_engine, expire_on_commit=False)
    try:
        yield Run(engine, sessions, crypto, pool, tmp / "spool"), url
    finally:
        pool.shutdown()
        await async_engine.dispose()
        engine.dispose()
        if backend == "postgres":
            drop_database(url)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", default="sqlite", choices=("sqlite", "postgres"))
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    n, tenth = args.rows, args.rows // 10
    base = write_file(f"replace-base-{n}.ndjson.gz", range(n))
    snapshot = write_file(f"replace-snapshot-{n}.ndjson.gz", range(tenth, n + tenth))
    async with running(args.backend) as (run, url):
        writer_engine = create_hub_sync_engine(url, busy_timeout_ms=120_000)
        print(f"{args.backend}, {n:,} rows; the file keeps 90 % of the records, brings 10 % new")
        try:
            await compare(run, writer_engine, n, base, snapshot)
        finally:
            writer_engine.dispose()


async def compare(run: Run, writer_engine: Engine, n: int, base: Path, snapshot: Path) -> None:
    engine = run.engine
    bystander = add_partner(engine, "bystander")
    partners = {mode: add_partner(engine, mode) for mode in ("upsert", "replace")}
    for partner_id in partners.values():
        seconds, what = await run.upload(partner_id, base, "upsert")
        print(f"  load {n:,} records: {seconds:.1f} s ({what})")
    totals = {}
    for mode, partner_id in partners.items():
        writer = Writer(writer_engine, bystander)
        thread = threading.Thread(target=writer.run)
        thread.start()
        try:
            totals[mode], what = await run.upload(partner_id, snapshot, mode)
        finally:
            writer.stop.set()
            thread.join()
        print(
            f"  {mode:>7}: {totals[mode]:.1f} s ({what}); concurrent writer: "
            f"{len(writer.waits)} writes, longest wait {max(writer.waits):.2f} s"
        )
    print(f"  replace ÷ upsert: {totals['replace'] / totals['upsert']:.2f}")


if __name__ == "__main__":
    asyncio.run(main())
