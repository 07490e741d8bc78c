"""415 for a request body in a media type the endpoint does not read."""

from __future__ import annotations

from typing import Any

from hub.core.asgi import header
from hub.core.errors import UnsupportedMediaType

JSON_TYPES = ("application/json",)
# Route option naming the media types an endpoint reads (default: JSON only).
CONTENT_TYPES_OPT = "content_types"
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


class ContentTypeMiddleware:
    """Checks the ``Content-Type`` of API requests that carry a body, before anything reads it.

    A plain ASGI middleware: a GET costs one set lookup.
    """

    def __init__(self, app: Any, path_prefix: str = "/v1/") -> None:
        self.app = app
        self.path_prefix = path_prefix

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] in BODY_METHODS
            and scope["path"].startswith(self.path_prefix)
        ):
            check_content_type(scope)
        await self.app(scope, receive, send)


def check_content_type(scope: Any) -> None:
    has_body = header(scope, b"content-length") not in (None, "0") or (
        header(scope, b"transfer-encoding") is not None
    )
    if not has_body:
        return
    route_handler = scope.get("route_handler")
    accepted = getattr(route_handler, "opt", {}).get(CONTENT_TYPES_OPT, JSON_TYPES)
    content_type = (header(scope, b"content-type") or "").split(";")[0].strip().lower()
    if content_type not in accepted:
        raise UnsupportedMediaType(
            f"This endpoint reads {', '.join(accepted)}, not {content_type or 'an untyped body'}.",
            fix=f"Send the body with 'Content-Type: {accepted[0]}'.",
        )
