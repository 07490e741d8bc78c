"""The index at ``/`` and the health endpoints (no authentication)."""

from __future__ import annotations

from typing import Any

from litestar import Response, get
from litestar.di import NamedDependency
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from hub.core.errors import PROBLEM_JSON
from hub.core.openapi import OPENAPI_STATUSES_OPT

INDEX_LINKS = {
    "api_reference": "/schema",
    "openapi": "/schema/openapi.json",
    "console": "/admin",
    "token": "/oauth/token",
    "authorization_server_metadata": "/.well-known/oauth-authorization-server",
    "health": "/health/ready",
}


@get("/", include_in_schema=False)
async def index() -> dict[str, Any]:
    """Where to go from the bare address: a newcomer's first request should not be a 404."""
    return {
        "name": "Coalition hub",
        "detail": "The API reference is at /schema, the admin console at /admin.",
        "links": INDEX_LINKS,
    }


@get("/health/live", tags=["health"], summary="The process is up")
async def live() -> dict[str, str]:
    return {"status": "ok"}


@get(
    "/health/ready",
    tags=["health"],
    summary="The hub can serve: the database answers",
    opt={OPENAPI_STATUSES_OPT: (503,)},
)
async def ready(db_session: NamedDependency[AsyncSession]) -> Response[dict[str, Any]]:
    try:
        await db_session.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        return Response(
            {
                "type": "urn:hub:problem:not-ready",
                "title": "Not ready",
                "status": 503,
                "detail": f"The database did not answer: {type(exc).__name__}.",
                "fix": "Check that the database is reachable and migrated (hub db upgrade).",
            },
            status_code=503,
            media_type=PROBLEM_JSON,
        )
    return Response({"status": "ok", "database": "ok"})
