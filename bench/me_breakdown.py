"""Where GET /v1/me's time goes below HTTP: its database work, in-process, variant by variant.

Companion to bench/auth_layer.py (which measures over HTTP). Each variant runs the same unit of
work as one /v1/me request -- read the partner by id, list its partnerships (first page),
commit -- from ``--concurrency`` asyncio tasks (default 32, like wrk -c32) on uvloop, in one
process, against a fresh PostgreSQL database, and reports units/s and this process's CPU time
per unit (the hub process is CPU-bound, so CPU per unit is what limits its throughput):

  psycopg-raw        psycopg AsyncConnection, a fixed set of 20 connections, same SQL
  sa-core            SQLAlchemy Core on the hub's engine (create_hub_async_engine)
  hub-orm            the hub's code path: session_maker() + PartnerService.get +
                     PartnershipService.list + commit, engine as the hub builds it
                     (pool_size=10, max_overflow=10, pool_pre_ping=True)
  hub-orm-pool32     same, pool_size=32: no overflow connections closed and reopened
  hub-orm-pool32-nopreping   same, and pool_pre_ping=False: no ping round trip per checkout

It also counts the new PostgreSQL connections each variant opened while measured.

    .venv/bin/python bench/me_breakdown.py [--seconds 8] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from uuid import UUID

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
import uvloop  # noqa: E402
from sqlalchemy import event, select  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine  # noqa: E402

from bench.auth_layer import DEFAULT_PG, create_database, drop_database  # noqa: E402
from hub.core.audit import Actor  # noqa: E402
from hub.core.db import async_url, create_hub_async_engine, writing  # noqa: E402
from hub.migrate import upgrade  # noqa: E402
from partners.partners.models import Partner  # noqa: E402
from partners.partners.schemas import PartnerCreate  # noqa: E402
from partners.partners.service import PartnerService  # noqa: E402
from partners.partnerships.models import Partnership, PartnershipMember  # noqa: E402
from partners.partnerships.service import PartnershipService  # noqa: E402

RESULTS_DIR = ROOT / "bench" / "results"

Unit = Callable[[], Awaitable[None]]


async def drive(unit: Unit, seconds: float, concurrency: int) -> tuple[int, float, float]:
    """Run ``unit`` from ``concurrency`` tasks for ``seconds``: (units, wall s, CPU s)."""
    stop = time.monotonic() + seconds
    done = 0

    async def worker() -> None:
        nonlocal done
        while time.monotonic() < stop:
            await unit()
            done += 1

    cpu0, t0 = time.process_time(), time.monotonic()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done, time.monotonic() - t0, time.process_time() - cpu0


def count_connects(engine: AsyncEngine) -> list[int]:
    counter = [0]

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(*_: Any) -> None:
        counter[0] += 1

    return counter


def partnership_stmt(partner_id: UUID) -> Any:
    sub = select(PartnershipMember.partnership_id).where(PartnershipMember.partner_id == partner_id)
    return select(Partnership).where(Partnership.id.in_(sub)).order_by(Partnership.id).limit(101)


async def make_partner(url: str) -> UUID:
    engine = create_hub_async_engine(url)
    try:
        with writing():
            async with async_sessionmaker(engine, expire_on_commit=False)() as session:
                partner = await PartnerService(session).onboard(
                    PartnerCreate(name=f"bench-{secrets.token_hex(4)}", category="airline"),
                    Actor(name="bench"),
                )
                await session.commit()
                return partner.id
    finally:
        await engine.dispose()


async def variant_psycopg(url: str, partner_id: UUID, args: argparse.Namespace) -> dict[str, Any]:
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    pool: asyncio.Queue[psycopg.AsyncConnection[Any]] = asyncio.Queue()
    for _ in range(20):
        pool.put_nowait(await psycopg.AsyncConnection.connect(dsn))
    q1 = (
        "SELECT id, name, category, status, webhook_url, created_at, updated_at "
        "FROM partners WHERE id = %s"
    )
    q2 = (
        "SELECT p.* FROM partnerships p WHERE p.id IN (SELECT partnership_id FROM "
        "partnership_members WHERE partner_id = %s) ORDER BY p.id LIMIT 101"
    )

    async def unit() -> None:
        conn = await pool.get()
        try:
            async with conn.transaction():
                await (await conn.execute(q1, (partner_id,))).fetchone()
                await (await conn.execute(q2, (partner_id,))).fetchall()
        finally:
            pool.put_nowait(conn)

    await drive(unit, 1.0, args.concurrency)  # warm-up
    n, wall, cpu = await drive(unit, args.seconds, args.concurrency)
    while not pool.empty():
        await pool.get_nowait().close()
    return {"units": n, "per_s": n / wall, "cpu_us_per_unit": cpu / n * 1e6, "new_connections": 0}


async def variant_core(url: str, partner_id: UUID, args: argparse.Namespace) -> dict[str, Any]:
    engine = create_hub_async_engine(url)
    connects = count_connects(engine)
    stmt1 = select(Partner).where(Partner.id == partner_id)

    async def unit() -> None:
        async with engine.connect() as conn:
            (await conn.execute(stmt1)).first()
            (await conn.execute(partnership_stmt(partner_id))).all()
            await conn.commit()

    return await _measure(engine, connects, unit, args)


async def variant_orm(
    url: str, partner_id: UUID, args: argparse.Namespace, *, pool_size: int, pre_ping: bool
) -> dict[str, Any]:
    if pool_size == 10 and pre_ping:
        engine = create_hub_async_engine(url, pool_size=10)  # exactly what the hub builds
    else:
        engine = create_async_engine(
            async_url(url), pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=pre_ping
        )
    connects = count_connects(engine)
    maker = async_sessionmaker(engine, expire_on_commit=False)

    async def unit() -> None:
        # What provide_db_session + partners.me.me do for one request.
        async with maker() as session:
            await PartnerService(session).get(partner_id)
            await PartnershipService(session).list(partner_id, cursor=None, limit=100)
            await session.commit()

    return await _measure(engine, connects, unit, args)


async def _measure(
    engine: AsyncEngine, connects: list[int], unit: Unit, args: argparse.Namespace
) -> dict[str, Any]:
    try:
        await drive(unit, 1.0, args.concurrency)  # warm-up (fills the pool)
        before = connects[0]
        n, wall, cpu = await drive(unit, args.seconds, args.concurrency)
        return {
            "units": n,
            "per_s": n / wall,
            "cpu_us_per_unit": cpu / n * 1e6,
            "new_connections": connects[0] - before,
        }
    finally:
        await engine.dispose()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    url = create_database(args.pg_url)
    try:
        upgrade(url)
        partner_id = await make_partner(url)
        results: dict[str, Any] = {}
        variants: dict[str, Callable[[], Awaitable[dict[str, Any]]]] = {
            "psycopg-raw": lambda: variant_psycopg(url, partner_id, args),
            "sa-core": lambda: variant_core(url, partner_id, args),
            "hub-orm": lambda: variant_orm(url, partner_id, args, pool_size=10, pre_ping=True),
            "hub-orm-pool32": lambda: variant_orm(
                url, partner_id, args, pool_size=32, pre_ping=True
            ),
            "hub-orm-pool32-nopreping": lambda: variant_orm(
                url, partner_id, args, pool_size=32, pre_ping=False
            ),
        }
        for name, fn in variants.items():
            results[name] = await fn()
            r = results[name]
            print(
                f"{name:26} {r['per_s']:8,.0f} units/s  {r['cpu_us_per_unit']:7,.0f} µs CPU/unit"
                f"  new PG connections while measured: {r['new_connections']}",
                flush=True,
            )
        return results
    finally:
        drop_database(args.pg_url, url)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seconds", type=float, default=8.0, help="measured seconds per variant")
    p.add_argument("--concurrency", type=int, default=32, help="concurrent tasks (like wrk -c)")
    p.add_argument("--pg-url", default=DEFAULT_PG)
    args = p.parse_args()
    results = uvloop.run(run(args))
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"me_breakdown-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps({"args": vars(args), "results": results}, indent=2))
    print(f"results written to {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
