"""Fixtures of the cache tests: a private prefix on the session's Redis, and a cache/evictor pair over it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import cast

import pytest
from redis.asyncio import Redis

from app.cache import QueryCache
from consumer.eviction import Evictor
from infra.settings import Settings
from tests.helpers.cache import cache_settings, pair, test_client


@pytest.fixture
def settings(redis_url: str) -> Settings:
    return cache_settings(redis_url)


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[Redis]:
    client = cast(Redis, test_client(settings))  # a RedisCluster where a test module parametrises `settings` so
    yield client
    await client.aclose()


@pytest.fixture
async def cache_pair(settings: Settings) -> AsyncIterator[tuple[QueryCache, Evictor]]:
    cache, evictor = pair(settings)
    yield cache, evictor
    await cache.aclose()
    await evictor.aclose()


@pytest.fixture
def cache(cache_pair: tuple[QueryCache, Evictor]) -> QueryCache:
    return cache_pair[0]


@pytest.fixture
def evictor(cache_pair: tuple[QueryCache, Evictor]) -> Evictor:
    return cache_pair[1]
