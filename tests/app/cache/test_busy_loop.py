"""A busy API process is not a slow Redis: while the event loop is stalled or saturated with large answers, the cache
stays on. No request goes without it, no breaker opens, the epoch stays, and every request of a cached 1 MB answer
is a hit. (A really slow Redis still fails open: test_fail_open.py.)

The timeout here is a quarter of a second: short enough that each stall below is longer than it, so a timeout that
counted the loop's own lateness (as a plain asyncio timeout does) would end these calls and open the breaker.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from app.cache import Executed, QueryCache
from app.cache import client as cache_client
from infra import cache_keys as ck
from infra.settings import Settings
from tests.helpers.cache import Delta, cache_settings, sample, single

TIMEOUT = 0.25
KEY = ck.digest(["test", "large"])
LARGE = orjson.dumps({"data": {"batches": [{"id": f"b{i}", "text": "x" * 10_000} for i in range(100)]}})


@pytest.fixture
def settings(redis_url: str) -> Settings:
    return cache_settings(redis_url, redis_timeout_seconds=TIMEOUT)


@pytest.fixture
async def cache(settings: Settings) -> AsyncIterator[QueryCache]:
    cache = QueryCache(cache_client(settings), settings, pause_after_error=60.0)
    yield cache
    await cache.aclose()


async def large() -> Executed:
    return Executed(LARGE, ck.read_tags([f"b{i}" for i in range(100)], ["alice"]))


def nothing_went_without_the_cache(delta: Delta) -> None:
    assert delta("ras_cache_requests_total", result="bypass") == 0
    assert delta("ras_cache_errors_total", side="api", op="lookup") == 0
    assert delta("ras_cache_local_timeouts_total", op="lookup") == 0
    assert sample("ras_cache_redis_up", side="api") == 1


async def epoch(redis: Redis, settings: Settings) -> object:
    return await redis.get(ck.CacheLayout(settings.cache_prefix).epoch)


class StallWhileReading:
    """While `on`, blocks the loop for `seconds` right after a call of `client` starts reading Redis's answer: the
    command has gone out, and the answer arrives while nothing can read it."""

    def __init__(self, client: ck.Client, monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
        self.on = False
        self.stalls = 0
        pool = single(client).connection_pool
        take = pool.get_connection
        wrapped: set[int] = set()

        async def stalling(*args: Any, **kwargs: Any) -> Any:
            connection = await take(*args, **kwargs)  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
            if id(connection) not in wrapped:
                wrapped.add(id(connection))
                read = connection.read_response

                async def read_after_a_stall(*args: Any, **kwargs: Any) -> Any:
                    if self.on:
                        self.stalls += 1
                        asyncio.get_running_loop().call_soon(time.sleep, seconds)  # runs once this read waits
                    return await read(*args, **kwargs)

                connection.read_response = read_after_a_stall
            return connection

        monkeypatch.setattr(pool, "get_connection", stalling)


async def test_a_loop_stalled_past_the_timeout_still_gets_its_hits(
    cache: QueryCache, redis: Redis, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each lookup's MGET has gone out and its answer arrives while the loop is blocked for three timeouts."""
    assert len(LARGE) > 1_000_000
    stall = StallWhileReading(cache._redis, monkeypatch, TIMEOUT * 3)
    await cache.fetch(KEY, large)
    before = await epoch(redis, settings)
    delta = Delta()
    stall.on = True
    for _ in range(3):
        served = await cache.fetch(KEY, large)
        assert served.status == "hit" and served.body == LARGE
    assert stall.stalls == 3
    assert delta("ras_cache_requests_total", result="hit") == 3
    nothing_went_without_the_cache(delta)
    assert await epoch(redis, settings) == before


async def test_a_loop_saturated_by_large_answers_keeps_the_cache_on(
    cache: QueryCache, redis: Redis, settings: Settings
) -> None:
    """Eight clients read a cached 1 MB answer over and over while every turn of the loop also spends a good part of
    the timeout on other work (another request's answer being built and written). A 1 MB answer takes several turns
    to read, so in all each read takes longer than the timeout; Redis answered each in time."""
    await cache.fetch(KEY, large)
    before = await epoch(redis, settings)
    delta = Delta()
    reads = 0

    async def client() -> None:
        nonlocal reads
        for _ in range(5):
            served = await cache.fetch(KEY, large)
            assert served.status == "hit" and served.body == LARGE
            reads += 1

    clients = [asyncio.create_task(client()) for _ in range(8)]
    busy = asyncio.create_task(keep_busy(lambda: all(c.done() for c in clients), TIMEOUT / 3))
    await asyncio.gather(*clients, busy)
    assert reads == 40 and delta("ras_cache_requests_total", result="hit") == 40
    nothing_went_without_the_cache(delta)
    assert await epoch(redis, settings) == before


async def keep_busy(done: Callable[[], bool], seconds: float) -> None:
    """Hold the loop with `seconds` of work on every turn until `done()`."""
    while not done():
        until = time.perf_counter() + seconds
        while time.perf_counter() < until:
            pass  # the point: work that holds the loop
        await asyncio.sleep(0)


async def test_many_large_answers_read_at_once_are_not_a_slow_redis(
    cache: QueryCache, redis: Redis, settings: Settings
) -> None:
    """32 clients ask for the cached 1 MB answer at once, five times over. The loop's turns stay short (each reads a
    chunk of some answer), so it is never late, but it is busy the whole time: reading 32 MB through one loop can
    take longer than the timeout, while Redis answered each MGET at once."""
    await cache.fetch(KEY, large)
    before = await epoch(redis, settings)
    delta = Delta()
    for _ in range(5):
        served = await asyncio.gather(*(cache.fetch(KEY, large) for _ in range(32)))
        assert all(s.status == "hit" and s.body == LARGE for s in served)
    assert delta("ras_cache_requests_total", result="hit") == 160
    nothing_went_without_the_cache(delta)
    assert await epoch(redis, settings) == before
