"""The HTTP application: `create_app` builds it, `serve` runs it with uvicorn on RAS_HOST:RAS_PORT, and the metrics
listener on RAS_HOST:RAS_METRICS_PORT."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
import uvicorn
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Mount, Route, WebSocketRoute
from uvicorn.config import STARTUP_FAILURE

from app import graphiql, metrics
from app.admission import AdmissionGate
from app.cache import QueryCache
from app.compression import Compression
from app.graphql.endpoint import GraphQLEndpoint
from app.graphql.schema import build_schema
from app.health import Health
from app.http_guards import guarded_protocol
from app.limits import ApiLimits, limits_from
from app.live import EventHub
from app.metrics_access import authenticated_metrics
from app.reads.consistency import Consistency
from app.reads.context import correlation_id
from app.replicas import Replicas
from app.rest import routes as rest
from app.side_pool import SidePool
from app.tracing import TracedRequests
from db.engine import create_engine
from infra.failures import database, reaching
from infra.http_server import TaskServer, listen
from infra.prometheus import METRICS_PATH, metrics_app
from infra.settings import DATABASE_POOL_OVERFLOW, Settings
from infra.tracing import Tracing, from_environment
from infra.wait import wait_for

log = structlog.get_logger(__name__)

GRAPHQL_PATH = "/graphql"
# A request must not hang on a database that accepts connections but never answers.
CONNECT_TIMEOUT_SECONDS = 5


class _EngineHolder:
    """The engine the app reads through: given by the caller, or made and disposed of by the app's lifespan."""

    def __init__(self, engine: AsyncEngine | None) -> None:
        self.engine = engine

    def __call__(self) -> AsyncEngine:
        if self.engine is None:
            raise RuntimeError("the app's lifespan has not started: no database engine yet")
        return self.engine


def create_app(
    settings: Settings,
    engine: AsyncEngine | None = None,
    limits: ApiLimits | None = None,
    cache: QueryCache | None = None,
    events: EventHub | None = None,
    graphiql_prefill: graphiql.Prefill | None = None,
    tracing: Tracing | None = None,
    replicas: Replicas | None = None,
) -> Starlette:
    """The ASGI app. Without `engine`, the lifespan waits for the database, creates an engine from settings and
    disposes of it on shutdown. `cache` (see `serve`) caches GraphQL and REST results; the app closes it.
    `events` (see `serve`) serves subscriptions and read-your-writes waits; the lifespan starts and closes it.

    `limits` overrides the limits settings give (tests use it). `graphiql_prefill` is what GraphiQL's page fills
    in beyond the service id (`ras dev` gives its key and the demo's ids). `tracing` (see `serve`; None: off) traces
    GraphQL and REST requests (app/tracing.py); give `cache` the same tracing's tracer for its lookups' spans.
    `replicas` (see `serve`; None: none) serve the requests' reads; the lifespan samples them and closes them.
    """
    limits = limits or limits_from(settings)
    holder = _EngineHolder(engine)
    # Readiness probes and read-your-writes position reads each get a connection of their own, never one a request
    # needs (app/side_pool.py).
    probe_pool, positions_pool = SidePool(holder, 1), SidePool(holder, 1)
    health = Health(settings, probe_pool, redis=cache is not None, replicas=replicas)
    consistency = Consistency(
        events, positions_pool, settings.consistency_max_wait_ms, settings.consistency_max_waiters
    )
    metrics.OPERATIONS.allow(graphiql.example_operation_names())
    if limits.graphiql:
        graphiql.assets()  # a missing or altered GraphiQL file stops start-up, not a developer's page load

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        if engine is None:
            holder.engine = await _connected_engine(settings)
        metrics.POOL.engine = lambda: holder.engine
        if events is not None:
            await events.start()
        if replicas is not None:
            replicas.start(probe_pool)
        try:
            yield
        finally:
            if events is not None:
                await events.aclose()  # ends every subscription's stream, so connections can close
            if cache is not None:
                await cache.aclose()
            await graphql.aclose()  # its persisted documents' Redis client
            await health.aclose()
            if replicas is not None:
                await replicas.aclose()
            await probe_pool.dispose()
            await positions_pool.dispose()
            if engine is None and holder.engine is not None:
                await holder.engine.dispose()
                holder.engine = None

    compression = Compression.from_settings(settings)  # one memo of compressed cached answers for both APIs
    provider = tracing.provider if tracing is not None else None
    tracer = tracing.tracer("app") if tracing is not None else None
    schema = build_schema(limits, tracing=provider)
    # One execution limit for GraphQL and REST: they share the process's loop and request pool (app/admission.py).
    gate = AdmissionGate(settings.max_concurrent_executions, settings.admission_wait_seconds)
    graphql = GraphQLEndpoint(
        schema, settings, limits, holder, cache, events, consistency, compression, tracer, gate, replicas
    )
    routes = [
        Route(GRAPHQL_PATH, graphql),
        WebSocketRoute(GRAPHQL_PATH, graphql),
        # One breaker for both: they read the same database.
        Mount(
            rest.PREFIX,
            routes=rest.routes(settings, limits, holder, cache, graphql.breaker, compression, tracer, gate, replicas),
        ),
        Route("/healthz", health.healthz),
        Route("/readyz", health.readyz),
        Route(METRICS_PATH, authenticated_metrics(settings, correlation_id), methods=["GET", "HEAD"]),
    ]
    if limits.graphiql:
        asset_endpoint = graphiql.asset_endpoint(compression)
        routes.append(Route(graphiql.ASSET_PATH + "/{name}", asset_endpoint, methods=["GET", "HEAD"]))
    traced = [] if tracer is None else [Middleware(TracedRequests, tracer=tracer, paths=(GRAPHQL_PATH, rest.PREFIX))]
    app = Starlette(routes=routes, lifespan=lifespan, middleware=traced)
    setattr(app.state, graphiql.PREFILL_STATE, graphiql_prefill)
    return app


