"""The brands' webhook endpoint: verifies each request with Standard Webhooks (the partner's
own secret), answers 204 when it verifies and 401 when not, and counts what it accepted by
``webhook-id`` and by feed item, per partner, so the audit can tell lost from doubled."""

from __future__ import annotations

import json
import threading
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from typing import Any

from gevent.pywsgi import WSGIServer
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from bench.auth_layer import free_port


class Receiver:
    def __init__(self) -> None:
        self.port = free_port()
        self.secrets: dict[str, str] = {}
        self.accepted_ids: Counter[str] = Counter()
        self.invalid = 0
        self.unknown_partner = 0
        # partner -> feed item id -> the webhook ids that carried it
        self.items: dict[str, dict[int, set[str]]] = defaultdict(lambda: defaultdict(set))
        self.kinds: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._server: WSGIServer | None = None

    def url(self, partner_id: str) -> str:
        return f"http://127.0.0.1:{self.port}/hook/{partner_id}"

    def _app(self, environ: dict[str, Any], start: Callable[..., Any]) -> Iterable[bytes]:
        partner = environ.get("PATH_INFO", "").rsplit("/", 1)[-1]
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length)
        headers = {
            key[5:].replace("_", "-").lower(): value
            for key, value in environ.items()
            if key.startswith("HTTP_")
        }
        secret = self.secrets.get(partner)
        if secret is None:
            with self._lock:
                self.unknown_partner += 1
            start("404 Not Found", [("content-length", "0")])
            return [b""]
        try:
            Webhook(secret).verify(body, headers)
        except WebhookVerificationError:
            with self._lock:
                self.invalid += 1
            start("401 Unauthorized", [("content-length", "0")])
            return [b""]
        webhook_id = headers["webhook-id"]
        payload = json.loads(body)
        with self._lock:
            self.accepted_ids[webhook_id] += 1
            if self.accepted_ids[webhook_id] == 1:  # a resend of the same id is not new items
                for item in payload.get("items", []):
                    self.items[partner][int(item["id"])].add(webhook_id)
                    self.kinds[str(item.get("kind"))] += 1
        start("204 No Content", [("content-length", "0")])
        return [b""]

    def start(self) -> Receiver:
        self._server = WSGIServer(("127.0.0.1", self.port), self._app, log=None, error_log=None)
        self._server.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(timeout=5)
            self._server = None

    def summary(self) -> dict[str, Any]:
        with self._lock:
            return {
                "webhook_ids_accepted": len(self.accepted_ids),
                "webhook_ids_accepted_more_than_once": sum(
                    1 for n in self.accepted_ids.values() if n > 1
                ),
                "items_received": sum(len(v) for v in self.items.values()),
                "items_in_more_than_one_webhook": sum(
                    1 for per in self.items.values() for ids in per.values() if len(ids) > 1
                ),
                "item_kinds": dict(self.kinds),
                "invalid_signatures": self.invalid,
                "unknown_partner": self.unknown_partner,
            }

    def item_ids(self, partner: str) -> set[int]:
        with self._lock:
            return set(self.items.get(partner, {}))
