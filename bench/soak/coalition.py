"""Seeding a soak run through the API, as an operator and four brands would: the brands and
their clients, webhooks with signing secrets, a partnership for every pair (all purposes),
each brand's people by bulk upload, two joint offers, and a console account."""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.soak.population import upload_file
from bench.soak.receiver import Receiver
from bench.soak.stack import Stack

BRANDS = (("air", "airline"), ("hotel", "hotel"), ("coffee", "coffee"), ("bank", "bank_card"))
SCOPES = [
    "identifiers:write",
    "overlap:read",
    "offers:read",
    "offers:write",
    "rewards:write",
    "rewards:read",
    "audit:read",
]
CONSOLE_USER, CONSOLE_PASSWORD = "soak-admin", "soak correct horse battery staple"


@dataclass
class Brand:
    code: str
    index: int
    partner_id: str
    client_id: str
    client_secret: str
    offer_id: str = ""
    partnerships: list[str] = field(default_factory=list)


@dataclass
class Coalition:
    urls: list[str]
    admin_id: str
    admin_secret: str
    brands: list[Brand]
    population: int
    upload_files: dict[str, Path] = field(default_factory=dict)


def token(http: httpx.Client, client_id: str, secret: str) -> str:
    got = http.post(
        "/oauth/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret)
    )
    got.raise_for_status()
    return str(got.json()["access_token"])


def _ok(response: httpx.Response, *codes: int) -> dict[str, Any]:
    if response.status_code not in (codes or (200, 201)):
        raise RuntimeError(f"{response.request.method} {response.request.url}: {response.text}")
    return dict(response.json())


def send_upload(http: httpx.Client, headers: dict[str, str], path: Path) -> str:
    """A bulk upsert of ``path``; its id."""
    with path.open("rb") as body:
        sent = http.post(
            "/v1/identifiers/uploads",
            params={"mode": "upsert"},
            content=body,
            headers={
                **headers,
                "Content-Type": "application/x-ndjson",
                "Content-Encoding": "gzip",
            },
        )
    return str(_ok(sent, 202)["id"])


def wait_for_upload(http: httpx.Client, headers: dict[str, str], upload_id: str) -> dict[str, Any]:
    while True:
        status = _ok(http.get(f"/v1/identifiers/uploads/{upload_id}", headers=headers))
        if status["status"] in ("completed", "failed"):
            if status["status"] == "failed":
                raise RuntimeError(f"seeding upload failed: {status}")
            return status
        time.sleep(0.5)


def seed(
    stack: Stack, receiver: Receiver, population: int, files_dir: Path, preload: int = 0
) -> Coalition:
    """The coalition, its brands holding ``population`` people each, or ``preload`` (people
    0..preload-1, the population among them) when it is larger."""
    http = httpx.Client(base_url=stack.urls[0], timeout=120)
    admin = {"Authorization": f"Bearer {token(http, stack.admin_id, stack.admin_secret)}"}
    brands: list[Brand] = []
    for index, (code, category) in enumerate(BRANDS):
        partner = _ok(
            http.post("/v1/partners", json={"name": code, "category": category}, headers=admin)
        )
        pid = partner["id"]
        _ok(
            http.patch(
                f"/v1/partners/{pid}", json={"webhook_url": receiver.url(pid)}, headers=admin
            )
        )
        receiver.secrets[pid] = _ok(
            http.post(f"/v1/partners/{pid}/webhook-secret", headers=admin), 201
        )["secret"]
        client = _ok(
            http.post(
                f"/v1/partners/{pid}/clients",
                json={"name": "soak", "scopes": SCOPES},
                headers=admin,
            )
        )
        brands.append(Brand(code, index, pid, client["client_id"], client["client_secret"]))
    headers = {
        b.code: {"Authorization": f"Bearer {token(http, b.client_id, b.client_secret)}"}
        for b in brands
    }
    for a, b in itertools.combinations(brands, 2):
        partnership = _ok(
            http.post(
                "/v1/partnerships",
                json={
                    "members": [a.partner_id, b.partner_id],
                    "purposes": ["analytics", "joint_offers", "rewards_sharing"],
                    "min_audience": 50,
                },
                headers=admin,
            )
        )["id"]
        for member in (a, b):
            _ok(http.post(f"/v1/partnerships/{partnership}/accept", headers=headers[member.code]))
            member.partnerships.append(partnership)
    coalition = Coalition(stack.urls, stack.admin_id, stack.admin_secret, brands, population)
    # Sent together, waited for together: the worker applies them in turn.
    rows = max(population, preload)
    sent = [
        (brand, send_upload(http, headers[brand.code], upload_file(files_dir, brand.code, rows)))
        for brand in brands
    ]
    for brand, upload_id in sent:
        wait_for_upload(http, headers[brand.code], upload_id)
    for proposer, other in ((brands[0], brands[1]), (brands[2], brands[3])):
        shared = next(p for p in proposer.partnerships if p in other.partnerships)
        offer = _ok(
            http.post(
                "/v1/offers",
                json={
                    "partnership_id": shared,
                    "title": "Soak: fly and stay",
                    "points": {proposer.partner_id: 500, other.partner_id: 500},
                },
                headers=headers[proposer.code],
            ),
            201,
        )["id"]
        _ok(http.post(f"/v1/offers/{offer}/approve", headers=headers[other.code]))
        proposer.offer_id = other.offer_id = offer
    stack.cli(
        "admin", "users", "create", CONSOLE_USER, env={"HUB_CONSOLE_PASSWORD": CONSOLE_PASSWORD}
    )
    http.close()
    return coalition
