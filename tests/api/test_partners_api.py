"""The coalition admin's work: partners, their clients, partnerships; and GET /v1/me."""

from __future__ import annotations

import time
from typing import Any

from tests.conftest import Hub, execute_sql


def audit_actions(hub: Hub, target_id: str) -> list[str]:
    items = hub.as_admin("GET", "/v1/audit", params={"target_id": target_id}).json()["items"]
    return [e["action"] for e in reversed(items)]


def test_onboard_read_update_a_partner(hub: Hub) -> None:
    created = hub.create_partner("airline", webhook_url="http://127.0.0.1:9999/hooks")
    assert created["status"] == "active"
    assert created["webhook_url"] == "http://127.0.0.1:9999/hooks"
    read = hub.as_admin("GET", f"/v1/partners/{created['id']}").json()
    assert read == created
    updated = hub.as_admin(
        "PATCH",
        f"/v1/partners/{created['id']}",
        json={"name": created["name"] + "-x", "webhook_url": None},
    ).json()
    assert updated["name"] == created["name"] + "-x"
    assert updated["webhook_url"] is None
    assert updated["category"] == "airline"
    assert audit_actions(hub, created["id"]) == ["partner.onboarded", "partner.updated"]


def test_suspend_and_reactivate_are_audited(hub: Hub) -> None:
    partner = hub.create_partner("hotel")
    path = f"/v1/partners/{partner['id']}"
    assert hub.as_admin("PATCH", path, json={"status": "suspended"}).json()["status"] == "suspended"
    # Suspending twice changes nothing more.
    assert hub.as_admin("PATCH", path, json={"status": "suspended"}).json()["status"] == "suspended"
    listed = hub.as_admin(
        "GET", "/v1/partners", params={"status": "suspended", "limit": 500}
    ).json()
    assert partner["id"] in {p["id"] for p in listed["items"]}
    assert hub.as_admin("PATCH", path, json={"status": "active"}).json()["status"] == "active"
    assert audit_actions(hub, partner["id"]) == [
        "partner.onboarded",
        "partner.suspended",
        "partner.reactivated",
    ]


def test_partner_list_pages_are_stable(hub: Hub) -> None:
    ids = [hub.create_partner("coffee")["id"] for _ in range(7)]
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        page = hub.as_admin("GET", "/v1/partners", params=params).json()
        seen.extend(p["id"] for p in page["items"])
        pages += 1
        if pages == 1:
            hub.create_partner(
                "coffee"
            )  # a partner added mid-listing is neither skipped nor doubled
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert len(seen) == len(set(seen))
    assert set(ids) <= set(seen)
    assert seen == sorted(seen)  # UUIDv7: creation order


def test_a_client_secret_is_shown_once_and_stored_hashed(hub: Hub) -> None:
    partner = hub.create_partner("bank_card")
    created = hub.create_client(partner["id"], ["overlap:read", "rewards:read"])
    assert created["client_secret"].startswith("cs_")
    listed = hub.as_admin("GET", f"/v1/partners/{partner['id']}/clients").json()["items"]
    assert len(listed) == 1
    assert "client_secret" not in listed[0]
    assert created["client_secret"] not in str(listed)
    from sqlalchemy import create_engine, text

    from hub.core.db import normalise_url

    engine = create_engine(normalise_url(hub.database_url))
    with engine.connect() as conn:
        stored = conn.execute(
            text("SELECT secret_hash FROM oauth_clients WHERE client_id = :c"),
            {"c": created["client_id"]},
        ).scalar_one()
    engine.dispose()
    assert stored.startswith("$argon2id$")
    assert created["client_secret"] not in stored


def test_client_scopes_and_auth_methods_are_checked(hub: Hub) -> None:
    partner = hub.create_partner("hotel")
    path = f"/v1/partners/{partner['id']}/clients"
    admin_scope = hub.as_admin("POST", path, json={"name": "x", "scopes": ["admin"]})
    assert admin_scope.status_code == 422
    no_jwks = hub.as_admin(
        "POST",
        path,
        json={"name": "x", "scopes": ["overlap:read"], "auth_method": "private_key_jwt"},
    )
    assert no_jwks.status_code == 422
    private = hub.as_admin(
        "POST",
        path,
        json={
            "name": "x",
            "scopes": ["overlap:read"],
            "auth_method": "private_key_jwt",
            "jwks": {"keys": [{"kty": "oct", "k": "c2VjcmV0"}]},
        },
    )
    assert private.status_code == 422
    assert "private" in private.json()["detail"]
    assert hub.as_admin("GET", path).json()["items"] == []


def test_revoking_a_client_twice_is_harmless(hub: Hub) -> None:
    partner = hub.create_partner("coffee")
    client = hub.create_client(partner["id"])
    path = f"/v1/partners/{partner['id']}/clients/{client['client_id']}"
    first = hub.as_admin("DELETE", path)
    second = hub.as_admin("DELETE", path)
    assert first.json()["status"] == second.json()["status"] == "revoked"
    assert audit_actions(hub, client["client_id"]).count("client.revoked") == 1
    other = hub.create_partner("coffee")
    wrong_owner = hub.as_admin(
        "DELETE", f"/v1/partners/{other['id']}/clients/{client['client_id']}"
    )
    assert wrong_owner.status_code == 404


