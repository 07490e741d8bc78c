"""Admin endpoints of webhooks: secrets shown once and kept sealed, the delivery list,
replays, guards and errors; retention; the scheduled job."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from uuid import UUID

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from hub.core.db import create_hub_sync_engine, writing
from hub.models import metadata
from partners.webhooks.jobs import webhook_redelivery
from partners.webhooks.service import purge_deliveries
from tests.conftest import Hub, execute_sql
from tests.webhooks.helpers import (
    FAST,
    Receiver,
    clear_deliveries,
    feed_items,
    new_secret,
    queue,
    run,
    send_due,
)


@pytest.fixture(autouse=True)
def no_deliveries_left_over(hub: Hub) -> None:
    clear_deliveries(hub)


def stored_text(hub: Hub) -> str:
    """Every row of every table, as text (and on SQLite the database files' bytes)."""
    engine = create_hub_sync_engine(hub.database_url)
    dumped = []
    try:
        with engine.connect() as conn:
            for table in metadata.sorted_tables:
                for row in conn.execute(select(table)):
                    dumped.append(repr(tuple(row)))
    finally:
        engine.dispose()
    if hub.database_url.startswith("sqlite"):
        for path in Path(hub.database_url.removeprefix("sqlite:///")).parent.glob("hub.db*"):
            dumped.append(path.read_bytes().decode("latin-1"))
    return "\n".join(dumped)


def test_the_secret_is_shown_once_and_stored_only_encrypted(hub: Hub) -> None:
    partner = hub.create_partner("airline", webhook_url="http://127.0.0.1:9/hook")
    response = hub.as_admin("POST", f"/v1/partners/{partner['id']}/webhook-secret")
    assert response.status_code == 201
    secret = response.json()["secret"]
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret[6:])) == 32
    assert "secret" not in json.dumps(hub.as_admin("GET", f"/v1/partners/{partner['id']}").json())

    stored = stored_text(hub)
    assert secret not in stored
    assert secret.removeprefix("whsec_") not in stored
    raw = base64.b64decode(secret[6:]).decode("latin-1")
    assert raw not in stored
    [(version, sealed)] = execute_sql(
        hub.database_url,
        "SELECT key_version, sealed FROM webhook_secrets WHERE partner_id = "
        "(SELECT id FROM partners WHERE name = :name)",
        name=partner["name"],
    )
    assert version >= 1
    assert len(bytes(sealed)) > 32

    audit = hub.as_admin("GET", "/v1/audit", params={"target_id": partner["id"]}).json()
    rotated = [e for e in audit["items"] if e["action"] == "webhook.secret_rotated"]
    assert len(rotated) == 1
    assert secret not in json.dumps(audit)


def test_an_idempotent_retry_does_not_show_the_secret_again(hub: Hub) -> None:
    partner = hub.create_partner("hotel")
    path = f"/v1/partners/{partner['id']}/webhook-secret"
    first = hub.as_admin("POST", path, headers={"Idempotency-Key": "secret-1"})
    again = hub.as_admin("POST", path, headers={"Idempotency-Key": "secret-1"})
    assert first.status_code == again.status_code == 201
    assert first.json()["secret"].startswith("whsec_")
    assert again.json().get("secret") != first.json()["secret"]


def test_after_a_rotation_webhooks_verify_with_the_new_secret_only(hub: Hub) -> None:
    receiver = Receiver().start()
    try:
        partner = hub.create_partner("coffee", webhook_url=receiver.url)
        old = new_secret(hub, partner["id"])
        new = new_secret(hub, partner["id"])
        assert new != old
        receiver.secret = new
        [delivery_id] = queue(hub, partner["id"], feed_items(2))
        assert send_due(hub)["delivered"] == 1
        [request] = receiver.requests
        assert request.webhook_id == delivery_id
        assert receiver.verifies(new, request)
        assert not receiver.verifies(old, request)
    finally:
        receiver.stop()
    audit = hub.as_admin("GET", "/v1/audit", params={"target_id": partner["id"]}).json()
    assert [e["action"] for e in audit["items"]].count("webhook.secret_rotated") == 2


def test_a_secret_for_an_unknown_partner_is_404(hub: Hub) -> None:
    response = hub.as_admin("POST", f"/v1/partners/{UUID(int=7)}/webhook-secret")
    assert response.status_code == 404


