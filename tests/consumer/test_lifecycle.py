"""`ras consume` as a real process: waiting for dependencies, readiness, database outage, SIGTERM."""

from __future__ import annotations

import asyncio
import random
import signal
import uuid
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from consumer.pure.topics import ALL_TOPICS
from devstack.demo import batch_life
from devstack.kafka import KafkaProcess
from devstack.postgres import PostgresProcess
from devstack.topics import create_topics
from tests.helpers.consumer import apply, as_records, dump, in_event_order, truncate
from tests.helpers.kafka_io import produce, wait_for_positions
from tests.helpers.processes import RasProcess, free_port, get_status, wait_for_status
from tests.helpers.scenario import EPOCH, Message

pytestmark = pytest.mark.kafka


def consumer_env(database_url: str, bootstrap: str, ops_port: int) -> dict[str, str]:
    return {
        "RAS_DATABASE_URL": database_url,
        "RAS_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "RAS_KAFKA_GROUP_ID": f"lifecycle-{uuid.uuid4().hex[:8]}",
        "RAS_KAFKA_SESSION_TIMEOUT_MS": "6000",
        "RAS_CONSUMER_METRICS_PORT": str(ops_port),
        "RAS_HOST": "127.0.0.1",
        "RAS_CACHE_ENABLED": "false",
    }


def batches(count: int, seed: int) -> list[Message]:
    rng = random.Random(seed)
    return [m for i in range(count) for m in batch_life(rng, "gen2", f"teacher-{i}", 5, 0.2, EPOCH)]


async def test_waits_for_the_broker_becomes_ready_and_stops_cleanly_on_sigterm(
    engine: AsyncEngine, database_url: str, tmp_path: Path
) -> None:
    kafka_port, ops_port = free_port(), free_port()
    consumer = RasProcess(
        "consume", consumer_env(database_url, f"127.0.0.1:{kafka_port}", ops_port), tmp_path / "c.log"
    )
    broker = KafkaProcess(port=kafka_port)
    try:
        await consumer.wait_for_output('"dependency": "kafka"')
        assert "waiting for dependency" in consumer.output()
        status, body = await get_status(f"http://127.0.0.1:{ops_port}/readyz")
        assert status == 503 and body["assigned"] is False

        await asyncio.to_thread(broker.start)
        await create_topics(broker.bootstrap, ALL_TOPICS, 4)
        ends = await produce(broker.bootstrap, batches(3, seed=1))
        await wait_for_positions(engine, ends, timeout=60)
        ready = await wait_for_status(f"http://127.0.0.1:{ops_port}/readyz", 200)
        assert ready["assigned"] is True and ready["lag"] == 0
        # Counted just after the commit the positions show, so the scrape may come a moment early: poll.
        registered = {"topic": "huleedu.batch.essays.registered.v1", "outcome": "applied"}
        counted = 0.0
        async with asyncio.timeout(30):
            while counted < 3:
                text = await asyncio.to_thread(_get_text, f"http://127.0.0.1:{ops_port}/metrics")
                counted = _sample(text, "ras_consumer_events_total", registered)
                await asyncio.sleep(0.05)
        assert counted == 3, "each registration counted once"

        assert await consumer.stop(signal.SIGTERM, timeout=30) == 0
        assert "consumer stopped" in consumer.output()
    finally:
        consumer.kill()
        await asyncio.to_thread(broker.close)


def _sample(exposition: str, name: str, labels: dict[str, str]) -> float:
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def _get_text(url: str) -> str:
    import httpx

    return httpx.get(url, timeout=5).text


async def test_database_outage_pauses_then_resumes_with_nothing_lost(
    owned_postgres: tuple[PostgresProcess, str], kafka_bootstrap: str, tmp_path: Path
) -> None:
    server, url = owned_postgres
    engine = create_async_engine(url, pool_pre_ping=True)
    ops_port = free_port()
    consumer = RasProcess("consume", consumer_env(url, kafka_bootstrap, ops_port), tmp_path / "c.log")
    try:
        first, second = batches(4, seed=2), batches(4, seed=3)
        ends = await produce(kafka_bootstrap, first)
        await wait_for_positions(engine, ends, timeout=60)

        await asyncio.to_thread(server.stop)
        ends = {**ends, **await produce(kafka_bootstrap, second)}
        body = await wait_for_status(f"http://127.0.0.1:{ops_port}/readyz", 503)
        assert body["database"]["status"] == "unhealthy"  # type: ignore[index]
        await consumer.wait_for_output("database unavailable, retrying", timeout=30)
        await asyncio.sleep(3)  # an outage of a few seconds, during which the consumer must keep retrying
        assert consumer.proc.poll() is None

        await asyncio.to_thread(server.start)
        await engine.dispose()  # connections of the old server are gone
        await wait_for_positions(engine, ends, timeout=90)
        await wait_for_status(f"http://127.0.0.1:{ops_port}/readyz", 200)
        assert "partitions resumed" in consumer.output()
        projected = await dump(engine)
        assert len(projected["batches"]) == 8

        await truncate(engine)
        await apply(engine, as_records(in_event_order(first + second)))
        assert projected == await dump(engine)
        assert await consumer.stop(signal.SIGTERM) == 0
    finally:
        consumer.kill()
        await engine.dispose()
