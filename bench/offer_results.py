"""Offer results at scale: ``GET /v1/offers/{id}/results``' work for an offer with a 1M-person
audience (both arms) and 5M events in the window, on SQLite and PostgreSQL, against the bare
SQL aggregate it needs, measured in the same run on the same database.

Cases (each the median of ``--rounds`` runs, after one unmeasured warm-up):

* ``bare``: the full aggregate over the window's raw events, the reference
  (:func:`matching.measurement.arm_figures_query` with ``EVENTS_SOURCE``, both sides,
  executed and fetched: one row per arm), nothing else -- what the read ran before migration
  0022;
* ``bare-totals``: the same figures from the running totals (``matching.result_totals``: one
  row per member with events in the window), with the read's look for events dated ahead;
  checked equal to ``bare``;
* ``read``: :meth:`matching.results.OfferResultsService.read` as the endpoint calls it (from
  the totals): offer and partnership, reconciliation check, the totals' fill check,
  partnership lock, versions, budget, the aggregate, differencing against earlier answers,
  release, lift, the stored answer and the audit entry, committed (the stored answer is
  deleted between rounds so every round computes);
* ``segments-bare`` / ``segments-bare-totals``: both aggregates with ``by=self.tier``, once;
* ``fill``: filling the totals from the raw events once, after the load (what the first read
  of an offer activated before 0022 does; offers activated since are kept from activation);
* with ``--numpy``: fetch one row per event of the window (ref index, arm, points, amount)
  and aggregate with numpy (``np.bincount``), once; with ``--jit``: ``bare`` with
  PostgreSQL's JIT on, once.

Data, written straight into the tables (COPY on PostgreSQL, executemany on SQLite): partner A
with 1M identifier records and ledger members; 900k people treated and 100k control (10 %
holdout); 30 % of the treated and 28 % of the control respond; 5M earns spread over their
responders, all in the window; partner B has the same arms sizes and no events. The rows are
written straight into the tables, so the totals are then filled by the fill path the read
uses (``ensure_filled``), timed as ``fill``.

Run: ``.venv/bin/python bench/offer_results.py`` (``--people``/``--events`` to scale down,
``--backends sqlite`` for one backend, ``--pg-url`` for another server). Prints JSON and writes
``bench/results/offer_results.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from sqlalchemy import delete, insert, literal, select, text
from sqlalchemy.ext.asyncio import async_sessionmaker

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hub.core.audit import Actor
from hub.core.db import create_hub_async_engine, create_hub_sync_engine
from hub.migrate import upgrade
from matching.measurement import EVENTS_SOURCE, Window, arm_figures_query, totals_source
from matching.models import (
    Offer,
    OfferAudience,
    OfferControl,
    OfferResultAnswer,
    OfferResultFill,
)
from matching.result_totals import bounds, ensure_filled
from matching.results import OfferResultsService, window_of
from partners.identifiers.models import IdentifierRecord
from partners.partners.models import Partner
from partners.partnerships.models import Partnership, PartnershipMember
from partners.rewards.models import RewardEvent, RewardMember

GOAL_SECONDS = 5.0
CHUNK = 50_000


def key_of(i: int) -> bytes:
    return (i * 0x9E3779B97F4A7C15 % (1 << 256)).to_bytes(32, "big")


class Data:
    def __init__(self, people: int, events: int, seed: int = 16) -> None:
        rng = np.random.default_rng(seed)
        self.people = people
        self.control = np.arange(people) % 10 == 0
        rate = np.where(self.control, 0.28, 0.30)
        self.responds = rng.random(people) < rate
        responders = np.flatnonzero(self.responds)
        self.member = rng.choice(responders, events)  # person index per event
        self.points = rng.integers(10, 500, events)
        self.amount = rng.integers(100, 20_000, events)
        self.now = datetime.now(UTC)
        self.start = self.now - timedelta(days=30)
        self.offset = rng.random(events) * (30 * 86400 - 60)
        self.a = uuid.uuid4()
        self.b = uuid.uuid4()
        self.partnership = uuid.uuid4()
        self.offer = uuid.uuid4()

    def adopt(self, url: str) -> None:
        """Measure a database loaded by an earlier run (its ids; same seed, same data)."""
        engine = create_hub_sync_engine(url)
        with engine.connect() as conn:
            self.offer = conn.execute(select(Offer.id)).scalar_one()
            self.a = conn.execute(select(RewardEvent.partner_id).limit(1)).scalar_one()
            self.b = conn.execute(
                select(Partner.id).where(Partner.id != self.a).limit(1)
            ).scalar_one()
        engine.dispose()


def _rows_records(d: Data, partner: uuid.UUID) -> Any:
    for i in range(d.people):
        yield {
            "partner_id": partner,
            "id_type": 1,
            "match_key": key_of(i),
            "key_version": 1,
            "digest_enc": b"\0" * 60,
            "data_version": 1,
            "customer_ref": f"c{i:07d}",
            "consents": 7,
            "attributes": {"tier": ("gold", "silver", "bronze")[i % 3]},
            "updated_at": d.now,
        }


def _rows_members(d: Data) -> Any:
    for i in range(d.people):
        yield {
            "id": i + 1,
            "id_type": 1,
            "match_key": key_of(i),
            "key_version": 1,
            "created_at": d.now,
        }


def _rows_arm(d: Data, partner: uuid.UUID, control: bool) -> Any:
    for i in np.flatnonzero(d.control == control).tolist():
        yield {"offer_id": d.offer, "partner_id": partner, "customer_ref": f"c{i:07d}"}


def _rows_events(d: Data) -> Any:
    for j in range(len(d.member)):
        yield {
            "partner_id": d.a,
            "event_id": f"e{j}",
            "body_sha256": "0" * 64,
            "kind": "earn",
            "points": int(d.points[j]),
            "member_id": int(d.member[j]) + 1,
            "occurred_at": d.start + timedelta(seconds=float(d.offset[j])),
            "offer_id": None,
            "amount_minor": int(d.amount[j]),
            "result": {},
            "created_at": d.now,
        }


def _chunks(rows: Any) -> Any:
    chunk = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def load(url: str, d: Data) -> float:
    """Write the data set; seconds taken."""
    began = time.perf_counter()
    engine = create_hub_sync_engine(url)
    with engine.begin() as conn:
        for pid, name in ((d.a, "airline"), (d.b, "hotel")):
            conn.execute(
                insert(Partner.__table__),  # type: ignore[arg-type]
                {"id": pid, "name": f"{name}-{pid.hex[:6]}", "category": name, "status": "active",
                 "token_epoch": 0, "created_at": d.now, "updated_at": d.now},
            )  # fmt: skip
        conn.execute(
            insert(Partnership.__table__),  # type: ignore[arg-type]
            {"id": d.partnership, "status": "active", "purposes": ["joint_offers"],
             "min_audience": 50, "epsilon": None, "epsilon_budget": None, "budget_period": "day",
             "allow_competitors": False, "created_at": d.now, "updated_at": d.now},
        )  # fmt: skip
        for pid in (d.a, d.b):
            conn.execute(
                insert(PartnershipMember.__table__),  # type: ignore[arg-type]
                {"partnership_id": d.partnership, "partner_id": pid, "accepted_at": d.now},
            )
        treated = int((~d.control).sum())
        control = int(d.control.sum())
        conn.execute(
            insert(Offer.__table__),  # type: ignore[arg-type]
            {"id": d.offer, "partnership_id": d.partnership, "proposer_id": d.a,
             "title": "bench", "description": "", "points": {str(d.a): 1, str(d.b): 1},
             "filters": {}, "status": "active", "approvals": {}, "activated_at": d.start,
             "reconciled": {str(d.a): 0, str(d.b): 0},
             "audience_sizes": {str(d.a): treated, str(d.b): treated},
             "control_sizes": {str(d.a): control, str(d.b): control},
             "holdout": 0.1, "attribution_days": 0, "salt": b"\0" * 32,
             "created_at": d.now, "updated_at": d.now},
        )  # fmt: skip
    tables = [
        (IdentifierRecord.__table__, _rows_records(d, d.a)),
        (RewardMember.__table__, _rows_members(d)),
        (OfferAudience.__table__, _rows_arm(d, d.a, False)),
        (OfferControl.__table__, _rows_arm(d, d.a, True)),
        (OfferAudience.__table__, _rows_arm(d, d.b, False)),
        (OfferControl.__table__, _rows_arm(d, d.b, True)),
        (RewardEvent.__table__, _rows_events(d)),
    ]
    if url.startswith("postgresql"):
        _copy(url, tables)
    else:
        for table, rows in tables:
            for chunk in _chunks(rows):
                with engine.begin() as conn:
                    conn.exec_driver_sql("PRAGMA cache_size = -1000000")  # 1 GB for the load
                    conn.execute(insert(table), chunk)  # type: ignore[arg-type]
    with engine.begin() as conn:
        conn.execute(text("ANALYZE"))
    engine.dispose()
    return time.perf_counter() - began


def _copy(url: str, tables: list[tuple[Any, Any]]) -> None:
    with psycopg.connect(url) as conn:
        for table, rows in tables:
            columns = [
                c.name for c in table.columns if c.name != "id" or table.name == "reward_members"
            ]
            sql = f"COPY {table.name} ({', '.join(columns)}) FROM STDIN"
            with conn.cursor() as cursor, cursor.copy(sql) as copy:
                for row in rows:
                    copy.write_row(
                        [
                            json.dumps(row[c])
                            if isinstance(row.get(c), dict | list)
                            else row.get(c)
                            for c in columns
                        ]
                    )
            conn.commit()
        if any(t.name == "reward_members" for t, _ in tables):
            conn.execute(
                "SELECT setval(pg_get_serial_sequence('reward_members', 'id'), "
                "(SELECT max(id) FROM reward_members))"
            )
            conn.commit()


async def measure(
    url: str, d: Data, rounds: int, *, numpy: bool = False, jit: bool = False
) -> dict[str, Any]:
    engine = create_hub_async_engine(url)
    session_maker = async_sessionmaker(engine, expire_on_commit=False)
    service = OfferResultsService(session_maker, None, 10_000, 100_000, 1000)  # type: ignore[arg-type]
    actor = Actor(name="bench", partner_id=str(d.a))

    async def bare(segments: bool = False, jit_off: bool = True, reference: bool = True) -> Any:
        """The aggregate alone: from the window's raw events (``reference``, the full
        aggregate the read used before the running totals) or from the running totals as
        the read now does (with its look for events dated ahead)."""
        async with session_maker() as session, session.begin():
            offer = await session.get(Offer, d.offer)
            assert offer is not None
            window = window_of(offer, datetime.now(UTC))
            if jit_off and url.startswith("postgresql"):
                await session.execute(text("SET LOCAL jit = off"))  # as arm_figures does
            rows = []
            for side in (d.a, d.b):
                source = (
                    EVENTS_SOURCE
                    if reference
                    else await totals_source(session, side, window, bounds(offer)[1])
                )
                query = arm_figures_query(
                    d.offer, side, window, 10_000, 100_000, "tier" if segments else None, source
                )
                rows += (await session.execute(query)).all()
            return rows

    async def read() -> Any:
        async with session_maker() as session, session.begin():
            await session.execute(delete(OfferResultAnswer))
        return await service.read(d.offer, d.a, None, actor)

    async def timed(case: Any, n: int) -> tuple[list[float], Any]:
        await case()  # warm-up (caches, plans)
        times = []
        result = None
        for _ in range(n):
            began = time.perf_counter()
            result = await case()
            times.append(time.perf_counter() - began)
        return times, result

    async with session_maker() as session, session.begin():  # a fill of its own each run
        await session.execute(delete(OfferResultFill).where(OfferResultFill.offer_id == d.offer))
    began = time.perf_counter()
    await ensure_filled(session_maker, d.offer, datetime.now(UTC))  # as a first read would
    fill_seconds = time.perf_counter() - began
    bare_times, bare_rows = await timed(bare, rounds)
    totals_times, totals_rows = await timed(lambda: bare(reference=False), rounds)
    read_times, answer = await timed(read, rounds)
    segment_times, segment_rows = await timed(lambda: bare(True), 1)
    segment_totals_times, segment_totals_rows = await timed(lambda: bare(True, reference=False), 1)
    jit_times: list[float] = []
    if jit and url.startswith("postgresql"):
        jit_times, _ = await timed(lambda: bare(False, jit_off=False), 1)
    numpy_seconds = await numpy_pipeline(session_maker, d) if numpy else None
    await engine.dispose()
    side = next(s for s in answer.sides if s.partner_id == d.a)
    truth = {str(r[0]): (int(r[2]), int(r[3])) for r in bare_rows[:2]}
    return {
        "fill_seconds": fill_seconds,
        "bare_seconds": statistics.median(bare_times),
        "bare_totals_seconds": statistics.median(totals_times),
        "read_seconds": statistics.median(read_times),
        "ratio_read_to_bare": statistics.median(read_times) / statistics.median(bare_times),
        "segments_bare_seconds": segment_times[0],
        "segments_bare_totals_seconds": segment_totals_times[0],
        "bare_with_jit_seconds": jit_times[0] if jit_times else None,
        "numpy_fetch_and_aggregate_seconds": numpy_seconds,
        "rounds": {"bare": bare_times, "bare_totals": totals_times, "read": read_times},
        "check": {
            "totals_equal_reference": sorted(map(tuple, totals_rows))
            == sorted(map(tuple, bare_rows)),
            "segment_totals_equal_reference": sorted(map(tuple, segment_totals_rows), key=repr)
            == sorted(map(tuple, segment_rows), key=repr),
            "true_people_responders_a": truth,
            "released_treated": [side.treated.people, side.treated.responders],
            "released_control": [side.control.people, side.control.responders],
            "lift": side.lift.absolute,
            "p_value": side.lift.p_value,
        },
    }


async def numpy_pipeline(session_maker: Any, d: Data) -> float:
    """The alternative: one row per event out of the database, aggregated with numpy."""
    from matching.measurement import AUDIENCE, CONTROLS, EVENTS, MEMBERS, RECORDS

    async with session_maker() as session:
        offer = await session.get(Offer, d.offer)
        window: Window = window_of(offer, datetime.now(UTC))
        began = time.perf_counter()
        arm = (
            select(AUDIENCE.c.customer_ref.label("ref"), literal(1).label("arm"))
            .where(AUDIENCE.c.offer_id == d.offer, AUDIENCE.c.partner_id == d.a)
            .union_all(
                select(CONTROLS.c.customer_ref, literal(0)).where(
                    CONTROLS.c.offer_id == d.offer, CONTROLS.c.partner_id == d.a
                )
            )
            .subquery()
        )
        stmt = (
            select(RECORDS.c.customer_ref, arm.c.arm, EVENTS.c.points, EVENTS.c.amount_minor)
            .select_from(
                EVENTS.join(MEMBERS, MEMBERS.c.id == EVENTS.c.member_id)
                .join(
                    RECORDS,
                    (RECORDS.c.partner_id == d.a)
                    & (RECORDS.c.id_type == MEMBERS.c.id_type)
                    & (RECORDS.c.match_key == MEMBERS.c.match_key),
                )
                .join(arm, arm.c.ref == RECORDS.c.customer_ref)
            )
            .where(
                EVENTS.c.partner_id == d.a,
                EVENTS.c.kind.in_(("earn", "redeem")),
                EVENTS.c.occurred_at >= window.start,
                EVENTS.c.occurred_at < window.end,
            )
        )
        rows = (await session.execute(stmt)).all()
    refs = np.fromiter((int(r[0][1:]) for r in rows), dtype=np.int64, count=len(rows))
    arms = np.fromiter((r[1] for r in rows), dtype=np.int8, count=len(rows))
    points = np.fromiter((r[2] for r in rows), dtype=np.int64, count=len(rows))
    per_person = np.minimum(np.bincount(refs, weights=points, minlength=d.people), 10_000)
    responded = np.bincount(refs, minlength=d.people) > 0
    arm_of = np.zeros(d.people, dtype=np.int8)
    arm_of[refs] = arms
    _ = [
        (int((responded & (arm_of == k)).sum()), float(per_person[arm_of == k].sum()))
        for k in (0, 1)
    ]
    return time.perf_counter() - began


def create_pg(url: str) -> str:
    name = f"bench_results_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return url.rsplit("/", 1)[0] + "/" + name


def drop_pg(url: str, db_url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {db_url.rsplit('/', 1)[1]} WITH (FORCE)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--people", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=5_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--keep-db", action="store_true", help="keep the PostgreSQL database")
    parser.add_argument("--numpy", action="store_true", help="also time the numpy alternative")
    parser.add_argument("--jit", action="store_true", help="also time PostgreSQL with its JIT")
    parser.add_argument("--sqlite-dir", default="", help="put (and keep) the SQLite file here")
    parser.add_argument(
        "--reuse", action="store_true", help="measure the SQLite file in --sqlite-dir again"
    )
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
    )
    args = parser.parse_args()
    d = Data(args.people, args.events)
    report: dict[str, Any] = {
        "people": args.people,
        "events": args.events,
        "goal_seconds": GOAL_SECONDS,
    }
    for backend in args.backends.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            where = args.sqlite_dir or tmp
            url = f"sqlite:///{where}/bench.db" if backend == "sqlite" else create_pg(args.pg_url)
            try:
                loaded = None
                if args.reuse and backend == "sqlite" and Path(where, "bench.db").exists():
                    d.adopt(url)
                else:
                    upgrade(url)
                    loaded = load(url, d)
                result = asyncio.run(measure(url, d, args.rounds, numpy=args.numpy, jit=args.jit))
                result["load_seconds"] = loaded
                result["meets_goal"] = result["read_seconds"] < GOAL_SECONDS
                report[backend] = result
                print(json.dumps({backend: result}, indent=2, default=str), flush=True)
            finally:
                if backend != "sqlite" and not args.keep_db:
                    drop_pg(args.pg_url, url)
                elif backend != "sqlite":
                    print(f"kept {url}", flush=True)
    out = Path(__file__).parent / "results" / "offer_results.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
