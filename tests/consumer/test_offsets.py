"""consumer/offsets.py against a real broker: a stored position is only taken for one beyond the log's end when
a fetch confirms it, so a short ListOffsets answer (Tansu's) does not make a restart re-read whole partitions."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from sqlalchemy.ext.asyncio import AsyncEngine

from consumer.offsets import fetched_ends
from consumer.pure.topics import ALL_TOPICS
from consumer.runner import ConsumerLoop
from tests.consumer.test_kafka import settings_for, stream
from tests.helpers.kafka_io import produce, stored_positions, wait_for_positions

pytestmark = pytest.mark.kafka
BEYOND_END = "stored position beyond the end of the partition"


async def reported_ends(bootstrap: str, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
    client = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await client.start()
    try:
        ends: dict[TopicPartition, int] = await client.end_offsets(partitions)
        return ends
    finally:
        await client.stop()


async def test_fetched_ends_are_the_ends_of_the_logs(kafka_bootstrap: str) -> None:
    topic = ALL_TOPICS[0]
    full, empty = TopicPartition(topic, 0), TopicPartition(topic, 1)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=50)
    await producer.start()
    try:
        # Sent without waiting in between, so the producer batches them: the log ends in a multi-record batch.
        await asyncio.gather(*[await producer.send(topic, b"%d" % i, partition=0) for i in range(30)])
    finally:
        await producer.stop()
    reported = await reported_ends(kafka_bootstrap, [full, empty])
    assert reported[full] <= 30 and reported[empty] == 0

    assert await fetched_ends(kafka_bootstrap, {full: reported[full], empty: 0}) == {full: 30, empty: 0}


async def test_a_restart_resumes_at_the_stored_positions_even_where_the_broker_reports_short_ends(
    engine: AsyncEngine, database_url: str, kafka_bootstrap: str
) -> None:
    ends = await produce(kafka_bootstrap, stream(12, seed=7))
    settings = settings_for(database_url, kafka_bootstrap)
    await consume_until(ConsumerLoop(settings, engine), engine, ends)
    stored = await stored_positions(engine)
    reported = await reported_ends(kafka_bootstrap, [TopicPartition(*tp) for tp in stored])
    short = [tp for tp in reported if reported[tp] < stored[(tp.topic, tp.partition)]]
    if not short:
        pytest.skip("this broker reports the ends of its logs exactly, so there is no short answer to distrust")

    restarted = settings.model_copy(update={"kafka_group_id": f"ras-test-{uuid.uuid4().hex[:8]}"})
    with structlog.testing.capture_logs() as logs:
        await consume_until(ConsumerLoop(restarted, engine), engine, ends)
    assert [e for e in logs if e["event"].startswith(BEYOND_END)] == []
    [assigned] = [e for e in logs if e["event"] == "partitions assigned"]
    assert assigned["stored"] == len(stored) and assigned["rewound"] == 0
    assert await stored_positions(engine) == stored, "nothing rewound, nothing re-read"


async def consume_until(consumer: ConsumerLoop, engine: AsyncEngine, ends: dict[tuple[str, int], int]) -> None:
    task = asyncio.create_task(consumer.run())
    try:
        await asyncio.wait_for(consumer.assigned.wait(), 60)
        await wait_for_positions(engine, ends, timeout=60)
    finally:
        consumer.stop()
        await asyncio.wait_for(task, 30)
