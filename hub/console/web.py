"""What every console page shares: the session guard, CSRF, rendering, errors as pages.

The console never reads the ``Authorization`` header: a partner's (or an admin client's)
bearer token opens nothing here. Only the session cookie does, and every POST must carry the
session's CSRF token and, when the browser sends one, an ``Origin`` of this host.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit

import msgspec
import structlog
from litestar import Request, Response
from litestar.connection import ASGIConnection
from litestar.datastructures import ResponseHeader
from litestar.exceptions import HTTPException
from litestar.handlers.base import BaseRouteHandler
from litestar.response import Redirect, Template
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from hub.console.sessions import COOKIE, SignedIn, load_session, touch_session
from hub.core.audit import Actor
from hub.core.db import writing
from hub.core.errors import HubError, InvalidInput, database_unavailable

log = structlog.get_logger("hub.console")
PREFIX = "/admin"
SIGN_IN = f"{PREFIX}/sign-in"
CSRF_FIELD = "_csrf"
PUBLIC_OPT = "console_public"

# Pages hold partner names, client ids and audit details: never cached, never framed.
SECURITY_HEADERS = [
    ResponseHeader(name="Cache-Control", value="no-store"),
    ResponseHeader(name="X-Frame-Options", value="DENY"),
    ResponseHeader(name="X-Content-Type-Options", value="nosniff"),
    ResponseHeader(name="Referrer-Policy", value="same-origin"),
    ResponseHeader(
        name="Content-Security-Policy",
        value="default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
]


class SignInRequired(Exception):
    """No live session: the browser goes to the sign-in page."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


class CsrfRefused(Exception):
    """A form post without this session's CSRF token, or from another origin."""


def safe_next(value: str | None) -> str:
    """Where to go after signing in: a console path only (no open redirect)."""
    if not value or not value.startswith(PREFIX) or value.startswith("//") or "\\" in value:
        return PREFIX
    return value


def same_origin(request: Request[Any, Any, Any]) -> bool:
    """When the browser names the page that posted (Origin, else Referer), it must be ours."""
    source = request.headers.get("origin") or request.headers.get("referer")
    if not source or source == "null":
        return source is None
    return urlsplit(source).netloc == request.headers.get("host", "")


async def requires_console_session(
    connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
) -> None:
    """Guard of every console page but sign-in: a live session, and CSRF on every POST."""
    if handler.opt.get(PUBLIC_OPT):
        return
    state = connection.app.state
    async with state.session_maker() as session:
        signed_in = await load_session(session, connection.cookies.get(COOKIE))
    if signed_in is None:
        target = connection.url.path
        if connection.url.query:
            target += "?" + connection.url.query
        is_get = isinstance(connection, Request) and connection.method == "GET"
        raise SignInRequired(target if is_get else PREFIX)
    if isinstance(connection, Request) and connection.method == "POST":
        await check_csrf(connection, signed_in)
    if signed_in.needs_touch:
        with writing():
            async with state.session_maker() as session, session.begin():
                await touch_session(session, signed_in)
    connection.state.console = signed_in


async def check_csrf(request: Request[Any, Any, Any], signed_in: SignedIn) -> None:
    form = await request.form()
    submitted = form.get(CSRF_FIELD)
    if not same_origin(request) or not isinstance(submitted, str):
        raise CsrfRefused()
    if not signed_in.csrf_matches(submitted):
        raise CsrfRefused()


def provide_signed_in(request: Request[Any, Any, Any]) -> SignedIn:
    signed_in: SignedIn = request.state.console
    return signed_in


def provide_console_actor(request: Request[Any, Any, Any]) -> Actor:
    """Replaces the API's ``actor``: services audit the console user by name."""
    signed_in: SignedIn = request.state.console
    return signed_in.actor(request.scope.get("state", {}).get("request_id"))


