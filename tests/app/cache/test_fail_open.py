"""Redis down, slow, restarted or cut off: requests are answered correctly throughout, the consumer carries on,
and evictions that could not be delivered are made up for by an epoch change before anything stale is served.

"Without waiting on Redis" is shown by what was tried, never by the time taken: the calls the client attempted are
counted (tests/helpers/cache.py `Attempts`), and failed calls by the error counters.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from redis.asyncio import Redis
from redis.exceptions import MaxConnectionsError

from app.cache import Executed, QueryCache
from app.cache import client as cache_client
from consumer.eviction import Evictor
from devstack.redis import RedisProcess
from infra import cache_keys as ck
from infra.settings import Settings
from tests.helpers.cache import (
    Attempts,
    Delta,
    Source,
    cache_settings,
    changed,
    entry_keys,
    pair,
    sample,
    single,
    value_of,
    wait_until,
)
from tests.helpers.proxy import Proxy

# A call to a hung Redis fails once the loop has sat waiting for the timeout (a second in these tests), and is given
# up after 100 s in all (app/cache.py). Guarded against a hang at 30 s; the guard is not what the test asserts.
HANG_GUARD_SECONDS = 30.0


@pytest.fixture
async def server() -> AsyncIterator[RedisProcess]:
    process = RedisProcess()
    await asyncio.to_thread(process.start)
    yield process
    await asyncio.to_thread(process.close)


@pytest.fixture
async def proxy(redis_url: str) -> AsyncIterator[Proxy]:
    host, port = redis_url.removeprefix("redis://").split("/")[0].split(":")
    p = Proxy(host, int(port))
    await p.start()
    yield p
    await p.close()


def batch(source: Source, batch_id: str) -> Callable[[], Awaitable[Executed]]:
    async def execute() -> Executed:
        return source.batch(batch_id)

    return execute


KEY_X, KEY_Y = ck.digest(["test", "X"]), ck.digest(["test", "Y"])


async def fetched(cache: QueryCache, key: str, execute: Callable[[], Awaitable[Executed]]) -> tuple[str, object]:
    served = await cache.fetch(key, execute)
    return served.status, value_of(served.body)


async def test_killed_redis_is_bypassed_then_not_even_tried_and_the_cache_comes_back(
    server: RedisProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = cache_settings(server.url)
    client = cache_client(settings)
    cache = QueryCache(client, settings, pause_after_error=0.3)
    evictor = Evictor(ck.connect(settings), settings, retry_interval=0.2)
    attempts = Attempts(client, monkeypatch)
    source = Source(values={"X": "v1"})
    try:
        await cache.fetch(KEY_X, batch(source, "X"))
        await asyncio.to_thread(server.kill)
        delta = Delta()
        tried = attempts.count
        source.values["X"] = "v2"
        assert await fetched(cache, KEY_X, batch(source, "X")) == ("bypass", "v2")
        assert attempts.count == tried + 1 and sample("ras_cache_redis_up", side="api") == 0  # one call, failed
        # The circuit is open: the next requests do not even try Redis.
        for _ in range(3):
            assert await fetched(cache, KEY_X, batch(source, "X")) == ("bypass", "v2")
        assert attempts.count == tried + 1
        assert delta("ras_cache_errors_total", side="api", op="lookup") == 1
        assert delta("ras_cache_requests_total", result="bypass") == 4

        # The consumer keeps going: the eviction fails without raising, and an epoch change is pending.
        await evictor.evict(changed(["X"], ["alice"]))
        assert evictor.bump_pending and delta("ras_cache_errors_total", side="consumer", op="evict") == 1
        assert sample("ras_cache_epoch_bump_pending") == 1

        await asyncio.to_thread(server.start)
        await wait_until(lambda: not evictor.bump_pending)
        await asyncio.sleep(0.3)  # the API's circuit lets requests through again
        assert await fetched(cache, KEY_X, batch(source, "X")) == ("miss", "v2")
        assert await fetched(cache, KEY_X, batch(source, "X")) == ("hit", "v2")
        assert sample("ras_cache_redis_up", side="api") == 1
        assert sample("ras_cache_redis_up", side="consumer") == 1
    finally:
        await cache.aclose()
        await evictor.aclose()


async def test_hung_redis_costs_one_timeout_then_nothing(server: RedisProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = cache_settings(server.url)
    client = cache_client(settings)
    cache = QueryCache(client, settings, pause_after_error=0.3)
    evictor = Evictor(ck.connect(settings), settings)
    attempts = Attempts(client, monkeypatch)
    source = Source(values={"X": "v1"})
    assert server.pid is not None
    try:
        await cache.fetch(KEY_X, batch(source, "X"))
        os.kill(server.pid, signal.SIGSTOP)  # accepts connections, answers nothing: a slow Redis
        try:
            delta = Delta()
            tried = attempts.count
            # Frozen, Redis can only make a call time out: the one call tried ends as an error, not a hang.
            async with asyncio.timeout(HANG_GUARD_SECONDS):
                assert await fetched(cache, KEY_X, batch(source, "X")) == ("bypass", "v1")
            assert attempts.count == tried + 1 and delta("ras_cache_errors_total", side="api", op="lookup") == 1
            assert (await fetched(cache, KEY_X, batch(source, "X")))[0] == "bypass"
            assert attempts.count == tried + 1, "the next request does not even try"
        finally:
            os.kill(server.pid, signal.SIGCONT)
        await asyncio.sleep(0.3)
        # Evictions may have been lost while Redis hung: the first call after it changes the epoch.
        assert await fetched(cache, KEY_X, batch(source, "X")) == ("miss", "v1")
        assert await fetched(cache, KEY_X, batch(source, "X")) == ("hit", "v1")
    finally:
        await cache.aclose()
        await evictor.aclose()


async def test_a_slow_redis_still_fails_open_and_the_cache_comes_back(
    redis_url: str, proxy: Proxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis answers, but later than the timeout, while this process's loop is idle: that is Redis's slowness, not
    ours. The call fails, the breaker opens, and once Redis is fast again the first call changes the epoch."""
    settings = cache_settings(redis_url, redis_timeout_seconds=0.5)
    client = cache_client(settings.model_copy(update={"redis_url": proxy.url}))
    cache = QueryCache(client, settings, pause_after_error=0.2)
    attempts = Attempts(client, monkeypatch)
    source = Source(values={"X": "v1"})
    try:
        await cache.fetch(KEY_X, batch(source, "X"))
        assert await fetched(cache, KEY_X, batch(source, "X")) == ("hit", "v1")
        proxy.delay(5.0)  # ten timeouts
        delta = Delta()
        tried = attempts.count
        async with asyncio.timeout(HANG_GUARD_SECONDS):
            assert await fetched(cache, KEY_X, batch(source, "X")) == ("bypass", "v1")
        assert delta("ras_cache_errors_total", side="api", op="lookup") == 1
        assert delta("ras_cache_local_timeouts_total", op="lookup") == 0
        assert sample("ras_cache_redis_up", side="api") == 0
        assert (await fetched(cache, KEY_X, batch(source, "X")))[0] == "bypass"
        assert attempts.count == tried + 1, "the breaker is open: the next request does not even try"
        proxy.delay(0.0)
        await asyncio.sleep(0.2)
        # Evictions may have been lost while Redis was slow: the first call after it changes the epoch.
        assert await fetched(cache, KEY_X, batch(source, "X")) == ("miss", "v1")
        assert await fetched(cache, KEY_X, batch(source, "X")) == ("hit", "v1")
        assert sample("ras_cache_redis_up", side="api") == 1
    finally:
        await cache.aclose()


