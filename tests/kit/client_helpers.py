"""Brands that talk to a live hub through the kit's HubClient, with their own OAuth clients."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import pandas as pd

from partners.kit.client import HubClient
from tests.conftest import Hub

SCOPES = [
    "identifiers:write",
    "overlap:read",
    "offers:read",
    "offers:write",
    "rewards:write",
    "rewards:read",
]


@dataclass
class Brand:
    id: str
    name: str
    client_id: str
    secret: str
    kit: HubClient

    @property
    def headers(self) -> dict[str, str]:
        """Raw API access, to check what the client says against the hub's own answer."""
        token = self.kit.token or self.kit.fetch_token()
        return {"Authorization": f"Bearer {token['access_token']}"}


def brand(
    hub: Hub, category: str = "airline", admin: HubClient | None = None, **options: Any
) -> Brand:
    """A partner and its client. With ``admin`` (an admin's HubClient) the admin calls go
    through the kit too, which waits out a rate limit where the test helpers would not."""
    if admin is None:
        partner = hub.create_partner(category)
        creds = hub.create_client(partner["id"], SCOPES)
    else:
        partner = admin.post(
            "/v1/partners", {"name": f"{category}-{uuid.uuid4().hex[:8]}", "category": category}
        )
        creds = admin.post(
            f"/v1/partners/{partner['id']}/clients", {"name": "integration", "scopes": SCOPES}
        )
    kit = HubClient(hub.url, creds["client_id"], creds["client_secret"], progress=False, **options)
    return Brand(partner["id"], partner["name"], creds["client_id"], creds["client_secret"], kit)


def partnership(hub: Hub, a: Brand, b: Brand, purposes: list[str], **terms: Any) -> str:
    response = hub.as_admin(
        "POST",
        "/v1/partnerships",
        json={"members": [a.id, b.id], "purposes": purposes, "min_audience": 10, **terms},
    )
    assert response.status_code == 201, response.text
    pid = str(response.json()["id"])
    for member in (a, b):
        member.kit.post(f"/v1/partnerships/{pid}/accept", creates=False)
    return pid


def customers(prefix: str, shared: int, own: int, **attribute: list[str]) -> pd.DataFrame:
    """Raw customer data as a brand holds it: ``shared`` people known to both brands (the same
    emails), ``own`` known only here; refs ``<prefix>NN``."""
    emails = [f"Shopper.{n}@Example.org " for n in range(shared)] + [
        f"{prefix}-only-{n}@example.org" for n in range(own)
    ]
    frame = pd.DataFrame(
        {
            "customer_ref": [f"{prefix}{n:02d}" for n in range(shared + own)],
            "email": emails,
            "consents": "analytics|joint_offers|rewards_sharing",
        }
    )
    for name, values in attribute.items():
        frame[f"attr.{name}"] = [values[n % len(values)] for n in range(shared + own)]
    return frame


def raw_pages(hub: Hub, headers: dict[str, str], path: str) -> list[Any]:
    """Every item of a list through plain HTTP at the hub's default page size."""
    items: list[Any] = []
    cursor = None
    while True:
        params = {"cursor": cursor} if cursor else {}
        page = hub.http.get(path, params=params, headers=headers)
        assert page.status_code == 200, page.text
        items += page.json()["items"]
        cursor = page.json()["next_cursor"]
        if not cursor:
            return items
