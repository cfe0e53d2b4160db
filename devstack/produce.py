"""`ras produce-demo`: put a realistic demo stream onto the broker as real events, with a progress bar."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer
from tqdm import tqdm

from consumer.pure.topics import ALL_TOPICS
from devstack.demo import Message, demo_stream
from devstack.topics import create_topics

Offsets = dict[tuple[str, int], int]


async def send_all(bootstrap: str, messages: Sequence[Message]) -> Offsets:
    """Send `messages` in the order given, keyed as their producers key them, as fast as batching allows; returns
    the next offset of every partition written (what a consumer must reach to have applied them all)."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=1_048_576, max_request_size=8_388_608
    )
    await producer.start()
    ends: Offsets = {}
    try:
        for start in range(0, len(messages), 5_000):
            futures = [await producer.send(m.topic, m.value, key=m.key) for m in messages[start : start + 5_000]]
            for meta in await asyncio.gather(*futures):
                tp = (meta.topic, meta.partition)
                ends[tp] = max(ends.get(tp, 0), meta.offset + 1)
    finally:
        await producer.stop()
    return ends


async def produce(bootstrap: str, messages: Sequence[Message], rate: float | None, show_progress: bool) -> None:
    """Send in event-time order; `rate` (events/s) paces the stream so it can be watched arriving."""
    await create_topics(bootstrap, ALL_TOPICS, partitions=4)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        with tqdm(total=len(messages), unit="event", disable=not show_progress, desc="demo events") as bar:
            for i, message in enumerate(sorted(messages, key=lambda m: m.at)):
                await producer.send(message.topic, message.value, key=message.key)
                bar.update()
                if rate:
                    ahead = started + (i + 1) / rate - loop.time()
                    if ahead > 0:
                        await asyncio.sleep(ahead)
            await producer.flush()
    finally:
        await producer.stop()


async def produce_demo(bootstrap: str, batches: int, users: int, rate: float | None, show_progress: bool) -> int:
    messages = demo_stream(batches, users)
    await produce(bootstrap, messages, rate, show_progress)
    return len(messages)
