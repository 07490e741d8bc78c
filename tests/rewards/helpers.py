"""Brands in a rewards-sharing partnership, members with known consents, ledger checks."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.ext.asyncio import create_async_engine

from hub.core.db import async_url, normalise_url
from partners.rewards.jobs import settlement_lines
from tests.api.matching_helpers import Member, email, members, rec
from tests.conftest import Hub, launch_hub

SCOPES = ["identifiers:write", "rewards:write", "rewards:read", "offers:read", "offers:write"]
SHARE = ["analytics", "joint_offers", "rewards_sharing"]
NO_SHARE = ["analytics", "joint_offers"]


@dataclass
class Brands:
    a: Member
    b: Member
    partnership: str


def brands(hub: Hub, **terms: Any) -> Brands:
    terms.setdefault("purposes", ["rewards_sharing", "joint_offers", "analytics"])
    a, b, partnership = members(hub, scopes=[*SCOPES, "overlap:read"], **terms)
    return Brands(a, b, partnership)


def enrol(hub: Hub, member: Member, n: int | str, ref: str, consents: list[str]) -> None:
    member.upload(hub, [rec(email(f"m{n}"), ref, consents)])


def event(event_id: str, n: int | str, kind: str, points: int, **extra: Any) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "id_type": "email",
        "id_hash": email(f"m{n}"),
        "kind": kind,
        "points": points,
        "occurred_at": "2026-11-20T10:00:00+00:00",
        **extra,
    }


def send(hub: Hub, member: Member, events: list[dict[str, Any]]) -> Any:
    return member.post(hub, "/v1/rewards/events", {"events": events})


def balance(hub: Hub, member: Member, n: int | str) -> dict[str, Any]:
    response = member.get(hub, "/v1/rewards/balances", id_type="email", id_hash=email(f"m{n}"))
    assert response.status_code == 200, response.text
    return dict(response.json())


def ledger_problems(database_url: str) -> list[str]:
    """Every transaction balances, the ledger sums to zero, and each lot's remaining points
    equal its postings: the invariants checked after every rewards test."""
    engine = create_engine(normalise_url(database_url))
    problems = []
    try:
        with engine.connect() as conn:
            total = conn.execute(text("SELECT coalesce(sum(amount), 0) FROM reward_postings"))
            if total.scalar_one() != 0:
                problems.append("postings do not sum to zero")
            unbalanced = conn.execute(
                text("SELECT txn FROM reward_postings GROUP BY txn HAVING sum(amount) <> 0 LIMIT 5")
            ).all()
            problems += [f"transaction {t} unbalanced" for (t,) in unbalanced]
            lots = conn.execute(
                text(
                    "SELECT l.id FROM reward_lots l LEFT JOIN reward_postings p ON p.lot_id = l.id "
                    "GROUP BY l.id, l.remaining HAVING coalesce(sum(p.amount), 0) <> l.remaining "
                    "LIMIT 5"
                )
            ).all()
            problems += [f"lot {i} disagrees with its postings" for (i,) in lots]
    finally:
        engine.dispose()
    return problems


@contextmanager
def launch_jobs_hub(backend: str, data_dir: Path, **env: str) -> Iterator[Hub]:
    """A hub whose scheduler runs in-process; jobs run only when a test asks."""
    quiet = {
        f"HUB_JOBS_{name.upper()}": value
        for name, value in {
            "rewards_sync_seconds": "86400",
            "webhook_redelivery_seconds": "86400",
            "settlement_cron": "0 0 1 1 *",
            "points_expiry_cron": "0 0 1 1 *",
            "retention_purge_cron": "0 0 1 1 *",
            "match_key_rotation_cron": "0 0 1 1 *",
        }.items()
    }
    with launch_hub(backend, data_dir, HUB_JOBS_RUN_IN_SERVE="true", **quiet, **env) as running:
        yield running


def run_job(hub: Hub, name: str) -> dict[str, Any]:
    """Ask for a run and wait for it to finish; the finished run."""
    before = {r["id"] for r in hub.as_admin("GET", f"/v1/jobs/{name}/runs").json()["items"]}
    requested = hub.as_admin("POST", f"/v1/jobs/{name}/run")
    assert requested.status_code == 202, requested.text
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        runs = hub.as_admin("GET", f"/v1/jobs/{name}/runs").json()["items"]
        done = [r for r in runs if r["id"] not in before and r["finished_at"]]
        if done:
            assert done[0]["status"] == "succeeded", done[0]
            return dict(done[0])
        time.sleep(0.1)
    raise AssertionError(f"{name} did not run")


def feed(hub: Hub, member: Member, cursor: str | None = None) -> dict[str, Any]:
    params = {"cursor": cursor} if cursor else {}
    response = member.get(hub, "/v1/rewards/feed", **params)
    assert response.status_code == 200, response.text
    return dict(response.json())


def move_uses_to(hub: Hub, when: datetime) -> None:
    """Settlement closes past periods only: date the uses so far into a past period."""
    from sqlalchemy import create_engine, update

    from hub.core.db import normalise_url
    from partners.rewards.models import RewardLotUse

    engine = create_engine(normalise_url(hub.database_url))
    try:
        with engine.begin() as conn:
            conn.execute(update(RewardLotUse).values(at=when))
    finally:
        engine.dispose()


def recompute(hub: Hub, start: datetime, end: datetime) -> list[dict[str, Any]]:
    async def lines() -> list[dict[str, Any]]:
        from sqlalchemy.ext.asyncio import AsyncSession

        engine = create_async_engine(async_url(hub.database_url))
        try:
            async with AsyncSession(engine) as session:
                return await settlement_lines(session, start, end, 1)
        finally:
            await engine.dispose()

    return asyncio.run(lines())
