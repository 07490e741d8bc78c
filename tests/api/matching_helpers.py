"""Two partners in an active partnership, with records whose overlap the test knows."""

from __future__ import annotations

import mmap
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import numpy as np
from sqlalchemy import create_engine, update

from hub.core.db import normalise_url
from matching.models import OverlapQuery
from partners.kit import hash_identifier
from tests.conftest import Hub

ALL = ["analytics", "joint_offers", "rewards_sharing"]
SCOPES = ["overlap:read", "identifiers:write", "offers:read", "offers:write"]


def email(n: int | str) -> str:
    return hash_identifier("email", f"shopper{n}@example.org")


def phone(n: int) -> str:
    return hash_identifier("phone", f"+4420{n:08d}")


def rec(
    key: str,
    ref: str,
    consents: list[str] | None = None,
    id_type: str = "email",
    **attributes: str,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id_type": id_type,
        "id_hash": key,
        "customer_ref": ref,
        "consents": ALL if consents is None else consents,
    }
    if attributes:
        out["attributes"] = attributes
    return out


@dataclass
class Member:
    id: str
    headers: dict[str, str]

    def upload(self, hub: Hub, records: list[dict[str, Any]]) -> None:
        for start in range(0, len(records), 10_000):
            response = hub.http.post(
                "/v1/identifiers",
                json={"records": records[start : start + 10_000]},
                headers=self.headers,
            )
            assert response.status_code == 200, response.text

    def consents(self, hub: Hub, ref: str, consents: list[str]) -> None:
        response = hub.http.post(
            "/v1/identifiers/consents",
            json={"updates": [{"customer_ref": ref, "consents": consents}]},
            headers=self.headers,
        )
        assert response.status_code == 200, response.text

    def get(self, hub: Hub, path: str, **params: Any) -> Any:
        return hub.http.get(path, params=params, headers=self.headers)

    def post(self, hub: Hub, path: str, body: Any = None) -> Any:
        return hub.http.post(path, json=body, headers=self.headers)


def members(
    hub: Hub,
    *,
    purposes: list[str] | None = None,
    min_audience: int = 10,
    categories: tuple[str, str] = ("airline", "hotel"),
    activate: bool = True,
    scopes: list[str] | None = None,
    **terms: Any,
) -> tuple[Member, Member, str]:
    a_partner, _, a_headers = hub.partner_with_token(categories[0], scopes or SCOPES)
    b_partner, _, b_headers = hub.partner_with_token(categories[1], scopes or SCOPES)
    a, b = Member(a_partner["id"], a_headers), Member(b_partner["id"], b_headers)
    response = hub.as_admin(
        "POST",
        "/v1/partnerships",
        json={
            "members": [a.id, b.id],
            "purposes": purposes or ["analytics", "joint_offers"],
            "min_audience": min_audience,
            **terms,
        },
    )
    assert response.status_code in (200, 201), response.text
    partnership = response.json()["id"]
    if activate:
        for member in (a, b):
            accepted = member.post(hub, f"/v1/partnerships/{partnership}/accept")
            assert accepted.status_code == 200, accepted.text
    return a, b, partnership


def overlap(
    hub: Hub, member: Member, partnership: str, purpose: str = "analytics", **kw: Any
) -> Any:
    return member.get(hub, f"/v1/partnerships/{partnership}/overlap", purpose=purpose, **kw)


def move_answers_back(hub: Hub, partnership: str, by: timedelta) -> None:
    """Date the partnership's answers ``by`` ago (a budget period passing, without waiting)."""
    engine = create_engine(normalise_url(hub.database_url))
    try:
        with engine.begin() as conn:
            conn.execute(
                update(OverlapQuery)
                .where(OverlapQuery.partnership_id == UUID(partnership))
                .values(answered_at=datetime.now(UTC) - by)
            )
    finally:
        engine.dispose()


def file_backed(array: Any) -> bool:
    """True when the array's memory maps a file (its chain of bases holds a memory map)."""
    while array is not None:
        if isinstance(array, np.memmap | mmap.mmap):
            return True
        array = getattr(array, "base", None)
    return False
