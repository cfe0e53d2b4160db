"""Prometheus metrics of the API (default registry, served on /metrics with the cache's and pool's)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import REGISTRY, Collector
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import QueuePool

REQUESTS = Counter(
    "ras_api_requests_total",
    "HTTP requests by endpoint, operation name (GraphQL) or route (REST), and status code.",
    ["endpoint", "operation", "status_code"],
)
REQUEST_SECONDS = Histogram(
    "ras_api_request_duration_seconds",
    "Time to answer a request, by endpoint and operation name.",
    ["endpoint", "operation"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
GRAPHQL_ERRORS = Counter("ras_api_graphql_errors_total", "GraphQL errors returned, by code.", ["code"])
GRAPHQL_EXECUTOR = Gauge(
    "ras_graphql_executor",
    "1 for the GraphQL executor in use: fast (app/graphql/execution.py) or stock (Strawberry's own: "
    "RAS_GRAPHQL_EXECUTOR, or "
    "the fast path's start-up check failed, see the log).",
    ["executor"],
)


def record_request(endpoint: str, operation: str, status_code: int, seconds: float) -> None:
    """Count an answered request and observe its duration.

    `labels()` takes a lock and builds the label tuple on every call, as much as a third of a cached answer's metrics
    cost; each label set's child is looked up once here (bounded: operation names come from callers)."""
    _counted(endpoint, operation, status_code).inc()
    _timed(endpoint, operation).observe(seconds)


@functools.lru_cache(maxsize=1024)
def _counted(endpoint: str, operation: str, status_code: int) -> Counter:
    return REQUESTS.labels(endpoint, operation, str(status_code))


@functools.lru_cache(maxsize=1024)
def _timed(endpoint: str, operation: str) -> Histogram:
    return REQUEST_SECONDS.labels(endpoint, operation)


class PoolCollector(Collector):
    """Database connection pool usage of the app's engine, read at scrape time."""

    def __init__(self) -> None:
        self.engine: Callable[[], AsyncEngine | None] = lambda: None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        engine = self.engine()
        pool = engine.sync_engine.pool if engine is not None else None
        if not isinstance(pool, QueuePool):
            return
        gauge = GaugeMetricFamily("ras_db_pool_connections", "Database pool connections by state.", labels=["state"])
        gauge.add_metric(["checked_out"], pool.checkedout())
        gauge.add_metric(["idle"], pool.checkedin())
        gauge.add_metric(["overflow"], max(pool.overflow(), 0))
        gauge.add_metric(["size"], pool.size())
        yield gauge


POOL = PoolCollector()
REGISTRY.register(POOL)