async def test_a_reader_from_before_a_restart_never_stores(server: RedisProcess) -> None:
    """Redis restarts (empty) while a miss executes: its snapshot's epoch is gone, so its store is refused."""
    settings = cache_settings(server.url)
    cache, evictor = pair(settings, pause_after_error=0.0)
    source = Source(values={"X": "old", "Y": "y"})
    redis = Redis.from_url(server.url)
    try:

        async def read_across_a_restart() -> Executed:
            read = source.batch("X")
            await asyncio.to_thread(server.kill)
            source.values["X"] = "new"  # committed while Redis was down: its eviction was lost
            await evictor.evict(changed(["X"], ["alice"]))
            await asyncio.to_thread(server.start)
            # Another request starts the new life's epoch before our store.
            await cache.fetch(KEY_Y, batch(source, "Y"))
            await cache.fetch(KEY_Y, batch(source, "Y"))
            return read

        delta = Delta()
        served = await cache.fetch(KEY_X, read_across_a_restart)
        assert value_of(served.body) == "old"
        assert delta("ras_cache_stores_total", outcome="stored") == 1, "only Y's entry"
        assert delta("ras_cache_stores_total", outcome="skipped_stale") == 1
        assert await fetched(cache, KEY_X, batch(source, "X")) == ("miss", "new")
        assert len(await entry_keys(redis, settings)) == 2
    finally:
        await redis.aclose()
        await cache.aclose()
        await evictor.aclose()


