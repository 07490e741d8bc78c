"""JSON logs with a request id, and the middleware that gives every request one.

Nothing a partner sends is logged: only method, path, status, duration and client id. (Paths
never carry identifiers: digests travel in bodies and query strings, which are not logged.)

Every line on stdout is one JSON object: the hub's own (structlog) and those of the libraries
that log through the standard library -- uvicorn, APScheduler, alembic, asyncio, warnings --
with a traceback as the ``exception`` field of its line, uncaught exceptions included.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import sys
import time
from collections.abc import MutableMapping
from contextvars import ContextVar
from typing import Any

import structlog
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from hub.core import metrics
from hub.core.asgi import header
from hub.core.db import write_intent

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,100}$")
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
# The id of the request being handled; every log line written meanwhile carries it.
request_id_var: ContextVar[str | None] = ContextVar("hub_request_id", default=None)


def add_request_id(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    request_id = request_id_var.get()
    if request_id is not None:
        event.setdefault("request_id", request_id)
    return event


def configure_logging(level: str = "INFO", json: bool = True) -> None:
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    renderer: Any = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        add_request_id,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.WriteLoggerFactory(file=sys.stdout),
        cache_logger_on_first_use=True,
    )
    _route_standard_logging(numeric, shared, renderer)
    sys.excepthook = _log_uncaught


class _HubHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler this module installs on the root logger (replaced, never stacked)."""


def _route_standard_logging(level: int, shared: list[Any], renderer: Any) -> None:
    """Records of the standard library's loggers, rendered like the hub's own lines."""
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = _HubHandler(sys.stdout)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    # Other handlers (a test runner's capture) stay; only an earlier one of ours goes.
    for old in [h for h in root.handlers if isinstance(h, _HubHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "apscheduler"):
        # uvicorn's own configuration may have given them handlers: one line per record.
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    logging.captureWarnings(True)


def _log_uncaught(kind: type[BaseException], value: BaseException, tb: Any) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, value, tb)
        return
    structlog.get_logger("hub").critical("uncaught exception", exc_info=(kind, value, tb))


class RequestContextMiddleware:
    """Request id (``X-Request-ID``), write intent for the database, metrics and access log."""

    def __init__(self, app: ASGIApp, access_log: bool = True) -> None:
        self.app = app
        self.access_log = access_log
        self.log = structlog.get_logger("hub.access")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # type: ignore[comparison-overlap]
            await self.app(scope, receive, send)
            return
        http_scope: Any = scope
        request_id = _incoming_request_id(scope) or new_request_id()
        http_scope.setdefault("state", {})["request_id"] = request_id
        method = http_scope["method"]
        # Reads leave the write intent at its default (False): one context change fewer.
        intent = write_intent.set(True) if method not in SAFE_METHODS else None
        bound = request_id_var.set(request_id)
        status = 500
        started = time.perf_counter()
        header = (b"x-request-id", request_id.encode())

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = message.get("headers", ())
                # Only problem responses (4xx/5xx) may carry the id already (problem_response
                # names it for requests this middleware never sees): scan those alone.
                if status < 400 or not any(name == b"x-request-id" for name, _ in headers):
                    message["headers"] = [*headers, header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            # Raised past us to Litestar's outer exception handler, which sends the response.
            status = int(getattr(exc, "status", getattr(exc, "status_code", 500)))
            raise
        finally:
            elapsed = time.perf_counter() - started
            if intent is not None:
                write_intent.reset(intent)
            route = http_scope.get("path_template") or "unrouted"
            metrics.observe(method, route, status, elapsed)
            if self.access_log:
                self.log.info(
                    "request",
                    method=method,
                    path=http_scope["path"],
                    route=route,
                    status=status,
                    duration_ms=round(elapsed * 1000, 2),
                    client_id=http_scope["state"].get("client_id"),
                )
            request_id_var.reset(bound)


# Request ids: a random per-process prefix and a counter (unique, and no system call per request).
_PREFIX = os.urandom(8).hex()
_COUNTER = itertools.count(1)


def new_request_id() -> str:
    return f"{_PREFIX}{next(_COUNTER):016x}"


def _incoming_request_id(scope: Scope) -> str | None:
    candidate = header(scope, b"x-request-id")
    return candidate if candidate and _REQUEST_ID.match(candidate) else None
