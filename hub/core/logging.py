"""JSON logs with a request id (hub.core.request gives every request one).

Nothing a partner sends is logged: only method, path, status, duration and client id. (Paths
never carry identifiers: digests travel in bodies and query strings, which are not logged.)

Every line on stdout is one JSON object: the hub's own (structlog) and those of the libraries
that log through the standard library -- uvicorn, APScheduler, alembic, asyncio, warnings --
with a traceback as the ``exception`` field of its line, uncaught exceptions included.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from contextvars import ContextVar
from typing import Any

import structlog

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
