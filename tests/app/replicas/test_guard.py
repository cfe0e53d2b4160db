"""The cache's replica guard (app/cache.py, docs/replicas.md) against a real streaming replica whose replay the
test holds: an answer read on a replica is stored only when the replica had replayed every eviction of its tags.

The forced race is the one the guard exists for: the consumer commits on the primary and evicts; a request that
starts after the eviction (its lookup already sees the counter past it) reads a replica that has not replayed the
commit. Without the guard it stores the old answer, which no eviction will ever delete (shown by disabling the
guard: the second fetch below is then a hit on the old value)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from app.cache import QueryCache
from app.cache import client as cache_client
from app.replicas import Replicas
from consumer.eviction import Evictor
from infra import cache_keys as ck
from infra.settings import Settings
from tests.app.replicas.conftest import Pair
from tests.app.replicas.helpers import create_probe, execution, set_value, value_of
from tests.helpers.cache import Delta, cache_settings, changed

KEY = "probe-request"


@pytest.fixture
def settings(redis_url: str) -> Settings:
    return cache_settings(redis_url)


@pytest.fixture
async def cache(settings: Settings) -> AsyncIterator[QueryCache]:
    cache = QueryCache(cache_client(settings), settings)
    yield cache
    await cache.aclose()


@pytest.fixture
async def evictor(settings: Settings, pair: Pair) -> AsyncIterator[Evictor]:
    """The consumer's evictor as it runs beside replicas: recording the primary's WAL position, and having
    changed the epoch at start-up (which begins the watermark)."""
    evictor = Evictor(ck.connect(settings), settings, wal_position=pair.wal_position)
    await evictor.bump_epoch()
    yield evictor
    await evictor.aclose()


@pytest.fixture
async def replicas(pair: Pair) -> AsyncIterator[Replicas]:
    await create_probe(pair.primary)
    replicas = Replicas([pair.replica_url], pool_size=2)
    yield replicas
    await replicas.aclose()


async def test_an_answer_read_on_a_replica_behind_an_eviction_is_not_stored(
    pair: Pair, cache: QueryCache, evictor: Evictor, replicas: Replicas
) -> None:
    await set_value(pair.primary, "x", 1)
    await pair.caught_up()
    counted = Delta()
    async with pair.paused():
        await set_value(pair.primary, "x", 2)  # the consumer's commit C
        await evictor.evict(changed(["x"]))  # and its eviction, before the request below begins
        served = await cache.fetch(KEY, execution(pair.primary, replicas, "x"))
        assert (served.status, value_of(served.body)) == ("miss", 1), "the replica has not replayed C"
    await pair.caught_up()
    again = await cache.fetch(KEY, execution(pair.primary, replicas, "x"))
    assert (again.status, value_of(again.body)) == ("miss", 2), "no answer missing C outlives C's eviction"
    assert counted("ras_cache_stores_total", outcome="skipped_replica_behind") == 1


async def test_an_answer_read_on_a_replica_that_replayed_the_evictions_is_stored(
    pair: Pair, cache: QueryCache, evictor: Evictor, replicas: Replicas
) -> None:
    await set_value(pair.primary, "x", 1)
    await evictor.evict(changed(["x"]))
    await pair.caught_up()
    async with pair.paused():
        await set_value(pair.primary, "y", 5)  # another tag's commit, unseen by the replica: no reason to refuse
        await evictor.evict(changed(["y"]))
        first = await cache.fetch(KEY, execution(pair.primary, replicas, "x"))
        second = await cache.fetch(KEY, execution(pair.primary, replicas, "x"))
    assert (first.status, value_of(first.body)) == ("miss", 1)
    assert (second.status, value_of(second.body)) == ("hit", 1)


async def test_an_epoch_change_holds_back_every_replica_behind_it(
    pair: Pair, cache: QueryCache, evictor: Evictor, replicas: Replicas
) -> None:
    """An epoch change stands for evictions whose tags are unknown (lost, or a dead member's): its WAL position
    becomes the floor of every tag at once."""
    await set_value(pair.primary, "x", 1)
    await pair.caught_up()
    async with pair.paused():
        await set_value(pair.primary, "x", 2)  # committed; its eviction lost, made up for by the epoch change
        await evictor.bump_epoch()
        stale = await cache.fetch(KEY, execution(pair.primary, replicas, "x"))
        assert value_of(stale.body) == 1
    await pair.caught_up()
    fresh = await cache.fetch(KEY, execution(pair.primary, replicas, "x"))
    assert (fresh.status, value_of(fresh.body)) == ("miss", 2)
    assert (await cache.fetch(KEY, execution(pair.primary, replicas, "x"))).status == "hit"


async def test_no_replica_answer_is_stored_after_an_eviction_without_a_wal_position(
    pair: Pair, settings: Settings, cache: QueryCache, evictor: Evictor, replicas: Replicas
) -> None:
    """A consumer not told about the replicas records no WAL position: its eviction deletes the watermark, and
    answers read on a replica are not stored, however current, until a recorded epoch change begins it again."""
    await set_value(pair.primary, "x", 1)
    unaware = Evictor(ck.connect(settings), settings)
    try:
        await unaware.evict(changed(["z"]))
    finally:
        await unaware.aclose()
    await pair.caught_up()
    counted = Delta()
    assert (await cache.fetch(KEY, execution(pair.primary, replicas, "x"))).status == "miss"
    assert (await cache.fetch(KEY, execution(pair.primary, replicas, "x"))).status == "miss"
    assert counted("ras_cache_stores_total", outcome="skipped_replica_behind") == 2
    await evictor.bump_epoch()
    await pair.caught_up()
    assert (await cache.fetch(KEY, execution(pair.primary, replicas, "x"))).status == "miss"
    assert (await cache.fetch(KEY, execution(pair.primary, replicas, "x"))).status == "hit"
