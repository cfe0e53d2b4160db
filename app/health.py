"""Liveness (`/healthz`) and readiness (`/readyz`) of the API.

`/healthz` answers whether the process serves requests at all; it never fails because a dependency is down (an
orchestrator would otherwise restart healthy API processes during a database outage). Its body keeps the shape
the original service's callers parse (REST.md), with each dependency's current state for information.
`/readyz` is what a load balancer asks: 503 while PostgreSQL is unreachable. Redis is reported but never makes
the API unready — the cache fails open. Read replicas (`replica <host:port/db>`, as app/replicas.py last found
them) are reported too and never make it unready: while the primary serves, a request falls back to it. The
projection's lag and freshness are reported from the positions the consumer stores.

Both are unauthenticated, so neither may cost the service what its requests need. The dependencies are probed at
most once per PROBE_INTERVAL_SECONDS, whatever the number of callers (callers that arrive while a probe runs share
it), on a database connection and a Redis client of the probe's own, never the request pools; every answer in
between is served from memory. A body says only whether each dependency is healthy: why one is not (an error naming
a host and port) goes to the log, once per change.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from prometheus_client import Counter
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import Request
from starlette.responses import JSONResponse

from app.replicas import Replicas
from db.reads import positions_view
from db.rows import PositionsView
from infra.settings import Settings
from infra.version import VERSION

log = structlog.get_logger(__name__)

SERVICE = "result_aggregator_service"
CHECK_TIMEOUT_SECONDS = 1.0
PROBE_INTERVAL_SECONDS = 1.0
HEALTHY, UNHEALTHY, DISABLED = "healthy", "unhealthy", "disabled"

PROBES = Counter("ras_health_probes_total", "Dependency probes run for /healthz and /readyz (at most one a second).")


@dataclass(frozen=True, slots=True)
class Probed:
    """One probe's findings, as served until the next."""

    at: float  # the event loop's clock when it ended
    dependencies: dict[str, str]  # name -> HEALTHY / UNHEALTHY / DISABLED
    projection: dict[str, Any] | None  # None unless the database answered

    @property
    def ready(self) -> bool:
        return self.dependencies["database"] == HEALTHY


class Health:
    """The /healthz and /readyz endpoints over a memo of the last probe.

    `engine` is the probe's own (app/side_pool.py); `redis`: whether the app uses Redis, which the probe then pings
    with a client of its own; `replicas`: the read replicas whose state to report."""

    def __init__(
        self, settings: Settings, engine: Callable[[], AsyncEngine], redis: bool, replicas: Replicas | None = None
    ) -> None:
        self._settings = settings
        self._replicas = replicas
        self._engine = engine
        self._redis: Redis | None = _probe_client(settings) if redis else None
        self._last: Probed | None = None
        self._probing: asyncio.Task[Probed] | None = None
        self._reasons: dict[str, str | None] = {}

    async def aclose(self) -> None:
        if self._probing is not None:
            self._probing.cancel()
            await asyncio.gather(self._probing, return_exceptions=True)
        if self._redis is not None:
            await self._redis.aclose()

    async def current(self) -> Probed:
        """The last probe's findings while they are fresh, else those of the probe running now (started if none)."""
        last = self._last
        if last is not None and asyncio.get_running_loop().time() - last.at < PROBE_INTERVAL_SECONDS:
            return last
        if self._probing is None:
            self._probing = asyncio.create_task(self._probe(), name="health-probe")
        # Shielded: a caller that leaves (its client hung up) does not cancel the probe the others wait for.
        return await asyncio.shield(self._probing)

    async def _probe(self) -> Probed:
        try:
            PROBES.inc()
            database, projection = await self._database()
            redis = DISABLED if self._redis is None else await self._check("redis", self._redis.ping)
            dependencies = {"database": database, "redis": redis}
            for replica in self._replicas.replicas if self._replicas is not None else ():
                dependencies[f"replica {replica.name}"] = HEALTHY if replica.up else UNHEALTHY
            probed = Probed(asyncio.get_running_loop().time(), dependencies, projection)
            self._last = probed
            return probed
        finally:
            self._probing = None

    async def _database(self) -> tuple[str, dict[str, Any] | None]:
        projection: dict[str, Any] | None = None

        async def read() -> None:
            nonlocal projection
            async with self._engine().connect() as conn:
                await conn.execute(text("SELECT 1"))
                projection = _projection(await positions_view(conn))

        status = await self._check("database", read)
        return status, projection

    async def _check(self, name: str, probe: Callable[[], Any]) -> str:
        try:
            async with asyncio.timeout(CHECK_TIMEOUT_SECONDS):
                await probe()
        except Exception as exc:
            self._changed(name, f"{type(exc).__name__}: {exc}"[:300])
            return UNHEALTHY
        self._changed(name, None)
        return HEALTHY

    def _changed(self, name: str, reason: str | None) -> None:
        """Log a dependency's state when it changes: the reason is for operators, not for the unauthenticated."""
        if name in self._reasons and self._reasons[name] == reason:
            return
        self._reasons[name] = reason
        if reason is None:
            log.info("health: dependency healthy", dependency=name)
        else:
            log.warning("health: dependency unhealthy", dependency=name, reason=reason)

    async def healthz(self, request: Request) -> JSONResponse:
        probed = await self.current()
        dependencies: dict[str, dict[str, str]] = {name: {"status": s} for name, s in probed.dependencies.items()}
        dependencies["kafka"] = {"status": HEALTHY, "note": "the API does not use Kafka; see the consumer's /readyz"}
        all_up = all(s in (HEALTHY, DISABLED) for s in probed.dependencies.values())
        body = {
            "service": SERVICE,
            "status": HEALTHY,
            "message": "Process is responsive" + ("" if all_up else "; a dependency is down, see /readyz"),
            "version": VERSION,
            "checks": {"service_responsive": True, "dependencies_available": all_up},
            "dependencies": dependencies,
            "environment": self._settings.environment,
        }
        return JSONResponse(body)

    async def readyz(self, request: Request) -> JSONResponse:
        probed = await self.current()
        checks = {name: {"status": status} for name, status in probed.dependencies.items()}
        body: dict[str, Any] = {"status": "ready" if probed.ready else "not_ready", "checks": checks}
        if probed.ready:
            body["projection"] = probed.projection
        return JSONResponse(body, status_code=200 if probed.ready else 503)


def _probe_client(settings: Settings) -> Redis:
    """One connection, no retries: a probe is one PING, and a Redis that does not answer is the finding."""
    return Redis.from_url(
        settings.redis_url,
        socket_timeout=CHECK_TIMEOUT_SECONDS,
        socket_connect_timeout=CHECK_TIMEOUT_SECONDS,
        retry=Retry(NoBackoff(), 0),
        max_connections=1,
    )


def _projection(state: PositionsView) -> dict[str, Any]:
    lags = [p.lag for p in state.positions if p.lag is not None]
    newest = max((p.last_event_at for p in state.positions if p.last_event_at), default=None)
    applied = max((p.updated_at for p in state.positions), default=None)
    return {
        "partitions": len(state.positions),
        "lag": sum(lags) if lags else None,
        "newest_event_at": newest.isoformat() if newest else None,
        "last_applied_at": applied.isoformat() if applied else None,
        "seconds_since_last_apply": (datetime.now(UTC) - applied).total_seconds() if applied else None,
        "quarantined": state.quarantined,
    }
