"""The hub's real app plus one benchmark-only route, ``GET /bench/claims``.

The route sits behind the hub's whole middleware stack (request context, Prometheus, bearer
authentication + per-client rate limit) and returns the verified token's claims. It reads no
database, so it measures the auth layer and nothing else.

Run by bench/auth_layer.py as ``uvicorn --factory bench.hub_bench_app:create``; settings come
from ``HUB_*`` environment variables like ``hub serve``.
"""

from __future__ import annotations

from typing import Any

from litestar import Litestar, Request, get

from hub.app import create_app
from hub.core.auth import Principal
from hub.settings import load_settings


@get("/bench/claims")
async def claims_route(request: Request[Principal, Any, Any]) -> dict[str, Any]:
    return request.user.claims


def create() -> Litestar:
    return create_app(load_settings(), extra_route_handlers=[claims_route])
