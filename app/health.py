"""Liveness (`/healthz`) and readiness (`/readyz`) of the API.

`/healthz` answers whether the process serves requests at all; it never fails because a dependency is down (an
orchestrator would otherwise restart healthy API processes during a database outage). Its body keeps the shape
the original service's callers parse (REST.md), with each dependency's current state for information.
`/readyz` is what a load balancer asks: 503 while PostgreSQL is unreachable. Redis is reported but never makes
the API unready — the cache fails open. The projection's lag and freshness are reported from the positions the
consumer stores.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import Request
from starlette.responses import JSONResponse

from db.reads import positions_view
from infra.settings import Settings
from infra.version import VERSION

SERVICE = "result_aggregator_service"
CHECK_TIMEOUT_SECONDS = 1.0
Probe = Callable[[], Awaitable[Any]]


async def _check(probe: Probe) -> dict[str, Any]:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_SECONDS):
            await probe()
    except Exception as exc:
        return {"status": "unhealthy", "error": f"{type(exc).__name__}: {exc}"[:300]}
    return {"status": "healthy"}


class Health:
    def __init__(self, settings: Settings, engine: Callable[[], AsyncEngine], redis_ping: Probe | None) -> None:
        self._settings = settings
        self._engine = engine
        self._redis_ping = redis_ping

    async def _database(self) -> None:
        async with self._engine().connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def _dependencies(self) -> dict[str, dict[str, Any]]:
        database, redis = await asyncio.gather(
            _check(self._database),
            _check(self._redis_ping) if self._redis_ping else asyncio.sleep(0, {"status": "disabled"}),
        )
        return {"database": database, "redis": redis}

    async def healthz(self, request: Request) -> JSONResponse:
        dependencies = await self._dependencies()
        dependencies["kafka"] = {"status": "healthy", "note": "the API does not use Kafka; see the consumer's /readyz"}
        all_up = all(d["status"] in ("healthy", "disabled") for d in dependencies.values())
        body = {
            "service": SERVICE,
            "status": "healthy",
            "message": "Process is responsive" + ("" if all_up else "; a dependency is down, see /readyz"),
            "version": VERSION,
            "checks": {"service_responsive": True, "dependencies_available": all_up},
            "dependencies": dependencies,
            "environment": self._settings.environment,
        }
        return JSONResponse(body)

    async def readyz(self, request: Request) -> JSONResponse:
        dependencies = await self._dependencies()
        ready = dependencies["database"]["status"] == "healthy"
        body: dict[str, Any] = {"status": "ready" if ready else "not_ready", "checks": dependencies}
        if ready:
            body["projection"] = await self._projection()
        return JSONResponse(body, status_code=200 if ready else 503)

    async def _projection(self) -> dict[str, Any]:
        async with self._engine().connect() as conn:
            state = await positions_view(conn)
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
