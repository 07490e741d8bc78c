"""The error answers the OpenAPI document gives every operation: one RFC 9457 ``Problem``
schema, what each status means here, and the headers that come with it (RFC 6750, RFC 9110)."""

from __future__ import annotations

import copy
from typing import Any

from hub.core.errors import PROBLEM_JSON

JSON = "application/json"
PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}

PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "Problem",
    "description": "An RFC 9457 problem detail: what was wrong (detail) and how to fix it (fix).",
    "required": ["type", "title", "status", "detail", "fix"],
    "properties": {
        "type": {"type": "string", "examples": ["urn:hub:problem:invalid-input"]},
        "title": {"type": "string", "examples": ["Input breaks a rule"]},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {
            "type": "string",
            "examples": ["1 of 2 records are invalid; nothing was stored."],
        },
        "fix": {"type": "string", "examples": ["Correct the fields listed in 'errors'."]},
        "instance": {"type": "string", "description": "The request's path."},
        "request_id": {"type": "string", "description": "Also in the x-request-id header."},
        "errors": {
            "type": "array",
            "description": "Every bad item or field of the request.",
            "items": {
                "type": "object",
                "required": ["field", "reason"],
                "properties": {
                    "index": {"type": "integer", "description": "The item's position"},
                    "field": {"type": "string", "description": "The field ('' for the item)"},
                    "source": {"type": "string", "description": "body, query, path or header"},
                    "reason": {"type": "string"},
                },
            },
        },
        "retry_after": {"type": "integer", "minimum": 1, "description": "429: seconds to wait"},
    },
}
STATUS_DESCRIPTIONS = {
    400: "The request is not of the documented shape (malformed JSON, a parameter of the wrong "
    "type, a field missing or unknown).",
    401: "No access token, or one that is invalid, expired or revoked (RFC 6750).",
    403: "The token lacks the scope this operation needs, or acts for no partner where one is "
    "needed, or the object is not the caller's to change.",
    404: "No such object is visible to the caller.",
    408: "The request body arrived too slowly.",
    409: "The request conflicts with the current state (or with a concurrent request, or an "
    "Idempotency-Key used for another request).",
    413: "The request body (or its number of items) is over the limit.",
    415: "The body is not in a media type this operation reads.",
    422: "Well-formed input that breaks a rule; 'errors' lists every bad item and field.",
    429: "The client is over its rate limit; retry after Retry-After seconds.",
    503: "The database is busy or unreachable; nothing was changed. Retry after Retry-After.",
}
RETRY_AFTER = {"schema": {"type": "integer", "minimum": 1}, "required": True}
WWW_AUTHENTICATE = {"schema": {"type": "string"}, "description": "RFC 6750 §3 challenge"}
STATUS_HEADERS: dict[int, dict[str, Any]] = {
    401: {"WWW-Authenticate": {**WWW_AUTHENTICATE, "required": True}},
    403: {"WWW-Authenticate": WWW_AUTHENTICATE},
    429: {"Retry-After": RETRY_AFTER},
    503: {"Retry-After": RETRY_AFTER},
}


def error_response(status: int, error_schema: dict[str, Any] | None) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": STATUS_DESCRIPTIONS[status],
        "content": {PROBLEM_JSON: {"schema": PROBLEM_REF}},
    }
    if error_schema is not None and status != 503:
        # RFC 6749 §5.2 errors; a busy database is still a problem detail (app-wide handler).
        response["content"] = {JSON: {"schema": error_schema}}
        if status != 429:
            return response
    if status in STATUS_HEADERS:
        response["headers"] = copy.deepcopy(STATUS_HEADERS[status])
    return response


__all__ = ["PROBLEM_SCHEMA", "STATUS_DESCRIPTIONS", "error_response"]
