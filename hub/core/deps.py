"""Dependencies every controller uses: the caller, the actor for the audit log, settings."""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.di import Provide

from hub.core.audit import Actor
from hub.core.auth import Principal, principal_of


def provide_principal(request: Request[Any, Any, Any]) -> Principal:
    return principal_of(request)


def provide_actor(request: Request[Any, Any, Any]) -> Actor:
    principal = principal_of(request)
    return Actor(
        name=principal.actor,
        partner_id=principal.partner_id,
        request_id=request.scope.get("state", {}).get("request_id"),
    )


COMMON_DEPENDENCIES: dict[str, Any] = {
    "principal": Provide(provide_principal, sync_to_thread=False),
    "actor": Provide(provide_actor, sync_to_thread=False),
}