def test_the_delivery_list_pages_newest_first_and_filters(hub: Hub) -> None:
    one = hub.create_partner("bank", webhook_url="http://127.0.0.1:9/hook")
    two = hub.create_partner("bank", webhook_url="http://127.0.0.1:9/hook")
    ids = queue(hub, one["id"], feed_items(5), batch=1)
    other = queue(hub, two["id"], feed_items(1))
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2, "partner_id": one["id"], "status": "pending"}
        if cursor:
            params["cursor"] = cursor
        page = hub.as_admin("GET", "/v1/webhooks/deliveries", params=params).json()
        seen += [item["id"] for item in page["items"]]
        assert all(item["item_count"] == 1 for item in page["items"])
        assert all("payload" not in item for item in page["items"])
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == list(reversed(ids))
    everything = hub.as_admin("GET", "/v1/webhooks/deliveries").json()["items"]
    assert next(d["id"] for d in everything) == other[0]
    delivered = hub.as_admin("GET", "/v1/webhooks/deliveries", params={"status": "delivered"})
    assert delivered.json()["items"] == []


def test_a_bad_status_filter_or_cursor_is_a_400_problem(hub: Hub) -> None:
    for params in ({"status": "lost"}, {"cursor": "not-a-cursor"}):
        response = hub.as_admin("GET", "/v1/webhooks/deliveries", params=params)
        assert response.status_code == 400, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["fix"]


def test_replaying_an_unknown_delivery_is_404(hub: Hub) -> None:
    response = hub.as_admin("POST", "/v1/webhooks/deliveries/msg_0123/replay")
    assert response.status_code == 404


def test_partner_tokens_cannot_use_the_webhook_admin_endpoints(hub: Hub) -> None:
    partner, _, headers = hub.partner_with_token("airline", ["rewards:read"])
    for method, path in (
        ("GET", "/v1/webhooks/deliveries"),
        ("GET", "/v1/webhooks/deliveries?status=dead"),
        ("POST", f"/v1/partners/{partner['id']}/webhook-secret"),
        ("POST", "/v1/webhooks/deliveries/msg_0123/replay"),
    ):
        response = hub.http.request(method, path, headers=headers)
        assert response.status_code == 403, (method, path, response.text)
        assert "insufficient_scope" in response.headers["www-authenticate"]


def test_finished_deliveries_are_purged_after_the_retention_period(hub: Hub) -> None:
    receiver = Receiver().start()
    try:
        partner = hub.create_partner("hotel", webhook_url=receiver.url)
        receiver.secret = new_secret(hub, partner["id"])
        delivered = queue(hub, partner["id"], feed_items(2), batch=1)
        assert send_due(hub)["delivered"] == 2
    finally:
        receiver.stop()
    pending = queue(hub, partner["id"], feed_items(1))

    def purge(days: int) -> Any:
        async def work(sessions: async_sessionmaker[AsyncSession]) -> int:
            with writing():
                async with sessions() as session:
                    now = datetime.now(UTC) + timedelta(days=days)
                    count = await purge_deliveries(session, FAST, now=now)
                    await session.commit()
            return count

        return run(hub, work)

    assert purge(FAST.retention_days - 1) == 0
    assert purge(FAST.retention_days + 1) == 2
    left = execute_sql(hub.database_url, "SELECT id FROM webhook_deliveries")
    assert [row.id for row in left] == pending
    assert delivered


def test_the_scheduled_job_sends_due_deliveries(hub: Hub) -> None:
    receiver = Receiver().start()
    try:
        partner = hub.create_partner("coffee", webhook_url=receiver.url)
        receiver.secret = new_secret(hub, partner["id"])
        [delivery_id] = queue(hub, partner["id"], feed_items(1))

        async def work(sessions: async_sessionmaker[AsyncSession]) -> dict[str, int]:
            settings = SimpleNamespace(webhooks=FAST)
            ctx = SimpleNamespace(
                session_maker=sessions, settings=settings, keyring=hub.app.state.keyring
            )
            return await webhook_redelivery(ctx)

        assert run(hub, work) == {"delivered": 1, "failed": 0, "dead": 0}
        assert receiver.accepted() == {delivery_id: 1}
    finally:
        receiver.stop()
