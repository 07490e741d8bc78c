"""The hub's response class: Litestar's, with a short path for the common answer.

Nearly every successful answer of the API is JSON with a status, a body and no header, cookie
or background task of its own. For those, Litestar builds a ``Response``, then an
``ASGIResponse`` with a case-insensitive header container, and sends through three coroutines;
about 5 µs of CPU per request on the benchmark machine (bench/README.md, "auth layer").
:class:`HubResponse` renders the body the same way (Litestar's serializer, the layers' type
encoders) and sends it with the same two headers (``content-type``, ``content-length``) from a
small ASGI callable. Anything else -- headers, cookies, a background task, a HEAD request,
another media type, a status without a body -- takes Litestar's own path unchanged.

Handlers that return data get it through ``Litestar(response_class=HubResponse)``; a handler
that already holds its body as bytes (``GET /v1/me``) returns ``HubResponse(body)``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from litestar import Request, Response
from litestar.background_tasks import BackgroundTask, BackgroundTasks
from litestar.datastructures import Cookie
from litestar.enums import MediaType
from litestar.response.base import ASGIResponse
from litestar.serialization import get_serializer
from litestar.types import Receive, Scope, Send, TypeEncodersMap

_JSON = MediaType.JSON.value
_CONTENT_TYPE_JSON = (b"content-type", _JSON.encode())
_NO_BODY_STATUSES = frozenset({204, 304})


class JsonAnswer(ASGIResponse):
    """An ``ASGIResponse`` for a JSON body and nothing else: its two headers are built once."""

    __slots__ = ("_headers",)

    def __init__(self, body: bytes, status_code: int) -> None:  # no super().__init__: lean
        self.body = body
        self.status_code = status_code
        self.content_length = len(body)
        self.background = None
        self.encoding = "utf-8"
        self.is_head_response = False
        self._encoded_cookies = ()
        self._headers = [_CONTENT_TYPE_JSON, (b"content-length", str(len(body)).encode())]

    def encode_headers(self) -> list[tuple[bytes, bytes]]:
        return list(self._headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self._headers}
        )
        await send({"type": "http.response.body", "body": self.body, "more_body": False})


class HubResponse(Response[Any]):
    """Litestar's ``Response``; plain JSON answers are sent as a :class:`JsonAnswer`."""

    __slots__ = ()

    def __init__(
        self,
        content: Any,
        *,
        background: BackgroundTask | BackgroundTasks | None = None,
        cookies: Any = None,
        encoding: str = "utf-8",
        headers: Any = None,
        media_type: Any = None,
        status_code: int | None = None,
        type_encoders: TypeEncodersMap | None = None,
    ) -> None:
        if cookies or headers or type_encoders or self.type_encoders:
            super().__init__(
                content,
                background=background,
                cookies=cookies,
                encoding=encoding,
                headers=headers,
                media_type=media_type,
                status_code=status_code,
                type_encoders=type_encoders,
            )
            return
        # What Response.__init__ leaves for no headers, cookies or type encoders.
        self.content = content
        self.background = background
        self.cookies = []
        self.encoding = encoding
        self.headers = {}
        self.media_type = media_type
        self.status_code = status_code
        self.response_type_encoders = {}

    def to_asgi_response(
        self,
        app: Any,
        request: Request[Any, Any, Any],
        *,
        background: BackgroundTask | BackgroundTasks | None = None,
        cookies: Iterable[Cookie] | None = None,
        encoded_headers: Iterable[tuple[bytes, bytes]] | None = None,
        headers: dict[str, str] | None = None,
        is_head_response: bool = False,
        media_type: MediaType | str | None = None,
        status_code: int | None = None,
        type_encoders: TypeEncodersMap | None = None,
    ) -> ASGIResponse:
        media = self.media_type or media_type or _JSON
        status = self.status_code or status_code or 200
        if (
            media == _JSON
            and app is None
            and not headers
            and not self.headers
            and not cookies
            and not self.cookies
            and encoded_headers is None
            and background is None
            and self.background is None
            and not is_head_response
            and status >= 200
            and status not in _NO_BODY_STATUSES
            and self.encoding == "utf-8"
        ):
            encoders = (
                {**type_encoders, **(self.response_type_encoders or {})}
                if type_encoders
                else self.response_type_encoders
            )
            body = self.render(self.content, _JSON, get_serializer(encoders))
            return JsonAnswer(body, status)
        return super().to_asgi_response(
            app,
            request,
            background=background,
            cookies=cookies,
            encoded_headers=encoded_headers,
            headers=headers,
            is_head_response=is_head_response,
            media_type=media_type,
            status_code=status_code,
            type_encoders=type_encoders,
        )
