"""Brands in a rewards-sharing partnership, members with known consents, ledger checks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import create_engine, text

from hub.core.db import normalise_url
from tests.api.matching_helpers import Member, email, members, rec
from tests.conftest import Hub

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
