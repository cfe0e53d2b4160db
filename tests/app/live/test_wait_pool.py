"""Read-your-writes waits hold no request connection (SECURITY.md, finding 1), against a real `ras serve`.

The attack: `projection { waitFor }` opened the request's snapshot (one pooled connection) and then waited up to
`timeoutMs`, reading positions through a second connection of the same pool; 21 concurrent waits for an offset that
never comes held all 20 connections, and every read of every client stalled. Here 50 waits (`waitFor` and
`@consistent` alike) are pending on a server whose request pool has 5 connections (15 with its overflow): while they
are, a batch query and a REST call are answered, the request pool's checked-out count stays below its size, and one
wait more than RAS_CONSISTENCY_MAX_WAITERS is refused at once. Then the awaited position arrives and every wait
answers.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from consumer.notify import positions_message
from infra.cache_keys import CacheLayout
from tests.app.graphql.conftest import API_KEY, AUTH, FIXTURE_BATCH, FIXTURE_USER, SERVICE_ID
from tests.helpers.events import fixture_messages, project
from tests.helpers.serve import metric, ras_serve, until

WAITS = 50
POOL_SIZE = 5
WAIT_FOR = 'query($o: Long!) { projection { waitFor(topic: "nope", partition: 0, offset: $o, timeoutMs: 60000) } }'
CONSISTENT = """
query($o: Long!, $id: ID!) @consistent(topic: "nope", partition: 0, offset: $o, timeoutMs: 60000) {
  batch(id: $id) { id }
}
"""
BATCH = "query($id: ID!) { batch(id: $id) { id userId essays { totalCount } } }"


@pytest.fixture
def prefix() -> str:
    return f"ras-waits-{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def server(
    database_url: str, engine: AsyncEngine, redis_url: str, prefix: str, tmp_path: Path
) -> AsyncIterator[httpx.AsyncClient]:
    await project(engine, fixture_messages("gen2"))
    async with (
        ras_serve(
            database_url,
            tmp_path / "serve.log",
            key=API_KEY,
            service=SERVICE_ID,
            RAS_REDIS_URL=redis_url,
            RAS_CACHE_PREFIX=prefix,
            RAS_LIVE_UPDATES_ENABLED="true",  # waits sleep on the consumer's position messages
            RAS_DATABASE_POOL_SIZE=str(POOL_SIZE),
            RAS_CONSISTENCY_MAX_WAIT_MS="60000",
            RAS_CONSISTENCY_MAX_WAITERS=str(WAITS),
            # The 25 @consistent waits execute together once the position arrives: on a busy machine some of them
            # wait longer than the default second for one of the 10 execution slots. Admission is not tested here.
            RAS_ADMISSION_WAIT_SECONDS="120",
        ) as base_url,
        httpx.AsyncClient(base_url=base_url, timeout=90, limits=httpx.Limits(max_connections=WAITS + 10)) as client,
    ):
        yield client


async def post(client: httpx.AsyncClient, query: str, variables: dict[str, Any]) -> dict[str, Any]:
    response = await client.post("/graphql", json={"query": query, "variables": variables}, headers=AUTH)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_pending_waits_leave_the_request_pool_to_requests(
    server: httpx.AsyncClient, redis_url: str, prefix: str
) -> None:
    offsets = range(1_000, 1_000 + WAITS)
    waits = [
        asyncio.create_task(post(server, WAIT_FOR, {"o": o}))
        if o % 2
        else asyncio.create_task(post(server, CONSISTENT, {"o": o, "id": FIXTURE_BATCH}))
        for o in offsets
    ]
    checked_out: list[float] = []

    async def all_pending() -> bool:
        checked_out.append(await metric(server, AUTH, "ras_db_pool_connections", state="checked_out"))
        return await metric(server, AUTH, "ras_consistency_waits") == WAITS

    await until(all_pending, f"{WAITS} waits pending")
    size = await metric(server, AUTH, "ras_db_pool_connections", state="size")
    assert size == POOL_SIZE

    # While every wait is pending: a batch query and a REST call are answered, each with its data.
    batch = await post(server, BATCH, {"id": FIXTURE_BATCH})
    assert batch["data"]["batch"]["userId"] == FIXTURE_USER
    status = await server.get(f"/internal/v1/batches/{FIXTURE_BATCH}/status", headers=AUTH)
    assert status.status_code == 200 and status.json()["batch_id"] == FIXTURE_BATCH
    # One wait more than the limit is refused at once, naming it.
    refused = await post(server, WAIT_FOR, {"o": 5_000})
    (error,) = refused["errors"]
    assert error["extensions"]["code"] == "LIMIT_EXCEEDED" and error["extensions"]["limit"] == WAITS
    assert "RAS_CONSISTENCY_MAX_WAITERS" in error["message"]
    checked_out.append(await metric(server, AUTH, "ras_db_pool_connections", state="checked_out"))
    assert not any(task.done() for task in waits), "the waits were still pending throughout"
    assert max(checked_out) < size, checked_out

    # The consumer commits the awaited position: every wait answers, the @consistent ones with their read.
    redis = Redis.from_url(redis_url)
    try:
        await redis.publish(CacheLayout(prefix).positions_channel, positions_message([("nope", 0, 1_000 + WAITS)]))
    finally:
        await redis.aclose()
    async with asyncio.timeout(30):  # hang guard
        answers = await asyncio.gather(*waits)
    for offset, answer in zip(offsets, answers, strict=True):
        assert "errors" not in answer, answer
        expected = {"projection": {"waitFor": True}} if offset % 2 else {"batch": {"id": FIXTURE_BATCH}}
        assert answer["data"] == expected
    assert await metric(server, AUTH, "ras_consistency_waits") == 0