def page(
    request: Request[Any, Any, Any],
    template: str,
    *,
    status_code: int = 200,
    headers: Mapping[str, str] | None = None,
    **context: Any,
) -> Template:
    """Render a console page; the layout gets the user, their CSRF token and the nav item."""
    signed_in: SignedIn | None = request.state.get("console")
    return Template(
        template_name=template,
        context={
            "me": signed_in,
            "csrf_field": CSRF_FIELD,
            "csrf_token": signed_in.csrf_token if signed_in else "",
            "path": request.url.path,
            "now": datetime.now(UTC),
            **context,
        },
        status_code=status_code,
        headers=dict(headers or {}),
    )


async def form_data(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """The posted form: single values as strings, repeated fields as lists; no CSRF field."""
    form = await request.form()
    data: dict[str, Any] = {}
    for key in form:
        if key == CSRF_FIELD:
            continue
        values = [v for v in form.getall(key) if isinstance(v, str)]
        data[key] = values if len(values) > 1 else (values[0] if values else "")
    return data


def convert(raw: Mapping[str, Any], kind: type[Any]) -> Any:
    """A form's fields as the API's wire type: the same validation as the JSON API."""
    try:
        return msgspec.convert(
            {k: v for k, v in raw.items() if v not in ("", None)}, kind, strict=False
        )
    except msgspec.ValidationError as exc:
        raise InvalidInput(str(exc), fix="Correct the field and submit the form again.") from exc


# -- errors as pages ----------------------------------------------------------------------------
def sign_in_required(request: Request[Any, Any, Any], exc: SignInRequired) -> Response[Any]:
    return Redirect(f"{SIGN_IN}?next={quote(safe_next(exc.next_path), safe='/')}", status_code=303)


def csrf_refused(request: Request[Any, Any, Any], exc: CsrfRefused) -> Response[Any]:
    log.warning("console form refused: CSRF", path=request.url.path)
    return _error_page(
        request,
        403,
        "Form refused",
        "This form did not carry the session's security token, or came from another site.",
        "Open the page again from the console and resubmit the form.",
    )


def hub_error(request: Request[Any, Any, Any], exc: HubError) -> Response[Any]:
    return _error_page(
        request, exc.status, exc.title, exc.detail, exc.fix, errors=exc.errors, headers=exc.headers
    )


def database_error(
    request: Request[Any, Any, Any], exc: OperationalError | PoolTimeout
) -> Response[Any]:
    """A database busy past its wait (SQLite held by a long write) is the API's 503, as a
    page: signing in or posting a form then says to wait, not a JSON problem or a 500."""
    unavailable = database_unavailable(request, exc)
    if unavailable is None:
        return unexpected_error(request, exc)
    return _error_page(
        request,
        unavailable.status,
        "The hub is busy",
        "The database is busy with a long write (such as a large upload); nothing was changed.",
        "Wait a few seconds, then go back and submit again.",
        headers=unavailable.headers,
    )


def http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    if exc.status_code >= 500:
        return unexpected_error(request, exc)
    return _error_page(
        request, exc.status_code, "Request refused", exc.detail, "Go back and retry."
    )


def unexpected_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    log.error("console page failed", exc_info=exc, path=request.url.path)
    return _error_page(
        request, 500, "Something went wrong", "The hub failed to handle this page.", "Retry later."
    )


def _error_page(
    request: Request[Any, Any, Any],
    status: int,
    title: str,
    detail: str,
    fix: str,
    errors: list[dict[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response[Any]:
    return page(
        request,
        "error.html",
        status_code=status,
        headers=headers,
        status=status,
        title=title,
        detail=detail,
        fix=fix,
        errors=errors or [],
    )


EXCEPTION_HANDLERS: dict[Any, Any] = {
    SignInRequired: sign_in_required,
    CsrfRefused: csrf_refused,
    HubError: hub_error,
    OperationalError: database_error,
    PoolTimeout: database_error,
    HTTPException: http_error,
    Exception: unexpected_error,
}
