"""The hub's real app plus one benchmark-only route, ``GET /bench/claims``.

The route sits behind the hub's whole middleware stack (request context with metrics and
access log, bearer authentication + per-client rate limit, idempotency) and returns the
verified token's claims. It reads no database, so it measures the auth layer and nothing else.

Run by bench/auth_layer.py as ``uvicorn --factory bench.hub_bench_app:create``; settings come
from ``HUB_*`` environment variables like ``hub serve``.

Diagnostics only (``auth_layer.py --breakdown``): ``BENCH_HUB_ABLATE`` is a comma-separated
list of hub middlewares to replace with a pass-through before the app is built, to measure
what each one costs: ``request_context`` (hub.core.logging.RequestContextMiddleware). Nothing
in hub/ is changed; the replacement is done on the names ``hub.app`` looks up, in this
process only.
"""

from __future__ import annotations

import os
from typing import Any

from litestar import Litestar, get
from litestar.types import ASGIApp, Receive, Scope, Send

import hub.app as hub_app
from hub.core.auth import Principal
from hub.settings import load_settings

ABLATABLE = {"request_context"}


@get("/bench/claims")
async def claims_route(scope: Scope) -> dict[str, Any]:
    principal: Principal = scope["user"]  # type: ignore[typeddict-item]
    return principal.claims


class PassThrough:
    """A middleware that does nothing (stands in for an ablated one)."""

    def __init__(self, app: ASGIApp, **_: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


def build(ablate: set[str] | frozenset[str] = frozenset()) -> Litestar:
    """The hub app with the benchmark route, the ``ablate``d middlewares replaced by a
    pass-through (the names ``hub.app`` looks up are restored afterwards)."""
    unknown = set(ablate) - ABLATABLE
    if unknown:
        raise ValueError(f"unknown ablation {sorted(unknown)}; known {sorted(ABLATABLE)}")
    saved = hub_app.RequestContextMiddleware
    try:
        if "request_context" in ablate:
            hub_app.RequestContextMiddleware = PassThrough  # type: ignore[misc,assignment]
        return hub_app.create_app(load_settings(), extra_route_handlers=[claims_route])
    finally:
        hub_app.RequestContextMiddleware = saved  # type: ignore[misc]


def create() -> Litestar:
    """The uvicorn factory (``BENCH_HUB_ABLATE`` is empty in the measured cases)."""
    ablate = {x.strip() for x in os.environ.get("BENCH_HUB_ABLATE", "").split(",") if x.strip()}
    return build(ablate)
