"""Prometheus metrics: requests, latency and errors by route, recorded by the request-context
middleware (one pass per request; label children are cached so a request takes no lock for
label lookup)."""

from __future__ import annotations

from typing import Any

from litestar import Response, get
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest

REQUESTS = Counter(
    "hub_requests_total",
    "HTTP requests by route, method and status",
    ["method", "path", "status_code"],
)
ERRORS = Counter(
    "hub_requests_error_total",
    "HTTP requests answered 4xx or 5xx, by route",
    ["method", "path", "status_code"],
)
LATENCY = Histogram(
    "hub_request_duration_seconds",
    "Time to answer, by route",
    ["method", "path"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0),
)

_children: dict[tuple[str, str, int], tuple[Any, Any, Any]] = {}


def observe(method: str, path: str, status: int, seconds: float) -> None:
    key = (method, path, status)
    children = _children.get(key)
    if children is None:
        code = str(status)
        children = (
            REQUESTS.labels(method, path, code),
            ERRORS.labels(method, path, code) if status >= 400 else None,
            LATENCY.labels(method, path),
        )
        _children[key] = children
    requests, errors, latency = children
    requests.inc()
    if errors is not None:
        errors.inc()
    latency.observe(seconds)


@get("/metrics", tags=["health"], summary="Prometheus metrics", include_in_schema=False)
async def metrics() -> Response[bytes]:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
