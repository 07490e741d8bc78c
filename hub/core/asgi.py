"""Small helpers for code that works on raw ASGI scopes (the middlewares)."""

from __future__ import annotations

from typing import Any


def header(scope: Any, name: bytes) -> str | None:
    """The first value of header ``name`` (lower-case bytes, as ASGI gives them), or None."""
    for key, value in scope.get("headers", ()):
        if key == name:
            return str(value.decode("latin-1"))
    return None


def header_bytes(scope: Any, name: bytes) -> bytes | None:
    """The first value of header ``name`` as the raw bytes ASGI gives, or None."""
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value)
    return None
