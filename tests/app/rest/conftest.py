"""A REST client over HTTP (httpx against the ASGI app) on each test's fresh database, with and without the cache."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette

from app.cache import QueryCache
from app.main import create_app
from app.rest import routes as rest
from consumer.eviction import Evictor
from infra.settings import Settings
from tests.app.graphql.conftest import AUTH, settings_for
from tests.helpers.cache import cache_settings, pair
from tests.helpers.events import fixture_messages, project


@dataclass
class Rest:
    """GETs under /internal/v1 with the test service's credentials (and, when given, an X-User-ID)."""

    client: httpx.AsyncClient

    async def get(
        self,
        path: str,
        *,
        user: str | None = None,
        params: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        sent = dict(AUTH if headers is None else headers)
        if user is not None:
            sent["X-User-ID"] = user
        if params is None:  # keep a query string written into `path`
            return await self.client.get(rest.PREFIX + path, headers=sent)
        # A sequence of pairs can repeat a parameter; httpx takes both forms as a list of pairs.
        pairs: list[tuple[str, str | int | float | bool | None]] = list(
            params.items() if isinstance(params, Mapping) else params
        )
        return await self.client.get(rest.PREFIX + path, params=pairs, headers=sent)

    async def json(self, path: str, **kwargs: Any) -> Any:
        response = await self.get(path, **kwargs)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/json"
        return response.json()


def client_for(app: Starlette) -> Rest:
    return Rest(httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ras.test"))


def cached_app(engine: AsyncEngine, settings: Settings, cache: QueryCache) -> Starlette:
    """The real application with the result cache, as `ras serve` builds it."""
    return create_app(settings, engine, cache=cache)


@pytest.fixture
async def api(engine: AsyncEngine) -> AsyncIterator[Rest]:
    """The real application (create_app), without a cache."""
    client = client_for(create_app(settings_for(), engine))
    async with client.client:
        yield client


@dataclass
class CachedStack:
    api: Rest
    cache: QueryCache
    evictor: Evictor
    settings: Settings


@pytest.fixture
async def cached(engine: AsyncEngine, redis_url: str) -> AsyncIterator[CachedStack]:
    """The REST routes in front of a QueryCache on the test Redis (private prefix) and its consumer-side Evictor."""
    base = settings_for()
    settings = cache_settings(
        redis_url,
        internal_api_key=base.internal_api_key,
        allowed_service_ids=base.allowed_service_ids,
    )
    cache, evictor = pair(settings)
    client = client_for(cached_app(engine, settings, cache))
    async with client.client:
        yield CachedStack(client, cache, evictor, settings)
    await cache.aclose()
    await evictor.aclose()


@pytest.fixture
async def gen2(engine: AsyncEngine) -> None:
    """The gen 2 fixtures, projected."""
    await project(engine, fixture_messages("gen2"))


@pytest.fixture
async def gen1(engine: AsyncEngine) -> None:
    """The gen 1 fixtures, projected."""
    await project(engine, fixture_messages("gen1"))
