"""The execution limit (app/admission.py): hits are served while every slot is taken, a miss that waits past the
admission wait is refused with the documented retryable 503, and every slot comes back, whatever ended the request.

Slots are held by the test itself (`gate.acquire()`), so what waits and what is served does not depend on timing;
only the refusal needs its (short) wait to pass.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette

from app.admission import AdmissionGate
from app.cache import QueryCache
from app.errors import Overloaded
from app.graphql.endpoint import GraphQLEndpoint
from app.main import create_app
from app.reads.session import ReadSession
from consumer.eviction import Evictor
from tests.app.graphql.conftest import AUTH, FIXTURE_BATCH, FIXTURE_USER, settings_for
from tests.helpers.cache import cache_settings, pair
from tests.helpers.events import fixture_messages, project
from tests.helpers.serve import until

BATCH = "query($id: ID!) { batch(id: $id) { id userId essays { totalCount } } }"
OTHER = "query($id: ID!) { batch(id: $id) { id status } }"
BAD_PAGE = "query($id: ID!) { batch(id: $id) { id essays(first: -1) { totalCount } } }"
STATUS = f"/internal/v1/batches/{FIXTURE_BATCH}/status"
LIST = f"/internal/v1/batches/user/{FIXTURE_USER}"
LONG_WAIT = 120.0  # never reached: what waits here is let in by the test


def admissions(outcome: str) -> float:
    return REGISTRY.get_sample_value("ras_api_admissions_total", {"outcome": outcome}) or 0.0


def queued() -> float:
    return REGISTRY.get_sample_value("ras_api_executions_queued") or 0.0


@dataclass
class Stack:
    client: httpx.AsyncClient
    gate: AdmissionGate

    async def graphql(self, query: str, **variables: Any) -> httpx.Response:
        return await self.client.post("/graphql", json={"query": query, "variables": variables}, headers=AUTH)

    async def rest(self, path: str) -> httpx.Response:
        return await self.client.get(path, headers=AUTH)


def gate_of(app: Starlette) -> AdmissionGate:
    for route in app.routes:
        endpoint = getattr(route, "endpoint", None)
        if isinstance(endpoint, GraphQLEndpoint) and endpoint.gate is not None:
            return endpoint.gate
    raise LookupError("the app has no GraphQL endpoint with an admission gate")


Make = Callable[[float], Awaitable[Stack]]


@pytest.fixture
async def stack_for(engine: AsyncEngine, redis_url: str) -> AsyncIterator[Make]:
    """Makes apps over the gen 2 fixtures with one execution slot, `wait` seconds of admission wait and the result
    cache on the test Redis."""
    await project(engine, fixture_messages("gen2"))
    opened: list[tuple[httpx.AsyncClient, QueryCache, Evictor]] = []

    async def make(wait: float) -> Stack:
        base = settings_for()
        settings = cache_settings(
            redis_url,
            internal_api_key=base.internal_api_key,
            allowed_service_ids=base.allowed_service_ids,
            max_concurrent_executions=1,
            admission_wait_seconds=wait,
        )
        cache, evictor = pair(settings)
        app = create_app(settings, engine, cache=cache)
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ras.test")
        opened.append((client, cache, evictor))
        return Stack(client, gate_of(app))

    yield make
    for client, cache, evictor in opened:
        await client.aclose()
        await cache.aclose()
        await evictor.aclose()


async def test_hits_are_served_while_every_slot_is_taken_and_a_miss_waits(
    stack_for: Make,
) -> None:
    api = await stack_for(LONG_WAIT)
    first = await api.graphql(BATCH, id=FIXTURE_BATCH)
    assert first.json()["extensions"]["cache"]["status"] == "miss"
    assert (await api.rest(STATUS)).headers["X-Cache"] == "miss"

    await api.gate.acquire()  # the only slot: every execution now waits for the test
    queued_before = queued()
    waiting = asyncio.create_task(api.graphql(OTHER, id=FIXTURE_BATCH))
    await until(lambda: _true(queued() > queued_before), "the miss queued for the slot")

    hit = await api.graphql(BATCH, id=FIXTURE_BATCH)
    assert hit.status_code == 200 and hit.json()["extensions"]["cache"]["status"] == "hit"
    assert hit.json()["data"] == first.json()["data"]
    rest_hit = await api.rest(STATUS)
    assert rest_hit.status_code == 200 and rest_hit.headers["X-Cache"] == "hit"
    assert not waiting.done(), "the miss waited behind the test's slot while the hits were answered"

    api.gate.release()
    answered = await asyncio.wait_for(waiting, 60)  # hang guard
    assert answered.status_code == 200 and answered.json()["data"]["batch"]["id"] == FIXTURE_BATCH
    assert api.gate.taken == 0


async def test_a_miss_past_the_wait_is_refused_with_retry_after(
    stack_for: Make,
) -> None:
    api = await stack_for(0.2)
    refused_before = admissions("refused")
    await api.gate.acquire()
    try:
        graphql = await api.graphql(BATCH, id=FIXTURE_BATCH)
        rest = await api.rest(LIST)
    finally:
        api.gate.release()

    assert graphql.status_code == 503 and graphql.headers["Retry-After"].isdigit()
    (error,) = graphql.json()["errors"]
    assert error["extensions"]["code"] == "SERVICE_UNAVAILABLE" and "retry" in error["message"]
    assert rest.status_code == 503 and rest.headers["Retry-After"].isdigit()
    body = rest.json()
    assert body["error"] == "Service unavailable" and body["error_code"] == "SERVICE_UNAVAILABLE"
    assert body["message"] == error["message"] and body["correlation_id"]
    assert admissions("refused") == refused_before + 2
    assert api.gate.taken == 0

    again = await api.graphql(BATCH, id=FIXTURE_BATCH)  # the slot is free: the same request is answered
    assert again.status_code == 200 and again.json()["data"]["batch"]["userId"] == FIXTURE_USER


async def test_slots_come_back_after_errors(stack_for: Make) -> None:
    api = await stack_for(LONG_WAIT)
    bad = await api.graphql(BAD_PAGE, id=FIXTURE_BATCH)  # refused by a resolver after the batch was read
    assert bad.json()["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    missing = await api.rest("/internal/v1/batches/no-such-batch/status")
    assert missing.status_code == 404
    assert api.gate.taken == 0
    admitted_before = admissions("admitted")
    assert (await api.graphql(BATCH, id=FIXTURE_BATCH)).status_code == 200
    assert admissions("admitted") == admitted_before + 1, "admitted at once: no slot was left taken"


async def test_slots_come_back_when_a_request_is_cancelled(stack_for: Make, engine: AsyncEngine) -> None:
    api = await stack_for(LONG_WAIT)
    # Cancelled while it waits for the slot: it never takes one.
    await api.gate.acquire()
    queued_before = queued()
    waiting = asyncio.create_task(api.graphql(BATCH, id=FIXTURE_BATCH))
    await until(lambda: _true(queued() > queued_before), "the request queued for the slot")
    waiting.cancel()
    api.gate.release()  # the request's loader still waits in the queue: it gets the slot and gives it back unused
    await asyncio.gather(waiting, return_exceptions=True)
    await until(lambda: _true(api.gate.taken == 0 and queued() == queued_before), "no slot taken, none queued")

    # Cancelled while it holds the slot, its read stuck behind a lock: the slot comes back with its snapshot.
    async with engine.connect() as locker:
        await locker.execute(text("LOCK TABLE batches IN ACCESS EXCLUSIVE MODE"))
        reading = asyncio.create_task(api.graphql(OTHER, id=FIXTURE_BATCH))
        await until(lambda: _true(api.gate.taken == 1), "the request admitted")
        reading.cancel()
        await locker.rollback()
    await asyncio.gather(reading, return_exceptions=True)
    await until(lambda: _true(api.gate.taken == 0), "the cancelled request's slot given back")
    answered = await api.graphql(OTHER, id=FIXTURE_BATCH)
    assert answered.status_code == 200 and answered.json()["data"]["batch"]["id"] == FIXTURE_BATCH


async def test_a_refused_request_reads_nothing_more(engine: AsyncEngine) -> None:
    gate = AdmissionGate(1, 0.05)
    await gate.acquire()
    session = ReadSession(engine, gate=gate)
    refused_before = admissions("refused")
    try:
        for _ in range(2):
            with pytest.raises(Overloaded):
                await session.run(lambda conn: conn.execute(text("SELECT 1")))
        assert session.unavailable
        assert admissions("refused") == refused_before + 1, "the second read was refused at once, without waiting"
    finally:
        await session.close()
        gate.release()
    assert gate.taken == 0
    await gate.acquire()  # free again at once
    gate.release()


def test_the_pool_must_hold_the_admitted_executions() -> None:
    with pytest.raises(ValueError, match="RAS_MAX_CONCURRENT_EXECUTIONS 40"):
        settings_for(max_concurrent_executions=40, database_pool_size=10)
    assert settings_for(max_concurrent_executions=20, database_pool_size=10).max_concurrent_executions == 20


async def _true(value: bool) -> bool:
    return value
