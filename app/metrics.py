"""Prometheus metrics of the API (default registry, served on /metrics with the cache's and pool's)."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Iterator

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

GZIP_COMPRESSIONS = Counter(
    "ras_api_gzip_compressions_total",
    "Bodies gzip-compressed, by what: response (this response only), cached (a cached answer's form, memoized for "
    "later hits), asset (a GraphiQL file, once per process).",
    ["what"],
)
GZIP_MEMO_HITS = Counter(
    "ras_api_gzip_memo_hits_total", "Gzip answers made from a cached answer's memoized compressed form."
)


OTHER_OPERATION = "other"
MAX_OPERATION_LENGTH = 64
MAX_OPERATIONS = 100
# A GraphQL Name: what a real operation name looks like. Anything else (a probe, a payload) is not a name worth a
# time series.
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class OperationLabels:
    """The bounded set of `operation` label values of this process.

    Operation names are chosen by callers, and every distinct label value is a time series kept for the process's
    lifetime: unbounded names would grow /metrics (and the scraper's storage) without limit. So a value is either a
    known name (the server's own documents, `allow`), or one of the first `limit` other well-formed names seen, cut
    to MAX_OPERATION_LENGTH characters; everything else is counted as `other`.
    """

    def __init__(self, limit: int = MAX_OPERATIONS) -> None:
        self._limit = limit
        self._known: set[str] = set()
        self._seen: set[str] = set()

    def allow(self, names: Iterable[str]) -> None:
        """Names that always keep their own label (they do not count against the limit)."""
        self._known.update(name[:MAX_OPERATION_LENGTH] for name in names if _NAME.fullmatch(name))

    def __call__(self, name: str) -> str:
        name = name[:MAX_OPERATION_LENGTH]
        if name in self._known or name in self._seen:
            return name
        if len(self._seen) >= self._limit or not _NAME.fullmatch(name):
            return OTHER_OPERATION
        self._seen.add(name)
        return name


OPERATIONS = OperationLabels()


def record_request(endpoint: str, operation: str, status_code: int, seconds: float) -> None:
    """Count an answered request and observe its duration, under a bounded operation label (`OPERATIONS`).

    `labels()` takes a lock and builds the label tuple on every call, as much as a third of a cached answer's metrics
    cost; each label set's child is looked up once here."""
    label = OPERATIONS(operation)
    _counted(endpoint, label, status_code).inc()
    _timed(endpoint, label).observe(seconds)


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
