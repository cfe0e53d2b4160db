"""The consumer's own small HTTP server on RAS_CONSUMER_METRICS_PORT: /metrics, /healthz and /readyz.

Liveness is the process answering at all. Readiness means the consumer has joined its group and been assigned
partitions, and can reach PostgreSQL; the body also reports the stored positions' lag and freshness.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import uvicorn
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from db.reads import positions_view
from infra.http_server import TaskServer
from infra.prometheus import metrics_endpoint

CHECK_TIMEOUT_SECONDS = 1.0


def ops_app(engine: AsyncEngine, assigned: Callable[[], bool]) -> Starlette:
    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "healthy", "service": "result_aggregator_consumer"})

    async def readyz(request: Request) -> JSONResponse:
        body: dict[str, Any] = {"assigned": assigned()}
        try:
            async with asyncio.timeout(CHECK_TIMEOUT_SECONDS), engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
                state = await positions_view(conn)
        except Exception as exc:
            body["database"] = {"status": "unhealthy", "error": f"{type(exc).__name__}: {exc}"[:300]}
            return JSONResponse({"status": "not_ready", **body}, status_code=503)
        lags = [p.lag for p in state.positions if p.lag is not None]
        body["database"] = {"status": "healthy"}
        body["lag"] = sum(lags) if lags else None
        body["partitions_with_positions"] = len(state.positions)
        body["quarantined"] = state.quarantined
        ready = bool(body["assigned"])
        return JSONResponse({"status": "ready" if ready else "not_ready", **body}, status_code=200 if ready else 503)

    routes = [Route("/healthz", healthz), Route("/readyz", readyz), Route("/metrics", metrics_endpoint)]
    return Starlette(routes=routes)


def ops_server(app: Starlette, host: str, port: int) -> TaskServer:
    """The consumer's ops server; its lines go through the process's logging (`log_config=None`)."""
    config = uvicorn.Config(app, host=host, port=port, log_config=None, log_level="warning", lifespan="off")
    return TaskServer(config)
