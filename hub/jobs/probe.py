"""TEST ONLY: the ``probe`` job, registered when ``HUB_JOBS_TEST_PROBE=1``.

It shows the pattern every resumable job follows, and lets the test suite check the scheduler
under contention and crashes: work items ``0..items-1`` are applied in batches, and each batch
is written in the same transaction as the checkpoint that moves the cursor past it. A process
killed anywhere leaves either the batch and its cursor, or neither; the next run resumes from
the cursor, so every item is applied exactly once.

Items land in ``job_probe_items`` (created on first use; not part of the hub's schema).
Tuning, from the environment: ``HUB_JOBS_TEST_PROBE_SECONDS`` (interval), ``_ITEMS``,
``_BATCH`` (items per batch), ``_PAUSE`` (seconds each batch's transaction stays open, as
real work would), ``_BATCHES_PER_RUN`` (0: until done).
"""

from __future__ import annotations

import asyncio
import os

from sqlalchemy import text

from hub.core.db import writing
from hub.jobs.context import JobContext

ENABLED_VARIABLE = "HUB_JOBS_TEST_PROBE"
CREATE_TABLE = text(
    "CREATE TABLE IF NOT EXISTS job_probe_items "
    "(item INTEGER NOT NULL, run_id BIGINT NOT NULL, worker VARCHAR(200) NOT NULL)"
)
INSERT_ITEM = text("INSERT INTO job_probe_items (item, run_id, worker) VALUES (:i, :r, :w)")


def probe_enabled() -> bool:
    return os.environ.get(ENABLED_VARIABLE) == "1"


def probe_interval() -> float:
    return float(os.environ.get("HUB_JOBS_TEST_PROBE_SECONDS", "0.2"))


def _setting(name: str, default: str) -> float:
    return float(os.environ.get(f"HUB_JOBS_TEST_PROBE_{name}", default))


async def probe(ctx: JobContext) -> dict[str, int]:
    items = int(_setting("ITEMS", "100"))
    batch = int(_setting("BATCH", "5"))
    pause = _setting("PAUSE", "0.02")
    batches_per_run = int(_setting("BATCHES_PER_RUN", "0"))
    with writing():
        async with ctx.session_maker() as session:
            await session.execute(CREATE_TABLE)
            await session.commit()
    position = int(ctx.cursor.get("next", 0))
    applied = batches = 0
    while position < items and (batches_per_run == 0 or batches < batches_per_run):
        end = min(position + batch, items)
        with writing():
            async with ctx.session_maker() as session:
                await session.execute(
                    INSERT_ITEM,
                    [
                        {"i": i, "r": ctx.run_id, "w": ctx.lease.holder}
                        for i in range(position, end)
                    ],
                )
                await asyncio.sleep(pause)  # the batch's work, with its transaction open
                applied += end - position
                await ctx.checkpoint({"next": end}, {"applied": applied}, session=session)
        position = end
        batches += 1
    return {"applied": applied}