async def _connected_engine(settings: Settings) -> AsyncEngine:
    engine = create_engine(
        settings.database_url,
        pool_size=settings.database_pool_size,
        max_overflow=DATABASE_POOL_OVERFLOW,
        pool_pre_ping=True,
        connect_args={"timeout": CONNECT_TIMEOUT_SECONDS},
    )

    async def probe() -> None:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    await wait_for("database", engine.url.render_as_string(hide_password=True), probe, settings.startup_timeout_seconds)
    return engine


async def _database_answers(settings: Settings) -> None:
    """Wait for the database as the lifespan will, but before uvicorn starts: a database that never answers is then
    reported in one line by `ras serve` instead of as a failed ASGI lifespan."""
    engine = await _connected_engine(settings)
    await engine.dispose()


def server_config(settings: Settings, app: Starlette) -> uvicorn.Config:
    """uvicorn's options for `app` as `ras serve` runs it: the connection guards of app/http_guards.py (head and
    body deadlines, connections per address), logging through the process's own (`log_config=None`: no handlers of
    uvicorn's, so its lines are JSON like every other) and the graceful shutdown's bound."""
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        http=guarded_protocol(settings, correlation_id),
        log_config=None,
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=settings.shutdown_grace_seconds,
    )


def serve(settings: Settings) -> None:
    """Run the API until SIGTERM/SIGINT (what `ras serve` does); uvicorn then stops accepting connections and
    lets requests in flight finish, for at most RAS_SHUTDOWN_GRACE_SECONDS. The metrics listener
    (RAS_METRICS_PORT, unless 0) runs beside it and stops with it.

    Tracing is on when the `OTEL_*` variables say so (infra/tracing.py). The ports are bound first, so a taken one
    is reported at once (`PortUnavailable`); then the database is waited for (a `CommandFailure` when it does not
    answer). uvicorn logs through the process's logging (`log_config=None`: no handlers of its own), so its lines are
    JSON like every other.
    """
    tracing = from_environment("ras-api")
    with contextlib.ExitStack() as sockets:
        if tracing is not None:
            sockets.callback(tracing.shutdown)  # last: exports the spans still batched
        sock = sockets.enter_context(listen(settings.host, settings.port, "--port (RAS_PORT)", "--host (RAS_HOST)"))
        metrics_sock = None
        if settings.metrics_port:
            metrics_sock = sockets.enter_context(
                listen(settings.host, settings.metrics_port, "RAS_METRICS_PORT", "--host (RAS_HOST)")
            )
        tracer = tracing.tracer("app.cache") if tracing is not None else None
        cache = QueryCache.from_settings(settings, tracer) if settings.cache_enabled else None
        events = EventHub.from_settings(settings) if settings.live_updates_enabled else None
        replicas = Replicas.from_settings(settings)
        app = create_app(settings, cache=cache, events=events, tracing=tracing, replicas=replicas)
        config = server_config(settings, app)
        server = uvicorn.Server(config)
        with asyncio.Runner(loop_factory=config.get_loop_factory()) as runner:
            with reaching(database(settings.database_url)):
                runner.run(_database_answers(settings))
            log.info("API listening", host=settings.host, port=settings.port, metrics_port=settings.metrics_port)
            runner.run(_serve(settings, server, sock, metrics_sock))
    if not server.started:
        # The lifespan failed after the database had answered; uvicorn has logged why.
        raise SystemExit(STARTUP_FAILURE)


async def _serve(
    settings: Settings, server: uvicorn.Server, sock: socket.socket, metrics_sock: socket.socket | None
) -> None:
    """The API's server until it stops, with the metrics listener beside it when there is one."""
    if metrics_sock is None:
        await server.serve(sockets=[sock])
        return
    metrics = TaskServer(metrics_config(settings))
    listening = asyncio.create_task(metrics.serve(sockets=[metrics_sock]), name="metrics-listener")
    try:
        await server.serve(sockets=[sock])
    finally:
        metrics.should_exit = True
        await listening


def metrics_config(settings: Settings) -> uvicorn.Config:
    """uvicorn's options for the metrics listener: the same connection guards as the API (the port has no
    credentials, so it must not be held open by a slow client either), no lifespan."""
    return uvicorn.Config(
        metrics_app(),
        http=guarded_protocol(settings, correlation_id),
        log_config=None,
        log_level="warning",
        lifespan="off",
    )
