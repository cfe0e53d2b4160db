"""Live updates on a Redis Cluster: the hub listens on one node, and hears what is published on any node."""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio import Redis

from app.live import EventHub
from consumer.apply import Applied
from consumer.notify import Publisher
from infra import cache_keys as ck
from tests.app.live.conftest import live_settings

GUARD_SECONDS = 30.0


async def test_the_hub_hears_the_publisher_and_every_node(redis_cluster_url: str, prefix: str, engine: Any) -> None:
    settings = live_settings("postgresql+asyncpg://unused/unused", redis_cluster_url, prefix, redis_cluster=True)
    hub = EventHub.from_settings(settings)
    publisher = Publisher(ck.connect(settings), settings, engine)
    seed = Redis.from_url(redis_cluster_url)
    await hub.start()
    try:
        async with asyncio.timeout(GUARD_SECONDS):
            await hub.listening.wait()
        nodes = [(int(start), host, int(port)) for start, _, (host, port, *_) in await seed.cluster("slots")]
        with hub.subscribe([hub.layout.batch_channel("b1")]) as inbox:
            await publisher.publish(Applied(batch_ids={"b1"}, user_ids={"u1"}))
            async with asyncio.timeout(GUARD_SECONDS):
                assert await inbox.next() is True
            # Whichever node a message is published on, the cluster forwards it to the hub's node.
            for _, host, port in nodes:
                async with Redis(host=host.decode() if isinstance(host, bytes) else host, port=port) as node:
                    await node.publish(hub.layout.batch_channel("b1"), b'{"at": 0}')
                async with asyncio.timeout(GUARD_SECONDS):
                    assert await inbox.next() is True
    finally:
        await hub.aclose()
        await publisher.aclose()
        await seed.aclose()
