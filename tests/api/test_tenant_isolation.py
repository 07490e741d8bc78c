"""A partner's token never reaches another partner's objects nor any admin endpoint.

Every partner token tries every other partner's objects and every admin endpoint; nothing
leaks (403/404) and nothing changes (the database is compared before and after).
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from hub.core.auth import PARTNER_SCOPES
from tests.conftest import Hub, table_counts

FAKE_ID = "01a20000-0000-7000-8000-000000000000"


class Brand:
    def __init__(self, hub: Hub, category: str) -> None:
        self.partner = hub.create_partner(category)
        self.id = self.partner["id"]
        self.client = hub.create_client(self.id, list(PARTNER_SCOPES))
        token = hub.token(self.client["client_id"], self.client["client_secret"])
        self.headers = {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def coalition(hub: Hub) -> dict[str, Any]:
    brands = {name: Brand(hub, name) for name in ("airline", "hotel", "coffee")}
    partnerships = {}
    for x, y in itertools.combinations(brands, 2):
        response = hub.as_admin(
            "POST",
            "/v1/partnerships",
            json={"members": [brands[x].id, brands[y].id], "purposes": ["analytics"]},
        )
        assert response.status_code == 201, response.text
        partnerships[frozenset((x, y))] = response.json()["id"]
    return {"brands": brands, "partnerships": partnerships}


def admin_requests(target: Brand, partnership_id: str) -> list[tuple[str, str, Any]]:
    p = target.id
    c = target.client["client_id"]
    return [
        ("GET", "/v1/partners", None),
        ("POST", "/v1/partners", {"name": "Intruder", "category": "airline"}),
        ("GET", f"/v1/partners/{p}", None),
        ("PATCH", f"/v1/partners/{p}", {"status": "suspended"}),
        ("PATCH", f"/v1/partners/{p}", {"webhook_url": "https://attacker.example/hook"}),
        ("GET", f"/v1/partners/{p}/clients", None),
        ("POST", f"/v1/partners/{p}/clients", {"name": "x", "scopes": ["overlap:read"]}),
        ("DELETE", f"/v1/partners/{p}/clients/{c}", None),
        ("POST", "/v1/partnerships", {"members": [p, FAKE_ID], "purposes": ["analytics"]}),
        ("PATCH", f"/v1/partnerships/{partnership_id}", {"status": "ended"}),
        # Partners read the audit entries that concern them (audit:read), never another's.
        ("GET", f"/v1/audit?partner_id={p}", None),
        ("GET", f"/v1/audit?concerns={p}", None),
    ]


def test_partner_tokens_reach_no_admin_endpoint_and_no_other_partner(
    hub: Hub, coalition: dict[str, Any]
) -> None:
    brands: dict[str, Brand] = coalition["brands"]
    partnerships: dict[frozenset[str], str] = coalition["partnerships"]
    before = table_counts(hub.database_url)
    attempts = 0
    for attacker_name, victim_name in itertools.permutations(brands, 2):
        attacker, victim = brands[attacker_name], brands[victim_name]
        third = next(n for n in brands if n not in (attacker_name, victim_name))
        foreign_partnership = partnerships[frozenset((victim_name, third))]
        for method, path, body in admin_requests(victim, foreign_partnership):
            response = hub.http.request(method, path, json=body, headers=attacker.headers)
            attempts += 1
            assert response.status_code == 403, (attacker_name, method, path, response.text)
            assert 'error="insufficient_scope"' in response.headers["www-authenticate"]
        # Partner endpoints on a partnership the attacker is not in: invisible.
        for method, path in (
            ("GET", f"/v1/partnerships/{foreign_partnership}"),
            ("POST", f"/v1/partnerships/{foreign_partnership}/accept"),
        ):
            response = hub.http.request(method, path, headers=attacker.headers)
            attempts += 1
            assert response.status_code == 404, (attacker_name, method, path, response.text)
            assert victim.id not in response.text
        # The victim's token, introspected by the attacker's client: inactive.
        victim_token = victim.headers["Authorization"].split()[1]
        introspected = hub.http.post(
            "/oauth/introspect",
            data={"token": victim_token},
            auth=(attacker.client["client_id"], attacker.client["client_secret"]),
        )
        assert introspected.json() == {"active": False}
    assert attempts == 6 * 14
    assert table_counts(hub.database_url) == before
    for brand in brands.values():
        assert hub.as_admin("GET", f"/v1/partners/{brand.id}").json()["status"] == "active"
        assert hub.http.get("/v1/me", headers=brand.headers).status_code == 200


def test_a_partner_lists_only_its_own_partnerships(hub: Hub, coalition: dict[str, Any]) -> None:
    brands: dict[str, Brand] = coalition["brands"]
    for name, brand in brands.items():
        listed = hub.http.get("/v1/partnerships", headers=brand.headers).json()["items"]
        members = [{m["partner_id"] for m in p["members"]} for p in listed]
        assert len(listed) == 2, name
        assert all(brand.id in m for m in members), name
        me = hub.http.get("/v1/me", headers=brand.headers).json()
        assert me["partner"]["id"] == brand.id
        assert {p["id"] for p in me["partnerships"]} == {p["id"] for p in listed}


def test_admins_may_not_act_as_a_partner(hub: Hub, coalition: dict[str, Any]) -> None:
    partnership_id = next(iter(coalition["partnerships"].values()))
    response = hub.as_admin("POST", f"/v1/partnerships/{partnership_id}/accept")
    assert response.status_code == 403
    assert hub.as_admin("GET", f"/v1/partnerships/{partnership_id}").json()["status"] == "proposed"
