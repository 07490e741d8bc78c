"""Errors as typed values, mapped once to RFC 9457 problem details.

Every problem detail says what was wrong (``detail``) and how to fix it (``fix``). Domain code
raises a :class:`HubError` subclass; framework errors (bad JSON, unknown routes, oversized
bodies) are translated here too, so no client ever sees a bare 500 for its own mistake.
"""

from __future__ import annotations

import uuid
from http import HTTPStatus
from typing import Any

import structlog
from advanced_alchemy.exceptions import IntegrityError as RepositoryIntegrityError
from advanced_alchemy.exceptions import NotFoundError as RepositoryNotFound
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from sqlalchemy.exc import DataError, IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from hub.core.db import unavailable_reason

PROBLEM_JSON = "application/problem+json"
log = structlog.get_logger("hub.errors")


class HubError(Exception):
    """Base of the hub's errors. Subclasses set ``status``, ``slug`` and a default ``fix``."""

    status: int = 500
    slug: str = "internal-error"
    title: str = "Internal error"
    fix: str = "Retry later; if it persists, contact the coalition operator with the request id."

    def __init__(
        self,
        detail: str,
        *,
        fix: str | None = None,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        if fix is not None:
            self.fix = fix
        self.errors = errors
        self.headers = headers or {}
        self.extra = extra


class BadRequest(HubError):
    status, slug, title = 400, "bad-request", "Malformed request"
    fix = "Send a JSON body of the documented shape (see /schema)."


class ClientClosedRequest(BadRequest):
    """The client closed the connection before its body was read (nobody gets the answer; it
    is a 4xx in the metrics and the log, not an unhandled error)."""

    slug, title = "client-closed-request", "Connection closed before the body arrived"
    fix = "Send the request again; nothing of this one was kept."


class InvalidInput(HubError):
    """Well-formed input that breaks a rule (422)."""

    status, slug, title = 422, "invalid-input", "Input breaks a rule"
    fix = "Correct the fields listed in 'errors' and send the request again."


class Unauthorized(HubError):
    status, slug, title = 401, "unauthorized", "Authentication required"
    fix = "Obtain an access token at /oauth/token and send it as 'Authorization: Bearer <token>'."

    def __init__(self, detail: str, *, error: str | None = "invalid_token", **kw: Any) -> None:
        challenge = 'Bearer realm="hub"'
        if error:  # RFC 6750 §3.1: no error code when the request had no credentials at all
            safe = detail.replace('"', "'")
            challenge += f', error="{error}", error_description="{safe}"'
        super().__init__(detail, headers={"WWW-Authenticate": challenge}, **kw)


class Forbidden(HubError):
    status, slug, title = 403, "forbidden", "Not allowed"
    fix = "Use a client whose token carries the scope this endpoint needs."

    def __init__(self, detail: str, *, scope: str | None = None, **kw: Any) -> None:
        challenge = 'Bearer realm="hub", error="insufficient_scope"'
        if scope:
            challenge += f', scope="{scope}"'
        super().__init__(detail, headers={"WWW-Authenticate": challenge}, **kw)


class NotFound(HubError):
    status, slug, title = 404, "not-found", "Not found"
    fix = "Check the identifier; objects of other partners are not visible to you."


class RequestTimeout(HubError):
    status, slug, title = 408, "request-timeout", "Request body too slow"
    fix = "Send the body faster, or split it into smaller requests."


class Conflict(HubError):
    status, slug, title = 409, "conflict", "Conflicts with the current state"
    fix = "Read the current state of the object and send a request consistent with it."


class PayloadTooLarge(HubError):
    status, slug, title = 413, "payload-too-large", "Request body too large"
    fix = "Split the request into smaller ones, or use the bulk upload endpoint."


class UnsupportedMediaType(HubError):
    status, slug, title = 415, "unsupported-media-type", "Unsupported content type"
    fix = "Send the body as 'Content-Type: application/json'."


class TooManyRequests(HubError):
    status, slug, title = 429, "too-many-requests", "Too many requests"
    fix = "Wait for the number of seconds in Retry-After, then retry."

    def __init__(self, detail: str, *, retry_after: int, **kw: Any) -> None:
        retry_after = max(1, int(retry_after))
        super().__init__(
            detail, headers={"Retry-After": str(retry_after)}, retry_after=retry_after, **kw
        )


class ServiceUnavailable(HubError):
    status, slug, title = 503, "service-unavailable", "Temporarily unavailable"
    fix = "Retry after the number of seconds in Retry-After."

    def __init__(self, detail: str, *, retry_after: int, **kw: Any) -> None:
        super().__init__(detail, headers={"Retry-After": str(max(1, retry_after))}, **kw)


_STATUS_CLASSES: dict[int, type[HubError]] = {
    cls.status: cls
    for cls in (BadRequest, NotFound, Conflict, PayloadTooLarge, UnsupportedMediaType)
}
_FRAMEWORK_FIXES = {
    404: "Check the path against the API reference at /schema.",
    405: "Use one of the methods listed in the Allow header.",
    413: "Send a smaller body; JSON requests are limited in size (bulk data has upload endpoints).",
}


def problem_response(request: Request[Any, Any, Any], error: HubError) -> Response[Any]:
    body: dict[str, Any] = {
        "type": f"urn:hub:problem:{error.slug}",
        "title": error.title,
        "status": error.status,
        "detail": error.detail,
        "fix": error.fix,
        "instance": request.url.path,
    }
    if error.errors is not None:
        body["errors"] = error.errors
    body.update(error.extra)
    headers = dict(error.headers)
    # Unrouted requests (404, 405) never reach the request-context middleware: name them here.
    state = request.scope.setdefault("state", {})
    request_id = state.setdefault("request_id", uuid.uuid4().hex)
    body["request_id"] = request_id
    headers["x-request-id"] = request_id
    return Response(
        content=body, status_code=error.status, headers=headers, media_type=PROBLEM_JSON
    )


def _validation_errors(exc: ValidationException) -> list[dict[str, Any]]:
    errors = []
    for item in exc.extra if isinstance(exc.extra, list) else []:
        if isinstance(item, dict):
            errors.append(
                {
                    "field": item.get("key") or "",
                    "source": item.get("source") or "body",
                    "reason": str(item.get("message", "")),
                }
            )
    return errors


def _from_http_exception(exc: HTTPException) -> HubError:
    status = exc.status_code
    if isinstance(exc, ValidationException) or status == 400:
        detail = exc.detail
        errors = _validation_errors(exc) if isinstance(exc, ValidationException) else []
        if errors:
            detail = "; ".join(f"{e['field'] or e['source']}: {e['reason']}" for e in errors)
        return BadRequest(detail, errors=errors or None, headers=exc.headers)
    cls = _STATUS_CLASSES.get(status)
    if cls is not None:
        return cls(exc.detail, fix=_FRAMEWORK_FIXES.get(status), headers=exc.headers)
    if status == 401:
        return Unauthorized(exc.detail)
    if status == 429:
        retry = int((exc.headers or {}).get("Retry-After", "1"))
        return TooManyRequests(exc.detail, retry_after=retry)
    generic = HubError(exc.detail, fix=_FRAMEWORK_FIXES.get(status), headers=exc.headers)
    generic.status = status
    generic.title = HTTPStatus(status).phrase
    generic.slug = HTTPStatus(status).phrase.lower().replace(" ", "-")
    return generic


def integrity_error_handler(
    request: Request[Any, Any, Any], exc: IntegrityError | RepositoryIntegrityError
) -> Response[Any]:
    # A uniqueness race lost against a concurrent request: the rule-level check passed, the
    # database's constraint did not. Nothing was written (the transaction rolled back).
    return problem_response(
        request,
        Conflict(
            "The request conflicts with data written by another request at the same time.",
            fix="Read the current state and retry if it still applies.",
        ),
    )


def data_error_handler(request: Request[Any, Any, Any], exc: DataError) -> Response[Any]:
    return problem_response(
        request,
        BadRequest(
            "A value cannot be stored: it holds control characters (such as NUL) or is too long.",
            fix="Remove control characters and keep values within the documented lengths.",
        ),
    )


def database_unavailable(
    request: Request[Any, Any, Any], exc: OperationalError | PoolTimeout
) -> ServiceUnavailable | None:
    """The 503 for a database busy past the wait it allows (an embedded SQLite database
    holding a long write, such as a large upload being applied), unreachable, or with no
    free connection in this process's pool (a burst beyond ``database.pool_size`` +
    ``max_overflow``): nothing was written. None for SQLite's own mistakes (a missing
    table...), reported with the same class: those are bugs. (The console renders the same
    503 as a page.)"""
    error = unavailable_reason(exc)
    if error is None:
        return None
    log.warning("database unavailable", error=error, path=request.url.path)
    return ServiceUnavailable(
        "The database is busy or unreachable; nothing was changed.",
        fix="Retry after the number of seconds in Retry-After.",
        retry_after=5,
    )


def operational_error_handler(
    request: Request[Any, Any, Any], exc: OperationalError | PoolTimeout
) -> Response[Any]:
    unavailable = database_unavailable(request, exc)
    if unavailable is None:
        return unexpected_error_handler(request, exc)
    return problem_response(request, unavailable)


def not_found_handler(request: Request[Any, Any, Any], exc: RepositoryNotFound) -> Response[Any]:
    # A repository lookup that found nothing (services normally answer their own 404s).
    return problem_response(request, NotFound("No such object is visible to you."))


def hub_error_handler(request: Request[Any, Any, Any], exc: HubError) -> Response[Any]:
    return problem_response(request, exc)


def http_exception_handler(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    if exc.status_code >= 500:
        return unexpected_error_handler(request, exc)
    return problem_response(request, _from_http_exception(exc))


def raised_decoding_inputs(exc: BaseException) -> bool:
    """A ValueError or OverflowError that msgspec raised while converting the request's
    parameters and body into the handler's types (Litestar turns only msgspec's own
    ValidationError into a 400): the client's input, such as a Unix time past the year 9999
    for a datetime ("year 10000 is out of range")."""
    if not isinstance(exc, ValueError | OverflowError) or exc.__traceback__ is None:
        return False
    last = exc.__traceback__
    while last.tb_next is not None:
        last = last.tb_next
    frame = last.tb_frame  # msgspec's converter is C: the innermost Python frame is Litestar's
    return (
        frame.f_code.co_name == "parse_values_from_connection_kwargs"
        and frame.f_globals.get("__name__") == "litestar._signature.model"
    )


def unexpected_error_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    if raised_decoding_inputs(exc):
        return problem_response(
            request,
            BadRequest(
                f"A value of the request cannot be decoded: {str(exc)[:200]}.",
                fix="Send values within the documented ranges (times between the years 1 and "
                "9999 in UTC); see /schema.",
            ),
        )
    # The body never carries the exception text: it may hold data the caller must not see.
    request_id = request.scope.get("state", {}).get("request_id")
    log.error("unhandled error", exc_info=exc, path=request.url.path, request_id=request_id)
    return problem_response(request, HubError("The hub failed to handle this request."))


EXCEPTION_HANDLERS: dict[Any, Any] = {
    HubError: hub_error_handler,
    HTTPException: http_exception_handler,
    IntegrityError: integrity_error_handler,
    RepositoryIntegrityError: integrity_error_handler,
    RepositoryNotFound: not_found_handler,
    DataError: data_error_handler,
    OperationalError: operational_error_handler,
    PoolTimeout: operational_error_handler,
    Exception: unexpected_error_handler,
}

__all__ = [
    "PROBLEM_JSON",
    "BadRequest",
    "Conflict",
    "Forbidden",
    "HubError",
    "InvalidInput",
    "NotFound",
    "PayloadTooLarge",
    "ServiceUnavailable",
    "TooManyRequests",
    "Unauthorized",
    "UnsupportedMediaType",
]
