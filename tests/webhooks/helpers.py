"""A real webhook receiver on a loopback port, and helpers to queue and send deliveries."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from hub.core.db import create_hub_async_engine, writing
from hub.settings import WebhookSettings
from partners.webhooks.delivery import deliver_due
from partners.webhooks.service import enqueue
from tests.conftest import Hub, execute_sql, free_port

T = TypeVar("T")
FAST = WebhookSettings(
    allow_loopback_http=True,
    timeout_seconds=2.0,
    max_attempts=5,
    backoff_base_seconds=1.0,
    backoff_max_seconds=4.0,
)
LATER = 5.0  # seconds: more than any backoff of FAST, so a retry is due


@dataclass
class Received:
    webhook_id: str
    body: bytes
    headers: dict[str, str]
    valid: bool
    status: int


class Receiver:
    """A partner's endpoint: verifies every request with Standard Webhooks, records it, and
    answers 2xx when healthy and its signature is valid (503 when ``failing``)."""

    def __init__(self, secret: str | None = None, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.secret = secret
        self.failing = False
        self.delay = 0.0
        self.requests: list[Received] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    def verifies(self, secret: str, request: Received) -> bool:
        try:
            Webhook(secret).verify(request.body, request.headers)
        except WebhookVerificationError:
            return False
        return True

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                headers = {k.lower(): v for k, v in self.headers.items()}
                if receiver.delay:
                    time.sleep(receiver.delay)
                record = Received(headers.get("webhook-id", ""), body, headers, False, 0)
                secret = receiver.secret
                record.valid = secret is not None and receiver.verifies(secret, record)
                record.status = 401 if not record.valid else 503 if receiver.failing else 204
                with receiver._lock:
                    receiver.requests.append(record)
                self.send_response(record.status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            request_queue_size = 128  # several senders connect at once

        self._server = Server(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def accepted(self) -> Counter[str]:
        with self._lock:
            return Counter(r.webhook_id for r in self.requests if 200 <= r.status < 300)

    def bodies(self, webhook_id: str) -> set[bytes]:
        with self._lock:
            return {r.body for r in self.requests if r.webhook_id == webhook_id}


def run(hub: Hub, work: Callable[[async_sessionmaker[AsyncSession]], Awaitable[T]]) -> T:
    """Run ``work`` with sessions on the hub's database, as a separate process would."""

    async def main() -> T:
        engine = create_hub_async_engine(hub.database_url)
        try:
            return await work(async_sessionmaker(engine, expire_on_commit=False))
        finally:
            await engine.dispose()

    return asyncio.run(main())


def queue(hub: Hub, partner_id: str, items: list[dict[str, Any]], batch: int = 2) -> list[str]:
    """Queue feed items in one transaction, as the rewards sync does."""

    async def work(sessions: async_sessionmaker[AsyncSession]) -> list[str]:
        with writing():
            async with sessions() as session:
                ids = await enqueue(session, UUID(partner_id), items, batch_items=batch)
                await session.commit()
        return ids

    return run(hub, work)


def send_due(
    hub: Hub, now: datetime | None = None, settings: WebhookSettings = FAST, **kw: Any
) -> dict[str, int]:
    keyring = hub.app.state.keyring

    async def work(sessions: async_sessionmaker[AsyncSession]) -> dict[str, int]:
        return await deliver_due(sessions, keyring, settings, now=now, **kw)

    return run(hub, work)


def feed_items(count: int, partner_id: str = "") -> list[dict[str, Any]]:
    return [
        {
            "id": index + 1,
            "customer_ref": f"cust-{index}",
            "kind": "earn",
            "points": 10 * (index + 1),
            "occurred_at": datetime(2026, 1, 1, tzinfo=UTC),
            "source_partner_id": partner_id,
        }
        for index in range(count)
    ]


def new_secret(hub: Hub, partner_id: str) -> str:
    response = hub.as_admin("POST", f"/v1/partners/{partner_id}/webhook-secret")
    assert response.status_code == 201, response.text
    return str(response.json()["secret"])


def delivery_row(hub: Hub, delivery_id: str) -> Any:
    rows = execute_sql(
        hub.database_url,
        "SELECT status, attempts, last_status_code, last_error FROM webhook_deliveries "
        "WHERE id = :id",
        id=delivery_id,
    )
    return rows[0]


def clear_deliveries(hub: Hub) -> None:
    execute_sql(hub.database_url, "DELETE FROM webhook_deliveries")
