"""When caught up, a take brings what reached the broker during the last transaction, not only what the client
buffered in its first moments (consumer.intake.Intake._fetch, `fresh`)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from sqlalchemy.ext.asyncio import AsyncEngine

from consumer.intake import Fetched, Intake
from consumer.pure.topics import ALL_TOPICS
from infra.settings import Settings

pytestmark = pytest.mark.kafka

TOPIC = ALL_TOPICS[0]
TP = TopicPartition(TOPIC, 0)
TIMEOUT = 60.0  # turns a hang into a failure; nothing here depends on how fast the broker is


@pytest.fixture
async def intake(
    engine: AsyncEngine, database_url: str, kafka_bootstrap: str
) -> AsyncIterator[tuple[Intake, AIOKafkaConsumer]]:
    # The broker answers a fetch as soon as it has a record, so this long wait only keeps a slow machine from
    # running out of it before the answer.
    settings = Settings(
        database_url=database_url,
        kafka_bootstrap_servers=kafka_bootstrap,
        kafka_group_id=f"ras-test-{uuid.uuid4().hex[:8]}",
        kafka_fetch_max_wait_ms=2_000,
    )
    kafka = AIOKafkaConsumer(
        bootstrap_servers=kafka_bootstrap,
        group_id=settings.kafka_group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
    )
    taker = Intake(kafka, engine, settings, asyncio.Event())
    kafka.subscribe([TOPIC], listener=taker)
    await kafka.start()
    try:
        yield taker, kafka
    finally:
        await taker.close()
        await kafka.stop()


async def take(intake: Intake) -> Fetched:
    async with asyncio.timeout(TIMEOUT):
        while (fetched := await intake.take()) is None:
            pass
        return fetched


def offsets(fetched: Fetched) -> list[int]:
    return [r.offset for r in fetched.decoded.records if (r.topic, r.partition) == (TOPIC, 0)]


async def test_records_that_arrived_after_the_buffered_ones_come_in_the_same_take(
    intake: tuple[Intake, AIOKafkaConsumer], kafka_bootstrap: str
) -> None:
    taker, kafka = intake
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:

        async def send(value: bytes) -> int:
            return int((await producer.send_and_wait(TOPIC, value, partition=0)).offset)

        first = await send(b"a")
        assert offsets(await take(taker)) == [first]
        # As during a transaction: a record arrives and the client, fetching again after the take, buffers it …
        buffered = await send(b"b")
        async with asyncio.timeout(TIMEOUT):
            while (kafka.highwater(TP) or 0) <= buffered:  # a fetch answered since it arrived: it holds it
                await asyncio.sleep(0.01)
        # … then another arrives, which the client does not fetch while the one before waits in its buffer.
        later = await send(b"c")
        assert offsets(await take(taker)) == [buffered, later], "both in one take, in order"
    finally:
        await producer.stop()
