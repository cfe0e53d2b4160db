"""An API client over HTTP (httpx against the ASGI app) on each test's fresh database."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncEngine

from app.limits import ApiLimits
from app.main import create_app
from infra.settings import Settings
from tests.helpers.cache import cache_settings, pair
from tests.helpers.events import fixture_messages, project

API_KEY = "test-internal-key-long-enough-for-production"
SERVICE_ID = "api-gateway-service"
AUTH = {"X-Internal-API-Key": API_KEY, "X-Service-ID": SERVICE_ID}

# The gen 1 and gen 2 fixtures describe the same batch of teacher-3f9a.
FIXTURE_BATCH = "7b1f0c52-3d7e-4a51-9a57-5a0f3c1e2b01"
FIXTURE_USER = "teacher-3f9a"


def settings_for(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": "postgresql+asyncpg://unused/unused",  # the app gets the test engine instead
        "internal_api_key": SecretStr(API_KEY),
        "allowed_service_ids": (SERVICE_ID, "admin-dashboard-service"),
        "environment": "development",
    }
    values.update(overrides)
    return Settings(**values)


@dataclass
class Api:
    """Posts GraphQL queries with the test service's credentials (and, when given, an X-User-ID)."""

    client: httpx.AsyncClient

    async def post(
        self,
        query: str,
        variables: Mapping[str, Any] | None = None,
        user: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        sent = dict(AUTH if headers is None else headers)
        if user is not None:
            sent["X-User-ID"] = user
        return await self.client.post("/graphql", json={"query": query, "variables": variables or {}}, headers=sent)

    async def data(self, query: str, variables: Mapping[str, Any] | None = None, user: str | None = None) -> Any:
        response = await self.post(query, variables, user)
        assert response.status_code == 200, response.text
        body = response.json()
        assert "errors" not in body, body["errors"]
        return body["data"]

    async def errors(
        self, query: str, variables: Mapping[str, Any] | None = None, user: str | None = None
    ) -> list[dict[str, Any]]:
        response = await self.post(query, variables, user)
        assert response.status_code == 200, response.text
        errors: list[dict[str, Any]] = response.json()["errors"]
        return errors


def api_for(engine: AsyncEngine, settings: Settings | None = None, limits: ApiLimits | None = None) -> Api:
    app = create_app(settings or settings_for(), engine, limits)
    return Api(httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ras.test"))


@asynccontextmanager
async def compressing_cached_client(engine: AsyncEngine, redis_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """The app with the result cache, compressing every body (threshold 0, so the fixtures' small answers are): what
    the GraphQL and the REST compression tests both run against."""
    base = settings_for()
    settings = cache_settings(
        redis_url,
        internal_api_key=base.internal_api_key,
        allowed_service_ids=base.allowed_service_ids,
        compression_min_bytes=0,
    )
    cache, evictor = pair(settings)
    app = create_app(settings, engine, cache=cache)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ras.test") as client:
        yield client
    await cache.aclose()
    await evictor.aclose()


@pytest.fixture
async def api(engine: AsyncEngine) -> AsyncIterator[Api]:
    client = api_for(engine)
    async with client.client:
        yield client


@pytest.fixture
async def gen2(engine: AsyncEngine) -> None:
    """The gen 2 fixtures, projected."""
    await project(engine, fixture_messages("gen2"))


@pytest.fixture
async def gen1(engine: AsyncEngine) -> None:
    """The gen 1 fixtures, projected."""
    await project(engine, fixture_messages("gen1"))