async def test_evictions_lost_in_a_partition_are_made_up_by_an_epoch_change(redis_url: str, proxy: Proxy) -> None:
    """Only the consumer loses Redis; Redis keeps every entry. Once the consumer reaches it again, nothing stored
    before is served: the background retry changes the epoch even if no further event arrives."""
    settings = cache_settings(redis_url)
    cache = QueryCache(cache_client(settings), settings)
    evictor = Evictor(ck.connect(settings.model_copy(update={"redis_url": proxy.url})), settings, retry_interval=0.2)
    source = Source(values={"X": "old", "Y": "y"})
    try:
        await evictor.bump_epoch()
        await cache.fetch(KEY_X, batch(source, "X"))
        await cache.fetch(KEY_Y, batch(source, "Y"))
        proxy.cut()
        source.values["X"] = "new"
        delta = Delta()
        await evictor.evict(changed(["X"], ["alice"]))  # fails (a timeout) without raising
        assert evictor.bump_pending
        # Stale X is still in Redis (nothing could evict it); it must never be served after the consumer is back.
        proxy.heal()
        await wait_until(lambda: not evictor.bump_pending)
        assert delta("ras_cache_epoch_bumps_total") == 1
        assert delta("ras_cache_errors_total", side="consumer", op="evict") == 1
        assert await fetched(cache, KEY_X, batch(source, "X")) == ("miss", "new")
        assert (await fetched(cache, KEY_Y, batch(source, "Y")))[0] == "miss"
    finally:
        await cache.aclose()
        await evictor.aclose()


