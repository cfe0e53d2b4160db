"""Read-your-writes against the real consumer loop and broker: a query that waits for an offset never reads older
state, the wait is bounded, and it is answered from positions (one read, then messages), not by polling."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.structs import RecordMetadata
from sqlalchemy import Engine, event
from sqlalchemy.ext.asyncio import AsyncEngine

from app.cache import QueryCache
from app.live import EventHub
from app.main import create_app
from devstack.demo import Message
from infra.settings import Settings
from tests.app.graphql.conftest import AUTH
from tests.app.live.conftest import live_settings, running_consumer
from tests.helpers import figures
from tests.helpers.events import EPOCH, registered, slot_assigned

pytestmark = pytest.mark.kafka

GUARD_SECONDS = 30.0

CONSISTENT = """
query Read($batch: ID!, $topic: String!, $partition: Int!, $offset: Long!, $timeout: Int)
@consistent(topic: $topic, partition: $partition, offset: $offset, timeoutMs: $timeout) {
  batch(id: $batch) { id essays { totalCount } }
}
"""
WAIT_FOR = """
query Wait($topic: String!, $partition: Int!, $offset: Long!, $timeout: Int) {
  projection { waitFor(topic: $topic, partition: $partition, offset: $offset, timeoutMs: $timeout) }
}
"""


@pytest.fixture
def settings(database_url: str, redis_url: str, prefix: str, kafka_bootstrap: str) -> Settings:
    return live_settings(database_url, redis_url, prefix, kafka_bootstrap_servers=kafka_bootstrap)


@pytest.fixture
async def client(settings: Settings, engine: AsyncEngine) -> AsyncIterator[httpx.AsyncClient]:
    """The API with its result cache and live-update hub, as `ras serve` builds it."""
    hub = EventHub.from_settings(settings)
    await hub.start()  # the ASGI transport runs no lifespan
    app = create_app(settings, engine, cache=QueryCache.from_settings(settings), events=hub)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ras.test") as http:
        yield http
    await hub.aclose()


@pytest.fixture
async def producer(settings: Settings) -> AsyncIterator[AIOKafkaProducer]:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, linger_ms=0)
    await producer.start()
    yield producer
    await producer.stop()


async def _send(producer: AIOKafkaProducer, message: Message) -> RecordMetadata:
    return await producer.send_and_wait(message.topic, message.value, key=message.key)


def _at(meta: RecordMetadata, timeout: int | None = 10_000) -> dict[str, Any]:
    # By default the longest wait a request may ask for (consistency_max_wait_ms): the consumer applies an event in
    # milliseconds, and a busy machine must not turn that into a timeout.
    return {"topic": meta.topic, "partition": meta.partition, "offset": meta.offset, "timeout": timeout}


async def _post(client: httpx.AsyncClient, query: str, variables: dict[str, Any]) -> dict[str, Any]:
    response = await client.post("/graphql", json={"query": query, "variables": variables}, headers=AUTH)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_a_consistent_query_never_reads_state_older_than_the_awaited_event(
    settings: Settings, engine: AsyncEngine, client: httpx.AsyncClient, producer: AIOKafkaProducer
) -> None:
    batch, essays = str(uuid.uuid4()), [str(uuid.uuid4()) for _ in range(8)]
    async with running_consumer(settings, engine):
        meta = await _send(producer, registered("gen2", batch, "teacher-ryw", essays, EPOCH))
        # Sent at once after the acknowledgement: without the wait this would see no batch (the consumer fetches,
        # then commits, some time later).
        body = await _post(client, CONSISTENT, {"batch": batch, **_at(meta)})
        assert body["data"]["batch"] == {"id": batch, "essays": {"totalCount": 0}}
        waits = []
        for count, essay in enumerate(essays, start=1):
            meta = await _send(producer, slot_assigned("gen2", batch, essay, EPOCH))
            started = time.perf_counter()
            body = await _post(client, CONSISTENT, {"batch": batch, **_at(meta)})
            waits.append(time.perf_counter() - started)
            assert "errors" not in body, body
            assert body["data"]["batch"]["essays"]["totalCount"] == count  # never less: the event is in
        figures.report("read-your-writes", waits_ack_to_answer_ms=[round(w * 1000) for w in waits])

        # The probe form, and the same query again: answered (from the cache or not) with the newest state.
        assert (await _post(client, WAIT_FOR, _at(meta)))["data"]["projection"]["waitFor"] is True
        again = await _post(client, CONSISTENT, {"batch": batch, **_at(meta)})
        assert again["data"]["batch"]["essays"]["totalCount"] == len(essays)


async def test_waits_are_bounded_and_do_not_poll_the_database(
    settings: Settings, engine: AsyncEngine, client: httpx.AsyncClient, producer: AIOKafkaProducer
) -> None:
    batch = str(uuid.uuid4())
    async with running_consumer(settings, engine):
        meta = await _send(producer, registered("gen2", batch, "teacher-ryw", [str(uuid.uuid4())], EPOCH))
        assert (await _post(client, WAIT_FOR, _at(meta)))["data"]["projection"]["waitFor"] is True

        # Every engine of the process (the waits read through a small pool of the app's own, app/side_pool.py), and
        # the request engine on its own: it reads the `projection` field after the wait, never a position for it.
        statements: list[str] = []
        listener = lambda *args: statements.append(str(args[2]))  # noqa: E731
        on_requests: list[str] = []
        request_listener = lambda *args: on_requests.append(str(args[2]))  # noqa: E731
        event.listen(Engine, "before_cursor_execute", listener)
        event.listen(engine.sync_engine, "before_cursor_execute", request_listener)
        try:
            # An offset the stream never reaches: the answer comes at the wait's timeout (400 ms), never before
            # it; that it comes at all is the bound (the guard only keeps a broken wait from hanging the suite).
            future = {**_at(meta, 400), "offset": meta.offset + 1_000}
            started = time.perf_counter()
            async with asyncio.timeout(GUARD_SECONDS):
                body = await _post(client, WAIT_FOR, future)
            waited = time.perf_counter() - started
            assert body["data"]["projection"]["waitFor"] is False and waited >= 0.4
            position_reads = [s for s in statements if "consumer_positions" in s and "unnest" in s]
            assert len(position_reads) == 2  # one look at the start, one at the deadline: no polling in between
            assert on_requests and not [s for s in on_requests if "unnest" in s]

            started = time.perf_counter()
            async with asyncio.timeout(GUARD_SECONDS):
                refused = await _post(client, CONSISTENT, {"batch": batch, **future})
            assert time.perf_counter() - started >= 0.4
        finally:
            event.remove(Engine, "before_cursor_execute", listener)
            event.remove(engine.sync_engine, "before_cursor_execute", request_listener)
        assert refused["data"] is None
        error = refused["errors"][0]
        assert error["extensions"]["code"] == "CONSISTENCY_TIMEOUT" and "nothing was read" in error["message"]

        too_long = await _post(client, CONSISTENT, {"batch": batch, **_at(meta, 60_000)})
        assert too_long["errors"][0]["extensions"] == {
            "code": "LIMIT_EXCEEDED",
            "limit": settings.consistency_max_wait_ms,
            "correlationId": too_long["errors"][0]["extensions"]["correlationId"],
        }
