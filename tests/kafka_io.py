"""Producing test streams onto the broker and waiting until the projection's stored positions reach them."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.scenario import Message

Offsets = dict[tuple[str, int], int]


async def produce(bootstrap: str, messages: Sequence[Message]) -> Offsets:
    """Send `messages` keyed as their real producers key them; returns the next offset of every partition written."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_request_size=8_388_608)
    await producer.start()
    ends: Offsets = {}
    try:
        for start in range(0, len(messages), 2_000):
            futures = [await producer.send(m.topic, m.value, key=m.key) for m in messages[start : start + 2_000]]
            for meta in await asyncio.gather(*futures):
                tp = (meta.topic, meta.partition)
                ends[tp] = max(ends.get(tp, 0), meta.offset + 1)
    finally:
        await producer.stop()
    return ends


async def stored_positions(engine: AsyncEngine) -> Offsets:
    async with engine.connect() as conn:
        rows = await conn.execute(text("SELECT topic, partition, next_offset FROM consumer_positions"))
        return {(r.topic, r.partition): r.next_offset for r in rows}


async def wait_for_positions(engine: AsyncEngine, expected: Offsets, timeout: float) -> Offsets:
    """Poll the positions table (the projection's own record of progress) until it reaches `expected`."""
    async with asyncio.timeout(timeout):
        while True:
            positions = await stored_positions(engine)
            if all(positions.get(tp, 0) >= end for tp, end in expected.items()):
                return positions
            await asyncio.sleep(0.05)