async def test_an_api_back_before_the_consumer_serves_nothing_from_before_the_outage(
    redis_url: str, proxy: Proxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both sides lose Redis, which keeps every entry, and the API reaches it again before the consumer's epoch
    change: the API changes the epoch itself, so the entry whose eviction was lost is not served."""

    async def no_background_retry(self: Evictor) -> None:
        return None

    monkeypatch.setattr(Evictor, "_retry", no_background_retry)  # the consumer stays behind
    settings = cache_settings(redis_url)
    through_proxy = settings.model_copy(update={"redis_url": proxy.url})
    cache = QueryCache(cache_client(through_proxy), settings, pause_after_error=0.1)
    evictor = Evictor(ck.connect(through_proxy), settings, retry_interval=0.1)
    source = Source(values={"X": "old"})
    try:
        await cache.fetch(KEY_X, batch(source, "X"))
        proxy.cut()
        source.values["X"] = "new"
        await evictor.evict(changed(["X"], ["alice"]))
        assert evictor.bump_pending
        assert await fetched(cache, KEY_X, batch(source, "X")) == ("bypass", "new")
        proxy.heal()
        await asyncio.sleep(0.15)
        assert await fetched(cache, KEY_X, batch(source, "X")) == ("miss", "new")
        assert evictor.bump_pending, "the API got there first"
        assert await fetched(cache, KEY_X, batch(source, "X")) == ("hit", "new")
    finally:
        await cache.aclose()
        await evictor.aclose()


async def test_the_next_eviction_carries_the_pending_epoch_change(
    redis_url: str, proxy: Proxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def no_background_retry(self: Evictor) -> None:
        return None

    monkeypatch.setattr(Evictor, "_retry", no_background_retry)
    settings = cache_settings(redis_url)
    cache = QueryCache(cache_client(settings), settings)
    to_redis = ck.connect(settings.model_copy(update={"redis_url": proxy.url}))
    # The pause after a failure (the retry interval) is a thousand times the next statement's distance from it.
    evictor = Evictor(to_redis, settings, retry_interval=1.0)
    attempts = Attempts(to_redis, monkeypatch)
    source = Source(values={"X": "old", "Y": "y"})
    try:
        await cache.fetch(KEY_X, batch(source, "X"))
        await cache.fetch(KEY_Y, batch(source, "Y"))
        proxy.cut()
        source.values["X"] = "new"
        await evictor.evict(changed(["X"], ["alice"]))
        proxy.heal()
        # Within the pause after the failure the consumer does not try Redis; the pending change covers it.
        tried = attempts.count
        await evictor.evict(changed(["Z"], ["carol"]))
        assert evictor.bump_pending and attempts.count == tried
        await asyncio.sleep(1.0)
        delta = Delta()
        await evictor.evict(changed(["Z"], ["carol"]))
        assert not evictor.bump_pending and delta("ras_cache_epoch_bumps_total") == 1
        assert await fetched(cache, KEY_X, batch(source, "X")) == ("miss", "new")
        assert (await fetched(cache, KEY_Y, batch(source, "Y")))[0] == "miss"
    finally:
        await cache.aclose()
        await evictor.aclose()


async def test_startup_bump_waits_for_redis(proxy: Proxy, settings: Settings) -> None:
    evictor = Evictor(ck.connect(settings.model_copy(update={"redis_url": proxy.url})), settings, retry_interval=0.1)
    try:
        proxy.cut()
        await evictor.bump_epoch()
        assert evictor.bump_pending
        await asyncio.sleep(0.3)
        assert evictor.bump_pending, "still cut off"
        proxy.heal()
        await wait_until(lambda: not evictor.bump_pending)
    finally:
        await evictor.aclose()


async def test_a_bump_under_way_does_not_make_up_for_an_eviction_that_failed_meanwhile(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The background bump reaches Redis, then an eviction fails before the bump's reply is read: that eviction's
    commit may be newer than the bump, so the bump must stay pending. The interleaving is forced on the script."""

    async def no_background_retry(self: Evictor) -> None:
        return None

    monkeypatch.setattr(Evictor, "_retry", no_background_retry)
    evictor = Evictor(ck.connect(settings), settings, retry_interval=0.0)
    real = evictor._script
    bump_executed, reply = asyncio.Event(), asyncio.Event()

    async def forced(keys: list[str], args: list[str | int]) -> object:
        if len(keys) > 3:  # an eviction: epoch, counter, watermark, then its tags
            raise TimeoutError("eviction lost")
        result = await real(keys=keys, args=args)
        bump_executed.set()
        await reply.wait()
        return result

    monkeypatch.setattr(evictor, "_script", forced)
    try:
        await evictor.evict(changed(["X"], ["alice"]))
        assert evictor.bump_pending
        bump = asyncio.create_task(evictor.bump_epoch())
        await bump_executed.wait()
        await evictor.evict(changed(["Y"], ["bob"]))  # fails after the bump ran in Redis
        reply.set()
        await bump
        assert evictor.bump_pending, "Y's eviction is not covered by a bump that ran before it"
        monkeypatch.setattr(evictor, "_script", real)
        await evictor.bump_epoch()
        assert not evictor.bump_pending
    finally:
        await evictor.aclose()


async def test_running_out_of_connections_is_not_an_outage(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past ck.MAX_CONNECTIONS concurrent calls (200 clients on one API process reach it), a call fails at once:
    that call goes without the cache, and the others keep it: no circuit opened, no epoch change."""
    settings = cache_settings(redis_url)
    client = cache_client(settings)
    cache = QueryCache(client, settings)
    evictor = Evictor(ck.connect(settings), settings)
    source = Source(values={"X": "v"})

    async def exhausted(*_: object, **__: object) -> object:
        raise MaxConnectionsError("Too many connections")

    try:
        await cache.fetch(KEY_X, batch(source, "X"))
        delta = Delta()
        with monkeypatch.context() as patched:
            patched.setattr(single(client).connection_pool, "get_connection", exhausted)
            assert (await cache.fetch(KEY_X, batch(source, "X"))).status == "bypass"
        assert (await cache.fetch(KEY_X, batch(source, "X"))).status == "hit"
        assert delta("ras_cache_errors_total", side="api", op="lookup") == 1
        assert sample("ras_cache_redis_up", side="api") == 1
    finally:
        await cache.aclose()
        await evictor.aclose()


async def test_a_cancelled_trial_call_does_not_leave_the_cache_switched_off(
    server: RedisProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The trial call is cancelled right after it began, long before its timeout (a second) could end it.
    settings = cache_settings(server.url)
    client = cache_client(settings)
    cache = QueryCache(client, settings, pause_after_error=0.2)
    evictor = Evictor(ck.connect(settings), settings)
    attempts = Attempts(client, monkeypatch)
    source = Source(values={"X": "v"})
    assert server.pid is not None
    try:
        await cache.fetch(KEY_X, batch(source, "X"))
        os.kill(server.pid, signal.SIGSTOP)
        try:
            assert (await cache.fetch(KEY_X, batch(source, "X"))).status == "bypass"  # opens the breaker
            await asyncio.sleep(0.25)
            attempts.made.clear()
            trial = asyncio.create_task(cache.fetch(KEY_X, batch(source, "X")))
            await attempts.made.wait()  # the trial call has gone to Redis, which answers nothing
            trial.cancel()  # the client went away while the trial call hung
            with pytest.raises(asyncio.CancelledError):
                await trial
        finally:
            os.kill(server.pid, signal.SIGCONT)
        await asyncio.sleep(0.25)
        assert (await cache.fetch(KEY_X, batch(source, "X"))).status == "miss"  # the epoch changed after the outage
        assert (await cache.fetch(KEY_X, batch(source, "X"))).status == "hit"
    finally:
        await cache.aclose()
        await evictor.aclose()
