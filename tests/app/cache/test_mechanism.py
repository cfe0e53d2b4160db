"""The cache mechanism against a real Redis, without GraphQL: lookups, stores, tags, epochs, races, single flight."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import orjson
import pytest
from redis.asyncio import Redis

from app.cache import Executed, QueryCache, Served, body_digest, with_cache_extension
from consumer.eviction import Evictor
from infra import cache_keys as ck
from infra.settings import Settings
from tests.helpers.cache import Delta, Lookups, Source, cache_settings, changed, entry_keys, pair, value_of, wait_until

Execute = Callable[[], Awaitable[Executed]]


@pytest.fixture(params=["standalone", "cluster"])
def settings(request: pytest.FixtureRequest, redis_url: str) -> Settings:
    """Every test here runs on a single Redis and on a three-node Redis Cluster: same code, same keys, same races."""
    if request.param == "cluster":
        return cache_settings(request.getfixturevalue("redis_cluster_url"), redis_cluster=True)
    return cache_settings(redis_url)


def batch(source: Source, batch_id: str) -> Execute:
    async def execute() -> Executed:
        return source.batch(batch_id)

    return execute


def user_list(source: Source, user_id: str) -> Execute:
    async def execute() -> Executed:
        return source.user_list(user_id)

    return execute


def key(name: str) -> str:
    return ck.digest(["test", name])


def within_calls(started: float) -> float:
    """The most a hit's age can exceed the time since `started` measured before the calls that stored and read it:
    the time itself plus the clock's error (half a lookup's round trip, and a millisecond of rounding), which is
    within that time too. Grows with a slow machine, so it cannot fail for one."""
    return 2 * (time.monotonic() - started) + 0.01


async def test_hit_after_miss(cache: QueryCache) -> None:
    source = Source(values={"X": "v1"})
    delta = Delta()
    started = time.monotonic()
    first = await cache.fetch(key("X"), batch(source, "X"))
    second = await cache.fetch(key("X"), batch(source, "X"))
    assert (first.status, first.age_seconds) == ("miss", None)
    assert second.status == "hit"
    assert second.age_seconds is not None and 0 <= second.age_seconds <= within_calls(started)
    assert second.body == first.body and value_of(second.body) == "v1"
    assert source.calls == 1
    assert delta("ras_cache_requests_total", result="miss") == 1
    assert delta("ras_cache_requests_total", result="hit") == 1
    assert delta("ras_cache_stores_total", outcome="stored") == 1


async def test_eviction_deletes_only_entries_of_the_changed_tags(cache: QueryCache, evictor: Evictor) -> None:
    source = Source(values={"X": "x1", "Y": "y1"})

    async def both() -> Executed:
        x, y = source.batch("X"), source.batch("Y")
        return Executed(x.body + y.body, x.tags | y.tags)

    for name, execute in (("X", batch(source, "X")), ("Y", batch(source, "Y")), ("XY", both)):
        await cache.fetch(key(name), execute)
    delta = Delta()
    source.values["X"] = "x2"
    await evictor.evict(changed(["X"], ["alice"]))

    x = await cache.fetch(key("X"), batch(source, "X"))
    assert (x.status, value_of(x.body)) == ("miss", "x2")
    assert (await cache.fetch(key("XY"), both)).status == "miss"
    y = await cache.fetch(key("Y"), batch(source, "Y"))
    assert (y.status, value_of(y.body)) == ("hit", "y1")
    assert delta("ras_cache_entries_evicted_total") == 2
    assert delta("ras_cache_evictions_total", tag_kind="batch") == 1
    assert delta("ras_cache_evictions_total", tag_kind="user") == 2  # u:alice and u:*


async def test_user_tag_evicts_that_users_lists_and_the_list_of_all(cache: QueryCache, evictor: Evictor) -> None:
    source = Source(values={"A1": "a", "B1": "b"}, owners={"A1": "alice", "B1": "bob"})
    for user in ("alice", "bob", ck.ALL_USERS):
        await cache.fetch(key(user), user_list(source, user))
    # A new batch of alice's is registered: the batch id is new, only the owner's tag can reach her lists.
    source.values["A2"], source.owners["A2"] = "new", "alice"
    await evictor.evict(changed(["A2"], ["alice"]))

    alice = await cache.fetch(key("alice"), user_list(source, "alice"))
    assert alice.status == "miss"
    assert [b["id"] for b in orjson.loads(alice.body)["data"]["batches"]] == ["A1", "A2"]
    assert (await cache.fetch(key(ck.ALL_USERS), user_list(source, ck.ALL_USERS))).status == "miss"
    assert (await cache.fetch(key("bob"), user_list(source, "bob"))).status == "hit"


async def test_lookup_of_a_missing_batch_is_evicted_when_it_registers(cache: QueryCache, evictor: Evictor) -> None:
    source = Source()
    assert value_of((await cache.fetch(key("N"), batch(source, "N"))).body) is None
    source.values["N"] = "registered"
    await evictor.evict(changed(["N"], ["carol"]))
    assert value_of((await cache.fetch(key("N"), batch(source, "N"))).body) == "registered"


async def test_an_event_that_changed_nothing_evicts_nothing(
    cache: QueryCache, evictor: Evictor, redis: Redis, settings: Settings
) -> None:
    source = Source(values={"X": "v"})
    await cache.fetch(key("X"), batch(source, "X"))
    counter = await redis.get(ck.CacheLayout(settings.cache_prefix).counter)
    await evictor.evict(changed())
    assert await redis.get(ck.CacheLayout(settings.cache_prefix).counter) == counter, "no round trip at all"
    assert (await cache.fetch(key("X"), batch(source, "X"))).status == "hit"


async def test_epoch_bump_hides_every_entry(cache: QueryCache, evictor: Evictor) -> None:
    source = Source(values={"X": "v", "Y": "w"})
    await cache.fetch(key("X"), batch(source, "X"))
    await cache.fetch(key("Y"), batch(source, "Y"))
    delta = Delta()
    await evictor.bump_epoch()
    assert (await cache.fetch(key("X"), batch(source, "X"))).status == "miss"
    assert (await cache.fetch(key("Y"), batch(source, "Y"))).status == "miss"
    assert delta("ras_cache_epoch_bumps_total") == 1


@pytest.mark.parametrize("lost", [["epoch", "counter"], ["epoch"]])
async def test_a_known_epoch_is_not_trusted_once_redis_lost_it(
    cache: QueryCache, redis: Redis, settings: Settings, lost: list[str]
) -> None:
    """A process that knows the epoch looks up with one MGET; when Redis lost the epoch (a restart), the entries under
    the old epoch that are still there must not be served: the lookup starts a new epoch."""
    layout = ck.CacheLayout(settings.cache_prefix)
    source = Source(values={"X": "v"})
    await cache.fetch(key("X"), batch(source, "X"))
    assert (await cache.fetch(key("X"), batch(source, "X"))).status == "hit"
    await redis.delete(*(getattr(layout, name) for name in lost))
    assert (await cache.fetch(key("X"), batch(source, "X"))).status == "miss"
    assert (await cache.fetch(key("X"), batch(source, "X"))).status == "hit"


async def test_the_age_of_a_hit_is_measured_on_redis_clock(cache: QueryCache, redis: Redis, settings: Settings) -> None:
    source = Source(values={"X": "v"})
    started = time.monotonic()
    first = await cache.fetch(key("X"), batch(source, "X"))
    (entry,) = await entry_keys(redis, settings)
    seconds, micros = await redis.time()
    stamp = seconds * 1000 + micros // 1000 - 3_000
    await redis.set(entry, f"{stamp} {body_digest(first.body)}\n".encode() + first.body, keepttl=True)
    hit = await cache.fetch(key("X"), batch(source, "X"))
    assert hit.status == "hit" and hit.age_seconds is not None and 3 <= hit.age_seconds <= 3 + within_calls(started)


async def test_an_entry_carries_its_body_digest_and_an_older_form_is_stored_again(
    cache: QueryCache, redis: Redis, settings: Settings
) -> None:
    """The digest compressed forms are memoized by (app/compression.py) is the stored body's, given by a stored miss
    and by every hit; an entry without one (a release before it) is a miss and is stored again."""
    source = Source(values={"X": "v"})
    miss = await cache.fetch(key("X"), batch(source, "X"))
    hit = await cache.fetch(key("X"), batch(source, "X"))
    assert (miss.status, hit.status) == ("miss", "hit")
    assert miss.digest == hit.digest == body_digest(miss.body) and hit.body == miss.body
    (entry,) = await entry_keys(redis, settings)
    stored = await redis.get(entry)
    assert isinstance(stored, bytes) and stored.split(b"\n", 1)[0].endswith(b" " + miss.digest.encode())
    await redis.set(entry, stored.split(b" ", 1)[0] + b"\n" + miss.body, keepttl=True)
    assert (await cache.fetch(key("X"), batch(source, "X"))).status == "miss"
    assert (await cache.fetch(key("X"), batch(source, "X"))).status == "hit"
    assert source.calls == 2


async def test_entries_indexes_and_sequences_expire(
    cache: QueryCache, evictor: Evictor, redis: Redis, settings: Settings
) -> None:
    layout = ck.CacheLayout(settings.cache_prefix)
    await cache.fetch(key("X"), batch(Source(), "X"))
    [entry] = await entry_keys(redis, settings)
    entry_ttl = await redis.ttl(entry)
    assert 0 < entry_ttl <= settings.cache_ttl_seconds
    assert await redis.ttl(layout.index("b:X")) >= entry_ttl, "an index outlives every entry it lists"
    assert await redis.smembers(layout.index("b:X")) == {entry}
    await evictor.evict(changed(["X"], ["u"]))
    assert 0 < await redis.ttl(layout.seq("b:X")) <= ck.SEQ_TTL_SECONDS
    assert not await redis.exists(entry, layout.index("b:X"))


async def test_results_with_errors_are_not_stored(cache: QueryCache) -> None:
    calls = 0

    async def failing() -> Executed:
        nonlocal calls
        calls += 1
        return Executed(b'{"data":null,"errors":[{"message":"boom"}]}', ck.read_tags(["X"], []), cacheable=False)

    delta = Delta()
    assert (await cache.fetch(key("E"), failing)).status == "miss"
    assert (await cache.fetch(key("E"), failing)).status == "miss"
    assert calls == 2
    assert delta("ras_cache_stores_total", outcome="skipped_uncacheable") == 2


async def test_race_eviction_between_read_and_store_stores_nothing(
    cache: QueryCache, evictor: Evictor, redis: Redis, settings: Settings
) -> None:
    """Reader misses and reads the old value; the event commits and is evicted; then the reader stores: refused."""
    source = Source(values={"X": "old"})

    async def read_then_event_commits() -> Executed:
        read = source.batch("X")
        source.values["X"] = "new"  # the consumer's transaction commits ...
        await evictor.evict(changed(["X"], ["alice"]))  # ... and its eviction runs, all before our store
        return read

    delta = Delta()
    served = await cache.fetch(key("X"), read_then_event_commits)
    assert (served.status, value_of(served.body)) == ("miss", "old")
    assert delta("ras_cache_stores_total", outcome="skipped_stale") == 1
    assert await entry_keys(redis, settings) == []
    after = await cache.fetch(key("X"), batch(source, "X"))
    assert (after.status, value_of(after.body)) == ("miss", "new")
    assert (await cache.fetch(key("X"), batch(source, "X"))).status == "hit"


async def test_race_eviction_after_store_deletes_the_entry(
    cache: QueryCache, evictor: Evictor, redis: Redis, settings: Settings
) -> None:
    """Reader reads the old value, the event commits, the reader stores, and only then the eviction runs."""
    source = Source(values={"X": "old"})

    async def read_then_event_commits() -> Executed:
        read = source.batch("X")
        source.values["X"] = "new"  # committed; its eviction has not run yet
        return read

    served = await cache.fetch(key("X"), read_then_event_commits)
    assert value_of(served.body) == "old"
    assert len(await entry_keys(redis, settings)) == 1, "stored: nothing had evicted X yet"
    await evictor.evict(changed(["X"], ["alice"]))
    assert await entry_keys(redis, settings) == []
    after = await cache.fetch(key("X"), batch(source, "X"))
    assert (after.status, value_of(after.body)) == ("miss", "new")


async def test_eviction_of_another_batch_during_execution_does_not_block_the_store(
    cache: QueryCache, evictor: Evictor
) -> None:
    source = Source(values={"X": "x", "Y": "y"})

    async def read_while_y_changes() -> Executed:
        read = source.batch("X")
        await evictor.evict(changed(["Y"], ["bob"]))
        return read

    delta = Delta()
    await cache.fetch(key("X"), read_while_y_changes)
    assert delta("ras_cache_stores_total", outcome="stored") == 1
    assert (await cache.fetch(key("X"), batch(source, "X"))).status == "hit"


async def test_epoch_change_during_execution_stores_nothing(cache: QueryCache, evictor: Evictor) -> None:
    source = Source(values={"X": "x"})

    async def read_while_epoch_changes() -> Executed:
        read = source.batch("X")
        await evictor.bump_epoch()
        return read

    delta = Delta()
    await cache.fetch(key("X"), read_while_epoch_changes)
    assert delta("ras_cache_stores_total", outcome="skipped_stale") == 1


async def test_concurrent_identical_misses_execute_once(cache: QueryCache, monkeypatch: pytest.MonkeyPatch) -> None:
    source = Source(values={"X": "v"})
    release = asyncio.Event()
    lookups = Lookups(cache, monkeypatch)

    async def slow() -> Executed:
        await release.wait()
        return source.batch("X")

    fetches = [asyncio.create_task(cache.fetch(key("X"), slow)) for _ in range(20)]
    await wait_until(lambda: lookups.done == 20)  # every lookup has answered (miss) and joined the first execution
    release.set()
    served = await asyncio.gather(*fetches)
    assert source.calls == 1
    assert sorted(s.status for s in served) == ["coalesced"] * 19 + ["miss"]
    assert len({s.body for s in served}) == 1
    assert {s.digest for s in served} == {body_digest(served[0].body)}, "followers get the stored body's digest"


async def test_followers_execute_themselves_when_the_leader_could_not_store(
    cache: QueryCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = asyncio.Event()
    calls = 0
    lookups = Lookups(cache, monkeypatch)

    async def uncacheable() -> Executed:
        nonlocal calls
        calls += 1
        await release.wait()
        return Executed(b'{"data":{"projection":1}}', cacheable=False)

    fetches = [asyncio.create_task(cache.fetch(key("P"), uncacheable)) for _ in range(5)]
    await wait_until(lambda: lookups.done == 5)
    release.set()
    served = await asyncio.gather(*fetches)
    assert calls == 5, "nothing vouches that the leader's result is as fresh as a follower's own"
    assert {s.status for s in served} == {"miss"}
    assert {s.digest for s in served} == {None}, "not stored: no compressed form may be memoized for it"


async def test_followers_survive_a_failing_leader(cache: QueryCache, monkeypatch: pytest.MonkeyPatch) -> None:
    release = asyncio.Event()
    source = Source(values={"X": "v"})
    first = True
    lookups = Lookups(cache, monkeypatch)

    async def flaky() -> Executed:
        nonlocal first
        failing, first = first, False
        await release.wait()
        if failing:
            raise RuntimeError("database gone")
        return source.batch("X")

    leader = asyncio.create_task(cache.fetch(key("X"), flaky))
    await wait_until(lambda: not first)  # the leader executes
    follower = asyncio.create_task(cache.fetch(key("X"), flaky))
    await wait_until(lambda: lookups.done == 2)  # and the follower has joined it
    release.set()
    with pytest.raises(RuntimeError):
        await leader
    assert value_of((await follower).body) == "v"


async def test_prefixes_keep_deployments_apart(redis_url: str, settings: Settings) -> None:
    other = settings.model_copy(update={"cache_prefix": settings.cache_prefix + "-other"})
    (cache_a, evictor_a), (cache_b, evictor_b) = pair(settings), pair(other)
    try:
        a, b = Source(values={"X": "a"}), Source(values={"X": "b"})
        await cache_a.fetch(key("X"), batch(a, "X"))
        assert value_of((await cache_b.fetch(key("X"), batch(b, "X"))).body) == "b"
        await evictor_a.evict(changed(["X"], ["u"]))
        assert (await cache_b.fetch(key("X"), batch(b, "X"))).status == "hit"
        assert (await cache_a.fetch(key("X"), batch(a, "X"))).status == "miss"
    finally:
        for closable in (cache_a, cache_b, evictor_a, evictor_b):
            await closable.aclose()


async def test_disabled_cache_always_executes(settings: Settings) -> None:
    cache, evictor = pair(settings.model_copy(update={"cache_enabled": False}))
    try:
        source = Source(values={"X": "v"})
        statuses = [(await cache.fetch(key("X"), batch(source, "X"))).status for _ in range(2)]
        assert statuses == ["bypass", "bypass"] and source.calls == 2
    finally:
        await cache.aclose()
        await evictor.aclose()


def test_cache_extension_is_added_to_the_response_not_stored() -> None:
    body = b'{"data":{"x":1}}'
    hit = orjson.loads(with_cache_extension(body, Served(body, "hit", 1.23456)))
    assert hit == {"data": {"x": 1}, "extensions": {"cache": {"status": "hit", "ageSeconds": 1.235}}}
    miss = orjson.loads(with_cache_extension(b'{"data":{},"extensions":{"cost":3}}', Served(body, "miss")))
    assert miss["extensions"] == {"cost": 3, "cache": {"status": "miss", "ageSeconds": None}}
