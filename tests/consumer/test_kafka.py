"""The consumer against a real Kafka-protocol broker: all eight topics, positions, crash and restart."""

from __future__ import annotations

import asyncio
import random
import uuid

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from consumer.pure.topics import ALL_TOPICS
from consumer.runner import ConsumerLoop
from infra.settings import Settings
from tests.helpers.consumer import apply, as_records, dump, in_event_order, truncate
from tests.helpers.kafka_io import produce, stored_positions, wait_for_positions
from tests.helpers.scenario import EPOCH, Message, batch_life, fixture_messages, with_resends

pytestmark = pytest.mark.kafka


def stream(batches: int, seed: int) -> list[Message]:
    rng = random.Random(seed)
    messages: list[Message] = []
    for i in range(batches):
        gen = "gen1" if i % 3 == 0 else "gen2"
        messages += batch_life(rng, gen, f"teacher-{i % 7}", rng.randint(3, 25), rng.choice([0.0, 0.1, 0.5]), EPOCH)
    return with_resends(rng, messages, 0.05)


def settings_for(database_url: str, bootstrap: str) -> Settings:
    return Settings(
        database_url=database_url,
        kafka_bootstrap_servers=bootstrap,
        kafka_group_id=f"ras-test-{uuid.uuid4().hex[:8]}",
        kafka_session_timeout_ms=6_000,
    )


async def test_consumer_projects_all_topics_like_direct_application(
    engine: AsyncEngine, database_url: str, kafka_bootstrap: str
) -> None:
    fixtures = [
        Message(topic, key, value, EPOCH)
        for gen in ("gen1", "gen2")
        for name, topic, key, value in fixture_messages(gen)
        if "failed_critically" not in name and topic in ALL_TOPICS
    ]
    messages = fixtures + stream(30, seed=1)
    ends = await produce(kafka_bootstrap, messages)

    applied = []

    async def record(result: object) -> None:
        applied.append(result)

    consumer = ConsumerLoop(settings_for(database_url, kafka_bootstrap), engine, on_applied=record)
    task = asyncio.create_task(consumer.run())
    try:
        positions = await wait_for_positions(engine, ends, timeout=60)
    finally:
        consumer.stop()
        await asyncio.wait_for(task, 30)
    assert positions == ends, "every partition's position is exactly its end: nothing skipped"
    assert applied, "the cache hook heard about the changed batches"
    via_broker = await dump(engine)

    # Same events applied directly in event-time order: the broker's partitioning and batching change nothing.
    await truncate(engine)
    await apply(engine, as_records(in_event_order(messages)))
    assert via_broker == await dump(engine)


async def test_consumer_resumes_from_stored_positions_not_kafka_commits(
    engine: AsyncEngine, database_url: str, kafka_bootstrap: str
) -> None:
    first = stream(5, seed=2)
    ends = await produce(kafka_bootstrap, first)
    settings = settings_for(database_url, kafka_bootstrap)
    consumer = ConsumerLoop(settings, engine)
    task = asyncio.create_task(consumer.run())
    await wait_for_positions(engine, ends, timeout=60)
    consumer.stop()
    await asyncio.wait_for(task, 30)

    # A new group (no Kafka offsets at all) must continue where the database says, not from the beginning.
    second = stream(5, seed=3)
    ends = {**ends, **{tp: n for tp, n in (await produce(kafka_bootstrap, second)).items()}}
    before = await stored_positions(engine)
    consumer = ConsumerLoop(settings.model_copy(update={"kafka_group_id": "another-group"}), engine)
    task = asyncio.create_task(consumer.run())
    try:
        await wait_for_positions(engine, ends, timeout=60)
    finally:
        consumer.stop()
        await asyncio.wait_for(task, 30)
    after = await stored_positions(engine)
    assert all(after[tp] >= before.get(tp, 0) for tp in after)
    assert len((await dump(engine))["batches"]) == 10
