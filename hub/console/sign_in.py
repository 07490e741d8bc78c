"""Signing in and out of the console.

The sign-in form has no session yet, so its CSRF token is a double-submit cookie scoped to the
sign-in path (login CSRF: another site must not sign a browser in to an account it controls).
"""

from __future__ import annotations

import hmac
import secrets
from typing import Annotated, Any

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import Cookie, State
from litestar.di import NamedDependency
from litestar.params import QueryParameter
from litestar.response import Redirect
from sqlalchemy.ext.asyncio import AsyncSession

from hub.console.accounts import ConsoleAccounts, console_actor
from hub.console.sessions import (
    ABSOLUTE_SECONDS,
    COOKIE,
    COOKIE_PATH,
    SignedIn,
    close_session,
    open_session,
)
from hub.console.web import (
    CSRF_FIELD,
    PUBLIC_OPT,
    SIGN_IN,
    CsrfRefused,
    page,
    safe_next,
    same_origin,
)
from hub.core import audit

SIGN_IN_COOKIE = "hub_console_signin"


def _secure(request: Request[Any, Any, Any]) -> bool:
    return request.url.scheme == "https"


def _sign_in_cookie(request: Request[Any, Any, Any], token: str) -> Cookie:
    return Cookie(
        key=SIGN_IN_COOKIE,
        value=token,
        path=SIGN_IN,
        max_age=3600,
        httponly=True,
        samesite="strict",
        secure=_secure(request),
    )


def _sign_in_page(
    request: Request[Any, Any, Any], next_path: str, *, status_code: int = 200, **context: Any
) -> Response[Any]:
    token = request.cookies.get(SIGN_IN_COOKIE) or secrets.token_urlsafe(32)
    response = page(
        request,
        "sign_in.html",
        status_code=status_code,
        next_path=safe_next(next_path),
        sign_in_token=token,
        **context,
    )
    response.set_cookie(_sign_in_cookie(request, token))
    return response


def _address(request: Request[Any, Any, Any]) -> str:
    return request.client.host if request.client else "unknown"


def _wait(seconds: int) -> str:
    if seconds < 90:
        return f"{seconds} second{'s' if seconds != 1 else ''}"
    return f"about {round(seconds / 60)} minutes"


class SignInController(Controller):
    path = "/"

    @get("/sign-in", opt={PUBLIC_OPT: True})
    async def sign_in_form(
        self,
        request: Request[Any, Any, Any],
        next_path: Annotated[str | None, QueryParameter(name="next", max_length=500)] = None,
    ) -> Response[Any]:
        return _sign_in_page(request, next_path or "")

    @post("/sign-in", opt={PUBLIC_OPT: True})
    async def sign_in(
        self,
        request: Request[Any, Any, Any],
        db_session: NamedDependency[AsyncSession],
        state: State,
    ) -> Response[Any]:
        form = await request.form()
        expected = request.cookies.get(SIGN_IN_COOKIE) or ""
        submitted = form.get(CSRF_FIELD)
        if (
            not expected
            or not isinstance(submitted, str)
            or not same_origin(request)
            or not hmac.compare_digest(expected.encode(), submitted.encode())
        ):
            raise CsrfRefused()
        username = str(form.get("username") or "")[:200]
        password = str(form.get("password") or "")[:1000]
        next_path = str(form.get("next") or "")
        accounts = ConsoleAccounts(db_session, state.secret_hasher)
        await accounts.forget_old_failures()
        throttled = await accounts.throttled(username, _address(request))
        if throttled is not None:
            return _sign_in_page(
                request,
                next_path,
                status_code=429,
                username=username,
                error=f"Too many failed sign-ins. Try again in {_wait(throttled.retry_after)}.",
                headers={"Retry-After": str(throttled.retry_after)},
            )
        user = await accounts.authenticate(username, password, _address(request))
        if user is None:
            return _sign_in_page(
                request,
                next_path,
                status_code=401,
                username=username,
                error="Wrong username or password.",
            )
        token = await open_session(db_session, user)
        request_id = request.scope.get("state", {}).get("request_id")
        await audit.append(
            db_session,
            console_actor(user.username, request_id).event(
                "console.signed_in", "console_user", user.username
            ),
        )
        response = Redirect(safe_next(next_path), status_code=303)
        response.set_cookie(
            Cookie(
                key=COOKIE,
                value=token,
                path=COOKIE_PATH,
                max_age=ABSOLUTE_SECONDS,
                httponly=True,
                samesite="strict",
                secure=_secure(request),
            )
        )
        response.delete_cookie(SIGN_IN_COOKIE, path=SIGN_IN)
        return response

    @post("/sign-out")
    async def sign_out(
        self,
        request: Request[Any, Any, Any],
        db_session: NamedDependency[AsyncSession],
        signed_in: NamedDependency[SignedIn],
    ) -> Response[Any]:
        await close_session(db_session, signed_in.session_id)
        await audit.append(
            db_session,
            signed_in.actor(request.scope.get("state", {}).get("request_id")).event(
                "console.signed_out", "console_user", signed_in.username
            ),
        )
        response = Redirect(SIGN_IN, status_code=303)
        response.delete_cookie(COOKIE, path=COOKIE_PATH)
        return response
