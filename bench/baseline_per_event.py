"""Baseline (a) of W1: a consumer shaped like the original service, one event per transaction.

For each record, in the order aiokafka hands them out: parse it, validate it with the same contract models, write
its rows with the same upsert statements and recompute its batch (`consumer.apply.apply_fetch` of a single record,
positions untouched) in a transaction of its own, then commit that record's offset to Kafka before taking the next.
The original service also kept its offsets in Kafka only; no position row is written here, so the baseline does
strictly less database work per event than RAS would with one-record transactions.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from sqlalchemy.ext.asyncio import create_async_engine

from consumer.apply import Positions, apply_fetch
from consumer.pure.decode import Record
from consumer.pure.fetch import decode_fetch
from consumer.pure.topics import ALL_TOPICS

MAX_BYTES = 1_048_576


@dataclass
class PerEventRun:
    events: int
    started: float  # perf_counter at start, before the group join
    first_done: float  # the first record's offset commit returned
    finished: float  # the last record's offset commit returned

    @property
    def apply_rate(self) -> float:
        """Events per second after the first record, so the group join does not count."""
        return (self.events - 1) / (self.finished - self.first_done)

    @property
    def end_to_end_rate(self) -> float:
        return self.events / (self.finished - self.started)


async def consume(database_url: str, bootstrap: str, expected: int) -> PerEventRun:
    """Consume every topic from the beginning until `expected` records are applied and committed."""
    engine = create_async_engine(database_url, pool_size=1)
    kafka = AIOKafkaConsumer(
        *ALL_TOPICS,
        bootstrap_servers=bootstrap,
        group_id=f"bench-per-event-{uuid.uuid4().hex[:8]}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    started = time.perf_counter()
    first_done: float | None = None
    done = 0
    await kafka.start()
    try:
        while done < expected:
            message = await kafka.getone()
            record = Record(
                message.topic, message.partition, message.offset, message.key, message.value, message.timestamp
            )
            async with engine.begin() as conn:
                await apply_fetch(conn, decode_fetch([record], MAX_BYTES), positions=Positions.UNTOUCHED)
            await kafka.commit({TopicPartition(message.topic, message.partition): message.offset + 1})
            done += 1
            if first_done is None:
                first_done = time.perf_counter()
    finally:
        await kafka.stop()
        await engine.dispose()
    assert first_done is not None
    return PerEventRun(done, started, first_done, time.perf_counter())
