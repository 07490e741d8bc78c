"""The hub's real app plus one benchmark-only route, ``GET /bench/claims``.

The route sits behind the hub's whole request path (hub.core.request.RequestMiddleware: request
id, bearer authentication + per-client rate limit, metrics, access log) and returns the
verified token's claims. It reads no database, so it measures the auth layer and nothing else.

Run by bench/auth_layer.py as ``uvicorn --factory bench.hub_bench_app:create``; settings come
from ``HUB_*`` environment variables like ``hub serve``.
"""

from __future__ import annotations

from typing import Any

from litestar import Litestar, get
from litestar.types import Scope

import hub.app as hub_app
from hub.core.auth import Principal
from hub.settings import load_settings


@get("/bench/claims")
async def claims_route(scope: Scope) -> dict[str, Any]:
    principal: Principal = scope["user"]  # type: ignore[typeddict-item]
    return principal.claims


def build() -> Litestar:
    """The hub app with the benchmark route."""
    return hub_app.create_app(load_settings(), extra_route_handlers=[claims_route])


def create() -> Litestar:
    """The uvicorn factory."""
    return build()
