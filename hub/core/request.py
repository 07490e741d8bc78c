"""The one middleware every routed request passes through (plain ASGI, one frame per request).

In order, for each HTTP request:

* request id: the client's ``X-Request-ID`` when well formed, else a new one; it is in
  ``scope["state"]["request_id"]``, in every log line written meanwhile, and echoed as the
  response's ``X-Request-ID``;
* write intent for the database (every method but GET/HEAD/OPTIONS; SQLite's ``BEGIN
  IMMEDIATE``);
* authentication outside the public paths: the bearer token's verified claims (a cached
  verification, revocations checked on every request, hub.core.auth), then the client's rate
  limit; the principal goes to ``scope["user"]``/``scope["auth"]``;
* for requests with a body (POST/PUT/PATCH) only: the 415 check, the JSON body check and
  Idempotency-Key (hub.core.content_type, hub.core.json_body, hub.core.idempotency); reads skip
  those three layers entirely;
* metrics (hub.core.metrics) and, when enabled, the access log line.

It was five middlewares; one pass over the headers and one coroutine frame per request instead
of five is worth ~6 µs of CPU per request on the benchmark machine (bench/README.md).
"""

from __future__ import annotations

import itertools
import os
import re
import time
from typing import Any

import structlog

from hub.core import metrics
from hub.core.auth import ClientRateLimiter, TokenVerifier, parse_bearer
from hub.core.content_type import BODY_METHODS, ContentTypeMiddleware
from hub.core.db import write_intent
from hub.core.errors import Unauthorized
from hub.core.idempotency import IdempotencyMiddleware
from hub.core.json_body import JsonBodyMiddleware
from hub.core.logging import SAFE_METHODS, request_id_var

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,100}$")
_X_REQUEST_ID = b"x-request-id"
_AUTHORIZATION = b"authorization"
# Request ids: a random per-process prefix and a counter (unique, and no system call per request).
_PREFIX = os.urandom(8).hex()
_COUNTER = itertools.count(1)


def new_request_id() -> str:
    return _PREFIX + format(next(_COUNTER), "016x")


class RequestMiddleware:
    """See the module docstring. Litestar builds one instance per route (after routing), so
    the route's metrics counters are looked up once per method and kept."""

    def __init__(
        self,
        app: Any,
        *,
        verifier: TokenVerifier,
        rate_limiter: ClientRateLimiter,
        public_prefixes: tuple[str, ...] = (),
        public_paths: frozenset[str] = frozenset(),
        access_log: bool = True,
    ) -> None:
        self.app = app
        # Only requests with a body pass the body checks (each does nothing for the others).
        self.body_app = ContentTypeMiddleware(JsonBodyMiddleware(IdempotencyMiddleware(app)))
        self.verifier = verifier
        self.rate_limiter = rate_limiter
        self.public_prefixes = public_prefixes
        self.public_paths = public_paths
        self.access_log = access_log
        self.log = structlog.get_logger("hub.access")
        self._counters: dict[tuple[str, str], metrics.RouteCounters] = {}

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = authorization = None
        for name, value in scope["headers"]:
            if name == _AUTHORIZATION:
                if authorization is None:
                    authorization = value
            elif name == _X_REQUEST_ID and request_id is None:
                request_id = value.decode("latin-1")
        if request_id is None or not _REQUEST_ID.match(request_id):
            request_id = new_request_id()
        state = scope.get("state")
        if state is None:
            state = scope["state"] = {}
        state["request_id"] = request_id
        method = scope["method"]
        # Reads leave the write intent at its default (False): one context change fewer.
        intent = write_intent.set(True) if method not in SAFE_METHODS else None
        bound = request_id_var.set(request_id)
        status = 500
        started = time.perf_counter()
        id_header = (_X_REQUEST_ID, request_id.encode())

        def send_with_id(message: Any) -> Any:
            # A plain function returning send's awaitable: no coroutine frame of its own.
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = message.get("headers", ())
                # Only problem responses (4xx/5xx) may carry the id already (problem_response
                # names it for requests this middleware never sees): scan those alone.
                if status < 400 or not any(name == _X_REQUEST_ID for name, _ in headers):
                    message["headers"] = [*headers, id_header]
            return send(message)

        try:
            path = scope["path"]
            if path not in self.public_paths and not path.startswith(self.public_prefixes):
                if authorization is None:
                    raise Unauthorized(
                        "This endpoint needs an access token and the request carried none.",
                        error=None,
                    )
                principal = self.verifier.verify(parse_bearer(authorization))
                self.rate_limiter.check(principal.client_id)
                state["client_id"] = principal.client_id
                scope["user"] = principal
                scope["auth"] = principal
            app = self.body_app if method in BODY_METHODS else self.app
            await app(scope, receive, send_with_id)
        except Exception as exc:
            # Raised past us to Litestar's outer exception handler, which sends the response.
            status = int(getattr(exc, "status", getattr(exc, "status_code", 500)))
            raise
        finally:
            elapsed = time.perf_counter() - started
            if intent is not None:
                write_intent.reset(intent)
            route = scope.get("path_template") or "unrouted"
            counters = self._counters.get((method, route))
            if counters is None:
                counters = self._counters[(method, route)] = metrics.counters(method, route)
            counters.observe(status, elapsed)
            if self.access_log:
                self.log.info(
                    "request",
                    method=method,
                    path=scope["path"],
                    route=route,
                    status=status,
                    duration_ms=round(elapsed * 1000, 2),
                    client_id=state.get("client_id"),
                )
            request_id_var.reset(bound)
