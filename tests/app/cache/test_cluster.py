"""The cache on a Redis Cluster whose node dies mid-run: fail-open as on a single Redis, and fresh answers after.

The mechanism itself (lookups, stores, evictions, the forced races) runs on a cluster in test_mechanism.py; this
module owns a cluster of its own, because it kills one of its nodes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from app.cache import Executed, QueryCache
from app.cache import client as cache_client
from consumer.eviction import Evictor
from devstack.redis_cluster import RedisClusterProcesses
from infra import cache_keys as ck
from infra.settings import Settings
from tests.helpers.cache import Delta, Source, cache_settings, changed, sample, value_of, wait_until

KEY_X = ck.digest(["test", "X"])


@pytest.fixture
async def cluster() -> AsyncIterator[RedisClusterProcesses]:
    processes = RedisClusterProcesses()
    await asyncio.to_thread(processes.start)
    yield processes
    await asyncio.to_thread(processes.close)


def batch(source: Source, batch_id: str) -> Callable[[], Awaitable[Executed]]:
    async def execute() -> Executed:
        return source.batch(batch_id)

    return execute


async def fetched(cache: QueryCache, source: Source) -> tuple[str, object]:
    served = await cache.fetch(KEY_X, batch(source, "X"))
    return served.status, value_of(served.body)


async def answered_from_redis(cache: QueryCache, source: Source) -> tuple[str, object]:
    """The first answer that is not a bypass: the cluster is whole again and the API's circuit lets calls through."""
    answer: tuple[str, object] = ("bypass", None)

    async def through() -> bool:
        nonlocal answer
        answer = await fetched(cache, source)
        return answer[0] != "bypass"

    async with asyncio.timeout(60):
        while not await through():
            await asyncio.sleep(0.1)
    return answer


async def test_killed_node_of_the_cache_slot_is_bypassed_and_nothing_stale_is_served_after(
    cluster: RedisClusterProcesses,
) -> None:
    settings: Settings = cache_settings(cluster.url, redis_cluster=True)
    cache = QueryCache(cache_client(settings), settings, pause_after_error=0.3)
    evictor = Evictor(ck.connect(settings), settings, retry_interval=0.2)
    source = Source(values={"X": "v1"})
    node = cluster.node_of(ck.CacheLayout(settings.cache_prefix).epoch)
    try:
        assert await fetched(cache, source) == ("miss", "v1")
        assert await fetched(cache, source) == ("hit", "v1")
        await asyncio.to_thread(node.kill)
        delta = Delta()
        source.values["X"] = "v2"
        assert await fetched(cache, source) == ("bypass", "v2")
        assert sample("ras_cache_redis_up", side="api") == 0
        # The consumer's eviction of X is lost with the node: it carries on, an epoch change pending.
        await evictor.evict(changed(["X"], ["alice"]))
        assert evictor.bump_pending and delta("ras_cache_errors_total", side="consumer", op="evict") == 1

        # The node comes back empty (no persistence) on its port, with its slots (its node table is kept).
        await asyncio.to_thread(node.start)
        await wait_until(lambda: not evictor.bump_pending, timeout=60)
        assert await answered_from_redis(cache, source) == ("miss", "v2")
        assert await fetched(cache, source) == ("hit", "v2")
        assert delta("ras_cache_requests_total", result="hit") == 1, "v1 was never served again"
    finally:
        await cache.aclose()
        await evictor.aclose()


async def test_a_killed_node_elsewhere_fails_the_cache_open_too(cluster: RedisClusterProcesses) -> None:
    """With slots down, the cluster refuses every command (cluster-require-full-coverage, the default), so the cache
    goes without Redis until the node is back, then changes its epoch as after any outage."""
    settings = cache_settings(cluster.url, redis_cluster=True)
    cache = QueryCache(cache_client(settings), settings, pause_after_error=0.3)
    source = Source(values={"X": "v1"})
    home = cluster.node_of(ck.CacheLayout(settings.cache_prefix).epoch)
    other = next(node for node in cluster.nodes if node is not home)
    try:
        assert await fetched(cache, source) == ("miss", "v1")
        await asyncio.to_thread(other.kill)
        source.values["X"] = "v2"
        # The cluster marks itself down once the node has been silent for the node timeout.
        async with asyncio.timeout(60):
            while await fetched(cache, source) != ("bypass", "v2"):
                await asyncio.sleep(0.1)
        await asyncio.to_thread(other.start)
        assert await answered_from_redis(cache, source) == ("miss", "v2")
    finally:
        await cache.aclose()