def test_partnership_lifecycle(hub: Hub) -> None:
    airline, _, airline_headers = hub.partner_with_token("airline")
    hotel, _, hotel_headers = hub.partner_with_token("hotel")
    proposed = hub.as_admin(
        "POST",
        "/v1/partnerships",
        json={"members": [airline["id"], hotel["id"]], "purposes": ["analytics", "joint_offers"]},
    )
    assert proposed.status_code == 201
    p = proposed.json()
    assert p["status"] == "proposed"
    assert p["min_audience"] == 50
    assert p["purposes"] == ["analytics", "joint_offers"]
    path = f"/v1/partnerships/{p['id']}"

    premature = hub.as_admin("PATCH", path, json={"status": "active"})
    assert premature.status_code == 409
    assert "accept" in premature.json()["fix"]

    after_one = hub.http.post(f"{path}/accept", headers=airline_headers).json()
    assert after_one["status"] == "proposed"
    assert hub.http.post(f"{path}/accept", headers=airline_headers).json()["status"] == "proposed"
    after_both = hub.http.post(f"{path}/accept", headers=hotel_headers).json()
    assert after_both["status"] == "active"
    assert all(m["accepted"] for m in after_both["members"])
    assert hub.http.get(path, headers=hotel_headers).json()["status"] == "active"

    duplicate = hub.as_admin(
        "POST",
        "/v1/partnerships",
        json={"members": [hotel["id"], airline["id"]], "purposes": ["analytics"]},
    )
    assert duplicate.status_code == 409

    assert hub.as_admin("PATCH", path, json={"status": "suspended"}).json()["status"] == "suspended"
    assert hub.as_admin("PATCH", path, json={"status": "active"}).json()["status"] == "active"
    assert hub.as_admin("PATCH", path, json={"status": "ended"}).json()["status"] == "ended"
    reopened = hub.as_admin("PATCH", path, json={"status": "active"})
    assert reopened.status_code == 409
    assert audit_actions(hub, p["id"]) == [
        "partnership.proposed",
        "partnership.accepted",
        "partnership.accepted",
        "partnership.activated",
        "partnership.suspended",
        "partnership.resumed",
        "partnership.ended",
    ]
    # Once ended, the pair may start again.
    again = hub.as_admin(
        "POST",
        "/v1/partnerships",
        json={"members": [hotel["id"], airline["id"]], "purposes": ["analytics"]},
    )
    assert again.status_code == 201


def test_competitors_need_the_admins_explicit_consent(hub: Hub) -> None:
    a = hub.create_partner("airline")
    b = hub.create_partner("airline")
    body = {"members": [a["id"], b["id"]], "purposes": ["rewards_sharing"], "epsilon": 0.5}
    assert hub.as_admin("POST", "/v1/partnerships", json=body).status_code == 422
    allowed = hub.as_admin("POST", "/v1/partnerships", json={**body, "allow_competitors": True})
    assert allowed.status_code == 201
    assert allowed.json()["allow_competitors"] is True
    assert allowed.json()["epsilon"] == 0.5


def test_me_tells_a_caller_who_it_is(hub: Hub) -> None:
    admin = hub.as_admin("GET", "/v1/me").json()
    assert admin == {
        "client_id": hub.admin_id,
        "partner": None,
        "scopes": ["admin"],
        "partnerships": [],
    }
    partner, client, headers = hub.partner_with_token("coffee")
    me = hub.http.get("/v1/me", headers=headers).json()
    assert me["client_id"] == client["client_id"]
    assert me["partner"]["name"] == partner["name"]
    assert me["scopes"] == sorted(client["scopes"])


def test_idempotent_looking_accept_by_a_non_member_is_404(hub: Hub) -> None:
    a = hub.create_partner("airline")
    b = hub.create_partner("hotel")
    _, _, outsider = hub.partner_with_token("coffee")
    p = hub.as_admin(
        "POST", "/v1/partnerships", json={"members": [a["id"], b["id"]], "purposes": ["analytics"]}
    )
    assert (
        hub.http.post(f"/v1/partnerships/{p.json()['id']}/accept", headers=outsider).status_code
        == 404
    )


def test_me_shows_a_change_at_once_in_the_process_that_made_it(hub: Hub) -> None:
    partner, _, headers = hub.partner_with_token("coffee")
    hotel = hub.create_partner("hotel")
    assert hub.http.get("/v1/me", headers=headers).json()["partnerships"] == []  # now cached
    hub.as_admin("PATCH", f"/v1/partners/{partner['id']}", json={"name": partner["name"] + "-2"})
    proposed = hub.as_admin(
        "POST",
        "/v1/partnerships",
        json={"members": [partner["id"], hotel["id"]], "purposes": ["analytics"]},
    ).json()
    me = hub.http.get("/v1/me", headers=headers).json()
    assert me["partner"]["name"] == partner["name"] + "-2"
    assert [(p["id"], p["status"]) for p in me["partnerships"]] == [(proposed["id"], "proposed")]
    accepted = hub.http.post(f"/v1/partnerships/{proposed['id']}/accept", headers=headers)
    assert accepted.status_code == 200
    members = hub.http.get("/v1/me", headers=headers).json()["partnerships"][0]["members"]
    assert {m["partner_id"]: m["accepted"] for m in members} == {
        partner["id"]: True,
        hotel["id"]: False,
    }


def test_me_shows_another_writers_change_within_the_poll_interval(hub: Hub) -> None:
    partner, _, headers = hub.partner_with_token("bank")
    assert hub.http.get("/v1/me", headers=headers).json()["partner"]["name"] == partner["name"]
    # Another process (here: a plain SQL connection, which this server cannot observe) renames it.
    execute_sql(
        hub.database_url,
        "UPDATE partners SET name = :name WHERE name = :old",
        name=partner["name"] + "-renamed",
        old=partner["name"],
    )
    poll = hub.app.state.settings.oauth.revocation_poll_seconds
    deadline = time.monotonic() + poll + 2.0
    seen = partner["name"]
    while seen != partner["name"] + "-renamed" and time.monotonic() < deadline:
        time.sleep(0.05)
        seen = hub.http.get("/v1/me", headers=headers).json()["partner"]["name"]
    assert seen == partner["name"] + "-renamed"
