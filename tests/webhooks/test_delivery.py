"""Webhook deliveries reach a real receiver: signed, retried with the same id and body,
dead-lettered, replayed, never sent twice, never sent to a private address."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from hub.core.db import create_hub_async_engine
from partners.webhooks.delivery import LEASE_MARGIN_SECONDS, _claim, deliver_due
from partners.webhooks.signing import SecretBox
from tests.conftest import Hub, execute_sql
from tests.webhooks.helpers import (
    FAST,
    LATER,
    Receiver,
    clear_deliveries,
    delivery_row,
    feed_items,
    new_secret,
    queue,
    run,
    send_due,
)


@pytest.fixture(autouse=True)
def no_deliveries_left_over(hub: Hub) -> None:
    # deliver_due sends every due delivery: start each test with an empty queue.
    clear_deliveries(hub)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    yield running
    running.stop()


def test_every_webhook_arrives_once_after_the_receiver_comes_up(
    hub: Hub, receiver: Receiver
) -> None:
    partner = hub.create_partner("airline", webhook_url=receiver.url)
    receiver.secret = new_secret(hub, partner["id"])
    items = feed_items(5, partner["id"])
    ids = queue(hub, partner["id"], items, batch=2)
    assert len(ids) == 3

    now = datetime.now(UTC)
    # Nothing listens yet: connection refused.
    assert send_due(hub, now) == {"delivered": 0, "failed": 3, "dead": 0}
    assert delivery_row(hub, ids[0]).last_error.startswith("connection failed")
    # Listening but unavailable.
    receiver.failing = True
    receiver.start()
    now += timedelta(seconds=LATER)
    assert send_due(hub, now) == {"delivered": 0, "failed": 3, "dead": 0}
    assert delivery_row(hub, ids[0]).last_status_code == 503
    # Up.
    receiver.failing = False
    now += timedelta(seconds=LATER)
    assert send_due(hub, now) == {"delivered": 3, "failed": 0, "dead": 0}
    now += timedelta(seconds=LATER)
    assert send_due(hub, now) == {"delivered": 0, "failed": 0, "dead": 0}

    assert receiver.accepted() == dict.fromkeys(ids, 1)
    assert all(r.valid for r in receiver.requests)
    received: list[dict[str, Any]] = []
    for delivery_id in ids:
        bodies = receiver.bodies(delivery_id)
        assert len(bodies) == 1  # the retry carried the same body
        payload = json.loads(bodies.pop())
        assert payload["type"] == "rewards.feed"
        received += payload["items"]
    assert sorted(i["id"] for i in received) == [1, 2, 3, 4, 5]
    assert received[0]["occurred_at"] == "2026-01-01T00:00:00Z"
    assert {delivery_row(hub, i).status for i in ids} == {"delivered"}


def test_a_failing_receiver_dead_letters_and_a_replay_delivers_the_same_webhook(
    hub: Hub, receiver: Receiver
) -> None:
    partner = hub.create_partner("hotel", webhook_url=receiver.url)
    receiver.secret = new_secret(hub, partner["id"])
    receiver.failing = True
    receiver.start()
    [delivery_id] = queue(hub, partner["id"], feed_items(1), batch=10)
    settings = FAST
    now = datetime.now(UTC)
    outcomes = []
    for _ in range(settings.max_attempts):
        outcomes.append(send_due(hub, now, settings))
        now += timedelta(seconds=LATER)
    assert outcomes[-1] == {"delivered": 0, "failed": 0, "dead": 1}
    assert sum(o["failed"] for o in outcomes) == settings.max_attempts - 1
    assert send_due(hub, now + timedelta(days=1)) == {"delivered": 0, "failed": 0, "dead": 0}

    dead = hub.as_admin("GET", "/v1/webhooks/deliveries", params={"status": "dead"}).json()
    [listed] = [d for d in dead["items"] if d["id"] == delivery_id]
    assert listed["attempts"] == settings.max_attempts
    assert listed["last_status_code"] == 503
    assert listed["partner_id"] == partner["id"]
    assert "payload" not in listed
    assert "cust-0" not in json.dumps(dead)

    replayed = hub.as_admin("POST", f"/v1/webhooks/deliveries/{delivery_id}/replay")
    assert replayed.status_code == 200, replayed.text
    assert replayed.json()["status"] == "pending"
    assert replayed.json()["attempts"] == 0
    again = hub.as_admin("POST", f"/v1/webhooks/deliveries/{delivery_id}/replay")
    assert again.status_code == 409

    receiver.failing = False
    assert send_due(hub) == {"delivered": 1, "failed": 0, "dead": 0}
    assert receiver.accepted() == {delivery_id: 1}
    assert len(receiver.bodies(delivery_id)) == 1
    audit = hub.as_admin("GET", "/v1/audit", params={"target_id": delivery_id}).json()
    assert [e["action"] for e in audit["items"]] == ["webhook.replayed"]


@pytest.mark.parametrize(
    "stored_url",
    ["https://10.0.0.1/hook", "https://169.254.169.254/latest/meta-data", "http://10.0.0.1/hook"],
)
def test_a_url_pointing_into_a_private_range_is_refused_without_a_request(
    hub: Hub, stored_url: str
) -> None:
    partner = hub.create_partner("coffee", webhook_url="http://127.0.0.1:9/hook")
    new_secret(hub, partner["id"])
    [delivery_id] = queue(hub, partner["id"], feed_items(1))
    execute_sql(
        hub.database_url,
        "UPDATE partners SET webhook_url = :url WHERE name = :name",
        url=stored_url,
        name=partner["name"],
    )
    requests: list[httpx.Request] = []
    spy = httpx.AsyncClient(transport=httpx.MockTransport(lambda r: _record(requests, r)))
    assert send_due(hub, client=spy) == {"delivered": 0, "failed": 1, "dead": 0}
    assert requests == []
    row = delivery_row(hub, delivery_id)
    assert row.status == "pending"
    assert row.last_error.startswith("refused by the URL policy")
    assert row.last_status_code is None


def test_a_name_rebound_to_a_private_address_is_refused_at_delivery(
    hub: Hub, monkeypatch: pytest.MonkeyPatch
) -> None:
    public = "93.184.216.34"
    answer = {"address": public}
    real = socket.getaddrinfo

    def resolve(host: Any, *args: Any, **kw: Any) -> Any:
        if host == "hooks.rebinding.test":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (answer["address"], 443))]
        return real(host, *args, **kw)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    partner = hub.create_partner("bank", webhook_url="https://hooks.rebinding.test/hook")
    new_secret(hub, partner["id"])
    requests: list[httpx.Request] = []
    spy = httpx.AsyncClient(transport=httpx.MockTransport(lambda r: _record(requests, r)))

    # While the name is public, the attempt connects to the address that was checked.
    queue(hub, partner["id"], feed_items(1))
    assert send_due(hub, client=spy)["delivered"] == 1
    [request] = requests
    assert request.url.host == public
    assert request.headers["host"] == "hooks.rebinding.test"
    assert request.extensions["sni_hostname"] == "hooks.rebinding.test"

    answer["address"] = "10.1.2.3"  # the name now points inside
    [delivery_id] = queue(hub, partner["id"], feed_items(1))
    assert send_due(hub, client=spy)["failed"] == 1
    assert len(requests) == 1
    assert "10.1.2.3" in delivery_row(hub, delivery_id).last_error


def test_a_named_loopback_receiver_gets_its_host_header(
    hub: Hub, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = socket.getaddrinfo

    def resolve(host: Any, *args: Any, **kw: Any) -> Any:
        return real("127.0.0.1" if host == "hooks.partner.test" else host, *args, **kw)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    receiver.start()
    url = receiver.url.replace("127.0.0.1", "hooks.partner.test")
    partner = hub.create_partner("coffee", webhook_url=url)
    receiver.secret = new_secret(hub, partner["id"])
    [delivery_id] = queue(hub, partner["id"], feed_items(1))
    assert send_due(hub)["delivered"] == 1
    [request] = receiver.requests
    assert request.webhook_id == delivery_id
    assert request.headers["host"] == f"hooks.partner.test:{receiver.port}"


def _record(requests: list[httpx.Request], request: httpx.Request) -> httpx.Response:
    requests.append(request)
    return httpx.Response(204)


def test_two_senders_at_once_never_send_the_same_delivery_twice(
    hub: Hub, receiver: Receiver
) -> None:
    partner = hub.create_partner("airline", webhook_url=receiver.url)
    receiver.secret = new_secret(hub, partner["id"])
    receiver.delay = 0.01
    receiver.start()
    ids = queue(hub, partner["id"], feed_items(120), batch=1)
    keyring = hub.app.state.keyring

    async def sender() -> dict[str, int]:
        # Each sender has its own engine and pool, as two worker processes would.
        engine = create_hub_async_engine(hub.database_url)
        try:
            sessions: async_sessionmaker[AsyncSession] = async_sessionmaker(
                engine, expire_on_commit=False
            )
            return await deliver_due(sessions, keyring, FAST)
        finally:
            await engine.dispose()

    async def both() -> list[dict[str, int]]:
        return list(await asyncio.gather(sender(), sender(), sender()))

    results = asyncio.run(both())
    assert sum(r["delivered"] for r in results) == 120, results
    assert receiver.accepted() == dict.fromkeys(ids, 1)
    assert len(receiver.requests) == 120


def test_deliveries_wait_for_a_signing_secret(hub: Hub, receiver: Receiver) -> None:
    receiver.start()
    partner = hub.create_partner("hotel", webhook_url=receiver.url)
    [delivery_id] = queue(hub, partner["id"], feed_items(3), batch=10)
    assert send_due(hub) == {"delivered": 0, "failed": 0, "dead": 0}
    assert receiver.requests == []
    row = delivery_row(hub, delivery_id)
    assert (row.status, row.attempts, row.last_error) == ("pending", 0, "no signing secret")

    receiver.secret = new_secret(hub, partner["id"])
    assert send_due(hub) == {"delivered": 1, "failed": 0, "dead": 0}
    assert receiver.accepted() == {delivery_id: 1}


def test_a_partner_without_a_webhook_url_gets_no_deliveries(hub: Hub) -> None:
    partner = hub.create_partner("coffee")
    assert queue(hub, partner["id"], feed_items(3)) == []


def test_a_suspended_partner_gets_its_webhooks_after_reactivation(
    hub: Hub, receiver: Receiver
) -> None:
    receiver.start()
    partner = hub.create_partner("bank", webhook_url=receiver.url)
    receiver.secret = new_secret(hub, partner["id"])
    path = f"/v1/partners/{partner['id']}"
    assert hub.as_admin("PATCH", path, json={"status": "suspended"}).status_code == 200
    [delivery_id] = queue(hub, partner["id"], feed_items(1))
    assert send_due(hub) == {"delivered": 0, "failed": 0, "dead": 0}
    assert receiver.requests == []
    assert hub.as_admin("PATCH", path, json={"status": "active"}).status_code == 200
    assert send_due(hub) == {"delivered": 1, "failed": 0, "dead": 0}
    assert receiver.accepted() == {delivery_id: 1}


def test_a_delivery_claimed_by_a_sender_that_died_is_sent_once_its_lease_ends(
    hub: Hub, receiver: Receiver
) -> None:
    receiver.start()
    partner = hub.create_partner("hotel", webhook_url=receiver.url)
    receiver.secret = new_secret(hub, partner["id"])
    [delivery_id] = queue(hub, partner["id"], feed_items(1))
    keyring = hub.app.state.keyring
    now = datetime.now(UTC)

    async def claim_and_die(sessions: async_sessionmaker[AsyncSession]) -> int:
        return len(await _claim(sessions, SecretBox(keyring), FAST, now))

    assert run(hub, claim_and_die) == 1
    # Leased: another sender leaves it alone until the lease runs out.
    assert send_due(hub, now) == {"delivered": 0, "failed": 0, "dead": 0}
    assert receiver.requests == []
    later = now + timedelta(seconds=FAST.timeout_seconds * 2 + LEASE_MARGIN_SECONDS + 1)
    assert send_due(hub, later) == {"delivered": 1, "failed": 0, "dead": 0}
    assert receiver.accepted() == {delivery_id: 1}
    assert delivery_row(hub, delivery_id).attempts == 2
