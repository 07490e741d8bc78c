"""The hub's problem details (RFC 9457) as exceptions: one class per status a partner can act
on, each carrying ``status``, ``title``, ``detail``, ``fix`` and the per-record ``errors``."""

from __future__ import annotations

from typing import Any

import httpx

__all__ = [
    "AuthenticationFailed",
    "BadRequest",
    "Conflict",
    "Forbidden",
    "HubError",
    "InvalidInput",
    "NotFound",
    "PayloadTooLarge",
    "RateLimited",
    "ServerError",
    "Unauthorized",
    "Unavailable",
    "UnsupportedMediaType",
    "error_from_response",
]


class HubError(Exception):
    """A request the hub refused. ``errors`` lists bad records as the hub named them
    (``index``/``row``, ``field``, ``reason``); ``problem`` is the whole problem detail."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        *,
        fix: str = "",
        errors: list[dict[str, Any]] | None = None,
        problem: dict[str, Any] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{status} {title}: {detail}" + (f" ({fix})" if fix else ""))
        self.status = status
        self.title = title
        self.detail = detail
        self.fix = fix
        self.errors = errors or []
        self.problem = problem or {}
        self.retry_after = retry_after

    @property
    def request_id(self) -> str | None:
        value = self.problem.get("request_id")
        return str(value) if value is not None else None


class BadRequest(HubError):
    """400: the body or the query is not of the documented shape."""


class Unauthorized(HubError):
    """401: the token is missing, expired or revoked (the client renews it once by itself)."""


class AuthenticationFailed(HubError):
    """The token endpoint refused the client's credentials (RFC 6749 error)."""


class Forbidden(HubError):
    """403: the client's token lacks the scope this call needs."""


class NotFound(HubError):
    """404: no such object, or one that belongs to another partner."""


class Conflict(HubError):
    """409: the object's state forbids it, or an Idempotency-Key reused with another body."""


class PayloadTooLarge(HubError):
    """413: the body is over a limit."""


class UnsupportedMediaType(HubError):
    """415: the body's type or encoding is not one the endpoint reads."""


class InvalidInput(HubError):
    """422: well-formed input that breaks a rule; ``errors`` lists every bad record."""


class RateLimited(HubError):
    """429: still refused after the client's retries; ``retry_after`` says when to come back."""


class Unavailable(HubError):
    """503: the hub is busy or starting; still refused after the client's retries."""


class ServerError(HubError):
    """Any other 5xx: the hub failed; quote ``request_id`` to the coalition operator."""


_BY_STATUS: dict[int, type[HubError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
    422: InvalidInput,
    429: RateLimited,
    503: Unavailable,
}


def retry_after(response: httpx.Response) -> float | None:
    """Seconds from a ``Retry-After`` header given in seconds (the hub's form), else None."""
    value = response.headers.get("retry-after", "").strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def error_from_response(response: httpx.Response) -> HubError:
    """The :class:`HubError` subclass for a refused response, from its problem detail (or
    from whatever the body is, when a proxy answered instead of the hub)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    problem: dict[str, Any] = body if isinstance(body, dict) else {}
    status = response.status_code
    title = str(problem.get("title") or response.reason_phrase or "Error")
    detail = str(
        problem.get("detail")
        or problem.get("error_description")
        or problem.get("error")
        or response.text[:200]
    )
    kind = _BY_STATUS.get(status, ServerError if status >= 500 else HubError)
    errors = problem.get("errors")
    return kind(
        status,
        title,
        detail,
        fix=str(problem.get("fix") or ""),
        errors=errors if isinstance(errors, list) else None,
        problem=problem,
        retry_after=retry_after(response),
    )
