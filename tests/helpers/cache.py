"""Shared pieces of the cache tests: settings on a private prefix, fake executions, metric deltas, counted Redis
calls."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis, RedisCluster

from app.cache import Executed, QueryCache
from app.cache import client as cache_client
from consumer.apply import Applied
from consumer.eviction import Evictor
from infra import cache_keys as ck
from infra.settings import Settings


def cache_settings(redis_url: str, **changes: Any) -> Settings:
    """Settings on a fresh prefix, so tests sharing one Redis never see each other's keys.

    Redis calls time out after a second, not the deployed 0.1 s: on a busy machine a healthy call can take longer
    than that, and the cache would then go without Redis where a test expects a hit or a miss. A test of a hung Redis
    waits out this timeout."""
    values: dict[str, Any] = {
        "database_url": "postgresql+asyncpg://unused@127.0.0.1/unused",
        "redis_url": redis_url,
        "cache_prefix": f"test-{uuid.uuid4().hex[:10]}",
        "cache_ttl_seconds": 300,
        "redis_timeout_seconds": 1.0,
    }
    return Settings(**{**values, **changes})


def pair(
    settings: Settings, *, pause_after_error: float = 1.0, retry_interval: float = 1.0
) -> tuple[QueryCache, Evictor]:
    cache = QueryCache(cache_client(settings), settings, pause_after_error=pause_after_error)
    return cache, Evictor(ck.connect(settings), settings, retry_interval=retry_interval)


def changed(batches: Iterable[str] = (), users: Iterable[str] = ()) -> Applied:
    return Applied(batch_ids=set(batches), user_ids=set(users))


@dataclass
class Source:
    """A stand-in for query execution over a tiny mutable 'database': values by batch id, owners by batch id."""

    values: dict[str, str] = field(default_factory=dict)
    owners: dict[str, str] = field(default_factory=dict)
    calls: int = 0

    def batch(self, batch_id: str) -> Executed:
        self.calls += 1
        body = orjson.dumps({"data": {"batch": {"id": batch_id, "value": self.values.get(batch_id)}}})
        return Executed(body, ck.read_tags([batch_id], []))

    def user_list(self, user_id: str) -> Executed:
        self.calls += 1
        ids = sorted(b for b, owner in self.owners.items() if user_id in (owner, ck.ALL_USERS))
        body = orjson.dumps({"data": {"batches": [{"id": b, "value": self.values.get(b)} for b in ids]}})
        return Executed(body, ck.read_tags(ids, [user_id]))


def value_of(body: bytes) -> Any:
    return orjson.loads(body)["data"]["batch"]["value"]


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


class Delta:
    """Counter increases since construction: `Delta()["ras_cache_requests_total", {"result": "hit"}]`."""

    def __init__(self) -> None:
        self._start = {
            (s.name, tuple(sorted(s.labels.items()))): s.value for m in REGISTRY.collect() for s in m.samples
        }

    def __call__(self, name: str, **labels: str) -> float:
        return sample(name, **labels) - self._start.get((name, tuple(sorted(labels.items()))), 0.0)


def single(client: ck.Client) -> Redis:
    """`client`, which a test that reaches into a client's connection pool expects to be a single Redis's."""
    assert isinstance(client, Redis), "a single Redis's client (a cluster client has a pool per node)"
    return client


async def entry_keys(redis: ck.Client, settings: Settings) -> list[bytes]:
    """The cache's entries; on a cluster, KEYS asks the node of the cache's one slot (every entry lives there)."""
    layout = ck.CacheLayout(settings.cache_prefix)
    if isinstance(redis, RedisCluster):
        await redis.initialize()  # learns the slots (a no-op once it has)
        found = await redis.keys(layout.entry_prefix + "*", target_nodes=redis.get_node_from_key(layout.epoch))
    else:
        found = await redis.keys(layout.entry_prefix + "*")
    return sorted(key.encode() if isinstance(key, str) else key for key in found)


def test_client(settings: Settings) -> ck.Client:
    """A client for a test's own look at Redis: a cluster client when `settings` name a cluster."""
    if settings.redis_cluster:
        return RedisCluster.from_url(settings.redis_url)
    return Redis.from_url(settings.redis_url)


async def wait_until(predicate: Any, timeout: float = 30.0) -> None:
    """Wait for `predicate()` to hold; the timeout only guards against a hang."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


class Attempts:
    """Counts the calls a Redis client makes: each command and script asks the client's pool for a connection first,
    so the count says whether a call was tried at all, whatever the time it took. `made` is set at each attempt
    (clear it to wait for the next one)."""

    def __init__(self, client: ck.Client, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        self.made = asyncio.Event()
        pool = single(client).connection_pool
        take = pool.get_connection

        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.count += 1
            self.made.set()
            return await take(*args, **kwargs)  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated

        monkeypatch.setattr(pool, "get_connection", counted)


class Lookups:
    """Counts the lookups a QueryCache has finished. A request joins a concurrent identical request's execution (or
    leads it) in the same step as its lookup returns, so once `done` counts every request, each has joined."""

    def __init__(self, cache: QueryCache, monkeypatch: pytest.MonkeyPatch) -> None:
        self.done = 0
        lookup = cache._lookup

        async def counted(key: str) -> Any:
            found = await lookup(key)
            self.done += 1
            return found

        monkeypatch.setattr(cache, "_lookup", counted)
