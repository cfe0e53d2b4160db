"""The HTTP application: `create_app` builds it, `serve` runs it with uvicorn on RAS_HOST:RAS_PORT."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from starlette.applications import Starlette
from starlette.routing import Route

from app import graphiql
from app.endpoint import GraphQLEndpoint
from app.limits import ApiLimits, limits_from
from app.schema import build_schema
from ras.settings import Settings

GRAPHQL_PATH = "/graphql"


class _EngineHolder:
    """The engine the app reads through: given by the caller, or made and disposed of by the app's lifespan."""

    def __init__(self, engine: AsyncEngine | None) -> None:
        self.engine = engine

    def __call__(self) -> AsyncEngine:
        if self.engine is None:
            raise RuntimeError("the app's lifespan has not started: no database engine yet")
        return self.engine


def create_app(settings: Settings, engine: AsyncEngine | None = None, limits: ApiLimits | None = None) -> Starlette:
    """The ASGI app. Without `engine`, the lifespan creates one from settings and disposes of it on shutdown.

    `limits` overrides the limits settings give (tests use it).
    """
    limits = limits or limits_from(settings)
    holder = _EngineHolder(engine)
    if limits.graphiql:
        graphiql.assets()  # a missing or altered GraphiQL file stops start-up, not a developer's page load

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        if engine is not None:
            yield
            return
        holder.engine = create_async_engine(
            settings.database_url, pool_size=settings.database_pool_size, pool_pre_ping=True
        )
        try:
            yield
        finally:
            await holder.engine.dispose()
            holder.engine = None

    endpoint = GraphQLEndpoint(build_schema(limits), settings, limits, holder)
    routes = [Route(GRAPHQL_PATH, endpoint)]
    if limits.graphiql:
        routes.append(Route(graphiql.ASSET_PATH + "/{name}", graphiql.asset_endpoint, methods=["GET", "HEAD"]))
    return Starlette(routes=routes, lifespan=lifespan)


def serve(settings: Settings) -> None:
    """Run the API until interrupted (what `ras serve` does)."""
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=settings.log_level.lower())
