"""The hub and the publisher on their own: bounded fan-out, and both sides fail open and resync when Redis returns."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from app.live import EventHub, SubscriberTooSlow
from consumer.apply import Applied
from consumer.notify import Publisher, chain
from infra import cache_keys as ck
from infra.backoff import Backoff
from infra.settings import Settings
from tests.app.live.conftest import live_settings
from tests.helpers.cache import Attempts, Delta, wait_until
from tests.helpers.proxy import Proxy

# Hang guards: what they guard takes milliseconds.
GUARD_SECONDS = 30.0


def _message(channel: str, body: dict[str, Any]) -> dict[str, Any]:
    return {"type": "pmessage", "channel": channel.encode(), "data": orjson.dumps(body)}


@pytest.fixture
def settings(redis_url: str, prefix: str) -> Settings:
    return live_settings("postgresql+asyncpg://unused/unused", redis_url, prefix, live_queue_size=4)


@pytest.fixture
async def proxy(redis_url: str) -> AsyncIterator[Proxy]:
    host, port = redis_url.removeprefix("redis://").split("/")[0].split(":")
    proxy = Proxy(host, int(port))
    await proxy.start()
    yield proxy
    await proxy.close()


async def test_a_subscriber_that_falls_behind_is_dropped_and_holds_nothing(settings: Settings) -> None:
    hub = EventHub.from_settings(settings)  # no listener: messages are handed in directly
    channel = hub.layout.batch_channel("b1")
    with hub.subscribe([channel]) as slow, hub.subscribe([channel]) as keeping_up:
        for _ in range(100):
            hub._handle(_message(channel, {"at": 0}), Backoff())
            if keeping_up.pending:
                assert await keeping_up.next() is True  # takes every queued notice in one go
            assert slow.pending <= 4  # never more than the queue size
        assert slow.dropped and slow.pending == 1  # only the "dropped" marker is left
        assert hub.subscriber_count() == 1 and not keeping_up.dropped
        with pytest.raises(SubscriberTooSlow):
            await slow.next()
    assert hub.subscriber_count() == 0
    await hub.aclose()


async def test_positions_wake_waits_and_a_resync_wakes_every_subscriber(settings: Settings) -> None:
    hub = EventHub.from_settings(settings)
    looks = 0

    async def stored() -> int | None:
        nonlocal looks
        looks += 1
        return 3

    with hub.subscribe([hub.layout.user_channel("u1")]) as inbox:
        # The wait's own deadline is only a hang guard here: the position arrives by message.
        waiting = asyncio.create_task(hub.wait_for_position(("t", 0), 8, GUARD_SECONDS, stored))
        await wait_until(lambda: looks == 1)
        await asyncio.sleep(0.05)
        assert not waiting.done() and looks == 1  # looked once, now sleeping on messages
        hub._handle(_message(hub.layout.positions_channel, {"at": 0, "positions": [["t", 0, 7]]}), Backoff())
        await asyncio.sleep(0.05)
        assert not waiting.done()
        hub._handle(_message(hub.layout.positions_channel, {"at": 0, "positions": [["t", 0, 8]]}), Backoff())
        assert await waiting is True and looks == 1
        assert hub.known_position(("t", 0)) == 8

        hub._handle(_message(hub.layout.positions_channel, {"at": 0, "positions": [], "resync": True}), Backoff())
        assert inbox.pending == 1 and await inbox.next() is True
    await hub.aclose()


async def test_the_publisher_fails_open_and_resyncs_once_redis_is_back(
    redis_url: str, prefix: str, proxy: Proxy, engine: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = live_settings("postgresql+asyncpg://unused/unused", proxy.url, prefix, redis_timeout_seconds=0.1)
    client = ck.connect(settings)
    publisher = Publisher(client, settings, engine)
    attempts = Attempts(client, monkeypatch)
    listener = Redis.from_url(redis_url).pubsub()
    await listener.subscribe(publisher._layout.positions_channel)
    await listener.get_message(timeout=GUARD_SECONDS)  # the subscribe confirmation
    changed = Applied(batch_ids={"b1"}, user_ids={"u1"})
    try:
        await publisher.publish(changed)
        first = await listener.get_message(timeout=GUARD_SECONDS)
        assert first is not None and b"resync" not in first["data"]

        proxy.cut()
        delta = Delta()
        tried = attempts.count
        await publisher.publish(changed)  # never raises: the projection goes on
        assert attempts.count == tried + 1 and delta("ras_live_publish_errors_total") == 1
        await publisher.publish(changed)  # within a second of the failure: not even tried
        assert attempts.count == tried + 1

        proxy.heal()
        await asyncio.sleep(1.1)
        await publisher.publish(changed)
        message = await listener.get_message(timeout=GUARD_SECONDS)
        assert message is not None and orjson.loads(message["data"])["resync"] is True
        await publisher.publish(changed)
        message = await listener.get_message(timeout=GUARD_SECONDS)
        assert message is not None and "resync" not in orjson.loads(message["data"])
    finally:
        await listener.aclose()  # type: ignore[no-untyped-call]
        await publisher.aclose()


async def test_the_listener_reconnects_and_tells_subscribers_to_resync(settings: Settings, proxy: Proxy) -> None:
    hub = EventHub.from_settings(
        live_settings("postgresql+asyncpg://unused/unused", proxy.url, settings.cache_prefix), ping_interval=0.2
    )
    await hub.start()
    try:
        async with asyncio.timeout(GUARD_SECONDS):
            await hub.listening.wait()
        with hub.subscribe([hub.layout.batch_channel("b1")]) as inbox:
            await asyncio.sleep(0.1)
            assert inbox.pending == 0
            proxy.cut()
            await wait_until(lambda: not hub.listening.is_set(), GUARD_SECONDS)
            proxy.heal()
            async with asyncio.timeout(GUARD_SECONDS):
                assert await inbox.next() is True  # whatever was published meanwhile: re-read
            assert hub.listening.is_set()
    finally:
        await hub.aclose()


async def _run(step: Awaitable[None]) -> None:
    await step


def test_chain_runs_steps_in_order_and_drops_missing_ones() -> None:
    assert chain(None, None) is None
    calls: list[str] = []

    async def evict(_: Applied) -> None:
        calls.append("evict")

    async def publish(_: Applied) -> None:
        calls.append("publish")

    assert chain(None, evict) is evict
    both = chain(evict, None, publish)
    assert both is not None
    asyncio.run(_run(both(Applied())))
    assert calls == ["evict", "publish"]
