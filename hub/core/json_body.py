"""The one check every JSON request body passes before any decoder sees it.

msgspec decodes bodies recursively and hands strings to Python's UTF-8 decoder: a body nested
a thousand deep raises ``RecursionError`` and invalid UTF-8 raises ``UnicodeDecodeError``, both
outside what the handlers' validation catches. A JSON string may also spell characters no
database column takes (a lone UTF-16 surrogate ``\\ud800``, which no encoder can write, and NUL,
which PostgreSQL refuses and SQLite would keep). So every JSON body of the API is read here,
whole (it is bounded by the route's body limit), checked, and replayed to the handler:

* the body is UTF-8 (RFC 8259 §8.1), so overlong forms, encoded surrogates and UTF-16 are 400s;
* arrays and objects nest at most :data:`MAX_DEPTH` levels (no request shape needs more);
* string escapes name no lone surrogate and no NUL (well-formed JSON, so a 422);
* the body is not compressed (the JSON endpoints read plain bodies; bulk data has uploads).
"""

from __future__ import annotations

import re
from typing import Any

from hub.core.asgi import header
from hub.core.content_type import BODY_METHODS, CONTENT_TYPES_OPT, JSON_TYPES
from hub.core.errors import BadRequest, InvalidInput, PayloadTooLarge, UnsupportedMediaType

MAX_DEPTH = 32
_OPENERS = (b"[", b"{")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_INNERMOST = re.compile(rb"\[\]|\{\}")
# Escapes worth a closer look: any surrogate half, and NUL.
_SUSPECT_ESCAPE = re.compile(rb"\\u(?:[dD][89a-fA-F][0-9a-fA-F]{2}|0000)")
# Every escape, left to right, so that an escaped backslash is never mistaken for one.
_ESCAPE = re.compile(rb"\\(?:u([0-9a-fA-F]{4})|.)", re.DOTALL)
_FIX = "Send UTF-8 JSON (RFC 8259) of the documented shape (see /schema)."


class JsonBodyMiddleware:
    """Reads, checks and replays the JSON body of API writes (see the module docstring)."""

    def __init__(self, app: Any, path_prefix: str = "/v1/") -> None:
        self.app = app
        self.path_prefix = path_prefix

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if not _reads_json(scope, self.path_prefix):
            await self.app(scope, receive, send)
            return
        encoding = (header(scope, b"content-encoding") or "identity").strip().lower()
        if encoding != "identity":
            raise UnsupportedMediaType(
                f"JSON bodies are read uncompressed, not with Content-Encoding {encoding[:40]}.",
                fix="Send the JSON without Content-Encoding (bulk data: POST "
                "/v1/identifiers/uploads takes gzip).",
            )
        body = await _read_body(scope, receive)
        if body is None:  # the client went away before sending it all: nothing to answer
            return
        check_json_body(body)
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


def _reads_json(scope: Any, path_prefix: str) -> bool:
    if scope["type"] != "http" or scope["method"] not in BODY_METHODS:
        return False
    if not scope["path"].startswith(path_prefix):
        return False
    accepted = getattr(scope.get("route_handler"), "opt", {}).get(CONTENT_TYPES_OPT, JSON_TYPES)
    return bool(accepted == JSON_TYPES)


async def _read_body(scope: Any, receive: Any) -> bytes | None:
    route_handler = scope.get("route_handler")
    limit = route_handler.resolve_request_max_body_size() if route_handler else None
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if limit is not None and size > limit:
            raise PayloadTooLarge(
                f"A JSON body is at most {limit:,} bytes.",
                fix="Send a smaller body; bulk data has the upload endpoint.",
            )
        parts.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(parts)


def check_json_body(body: bytes) -> None:
    """Raise :class:`BadRequest` for a body no JSON decoder of the hub should be handed, and
    :class:`InvalidInput` for well-formed JSON whose strings the hub cannot store."""
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(
            f"The body is not UTF-8: byte {exc.start} ({body[exc.start : exc.start + 1]!r}) "
            f"cannot be decoded ({exc.reason}).",
            fix=_FIX,
        ) from None
    if too_deep(body, MAX_DEPTH):
        raise BadRequest(
            f"The JSON nests arrays and objects more than {MAX_DEPTH} levels deep, "
            "or its brackets do not balance.",
            fix=f"Send the documented shape; no request nests deeper than {MAX_DEPTH} levels.",
        )
    bad_escape = unstorable_escape(body)
    if bad_escape is not None:
        # Well-formed JSON a schema allows, that no column can hold: a 422, not a 400.
        raise InvalidInput(
            f"A JSON string holds {bad_escape}, which the hub cannot store.",
            fix="Remove NUL characters and unpaired UTF-16 surrogate escapes from the strings.",
        )


def too_deep(body: bytes, limit: int) -> bool:
    """True when the body's arrays and objects nest more than ``limit`` deep (or do not
    balance within that many levels). Linear: one pass per level, in C, and none at all for
    the usual body with fewer brackets than the limit."""
    if sum(body.count(opener) for opener in _OPENERS) <= limit:
        return False
    brackets = _outside_strings(body).translate(None, _NOT_BRACKETS)
    for _ in range(limit):
        if not brackets:
            return False
        brackets = _INNERMOST.sub(b"", brackets)
    return bool(brackets)


def _outside_strings(body: bytes) -> bytes:
    """The body with its strings' contents left out. Escapes are two-byte tokens, so removing
    escaped backslashes and then escaped quotes, left to right, leaves every remaining quote a
    string's opening or closing one (linear, and in C)."""
    unescaped = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    return b"".join(unescaped.split(b'"')[::2])


def unstorable_escape(body: bytes) -> str | None:
    """A description of the first NUL or lone surrogate a string escape spells, or None."""
    if _SUSPECT_ESCAPE.search(body) is None:
        return None
    pending_high: str | None = None  # a high surrogate waiting for its low half
    last_end = -1
    for match in _ESCAPE.finditer(body):
        code = int(match.group(1), 16) if match.group(1) else None
        adjacent = match.start() == last_end
        last_end = match.end()
        if pending_high is not None:
            if not (adjacent and code is not None and 0xDC00 <= code <= 0xDFFF):
                return f"an unpaired surrogate {pending_high}"
            pending_high = None
            continue
        if code is None:
            continue
        if code == 0:
            return "a NUL character (\\u0000)"
        if 0xD800 <= code <= 0xDBFF:
            pending_high = f"\\u{code:04x}"
        elif 0xDC00 <= code <= 0xDFFF:
            return f"an unpaired surrogate \\u{code:04x}"
    if pending_high is not None:
        return f"an unpaired surrogate {pending_high}"
    return None
