"""Prometheus metrics: requests, latency and errors by route.

The request middleware (hub.core.request) records every request in its route's counters.
Requests are handled on the event loop's single thread, so the counts live in plain lists (no
lock per increment, unlike prometheus_client's own metric objects, which take one per counter
and per histogram bucket); a custom collector turns them into the usual families when
``/metrics`` is scraped.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator

from litestar import Response, get
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


class RouteCounters:
    """Counts of one (method, route): requests by status, and the latency histogram."""

    __slots__ = ("buckets", "by_status", "total_seconds")

    def __init__(self) -> None:
        self.by_status: dict[int, int] = {}
        self.buckets = [0] * (len(BUCKETS) + 1)  # the last one is +Inf
        self.total_seconds = 0.0

    def observe(self, status: int, seconds: float) -> None:
        by_status = self.by_status
        by_status[status] = by_status.get(status, 0) + 1
        self.buckets[bisect_left(BUCKETS, seconds)] += 1
        self.total_seconds += seconds


_routes: dict[tuple[str, str], RouteCounters] = {}


def counters(method: str, path: str) -> RouteCounters:
    """The counters of (method, route), created on first use; callers may keep them (the
    request middleware keeps its route's, so a request costs no label lookup)."""
    route = _routes.get((method, path))
    if route is None:
        route = _routes[(method, path)] = RouteCounters()
    return route


def observe(method: str, path: str, status: int, seconds: float) -> None:
    counters(method, path).observe(status, seconds)


class RequestCollector(Collector):
    def collect(self) -> Iterator[Metric]:
        labels = ["method", "path", "status_code"]
        requests = CounterMetricFamily(
            "hub_requests", "HTTP requests by route, method and status", labels=labels
        )
        errors = CounterMetricFamily(
            "hub_requests_error", "HTTP requests answered 4xx or 5xx, by route", labels=labels
        )
        latency = HistogramMetricFamily(
            "hub_request_duration_seconds", "Time to answer, by route", labels=["method", "path"]
        )
        for (method, path), route in list(_routes.items()):
            for status, count in list(route.by_status.items()):
                requests.add_metric([method, path, str(status)], count)
                if status >= 400:
                    errors.add_metric([method, path, str(status)], count)
            cumulative, points = 0, []
            for bound, count in zip([*map(str, BUCKETS), "+Inf"], route.buckets, strict=True):
                cumulative += count
                points.append((bound, cumulative))
            latency.add_metric([method, path], points, route.total_seconds)
        yield requests
        yield errors
        yield latency


REGISTRY.register(RequestCollector())


@get("/metrics", tags=["health"], summary="Prometheus metrics", include_in_schema=False)
async def metrics() -> Response[bytes]:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
