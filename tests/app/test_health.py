"""Health checks on the request pools (SECURITY.md, finding 5), against a real `ras serve`.

The attack: unauthenticated `/readyz` and `/healthz` ran `SELECT 1`, a Redis PING and a projection read through the
request pools, so 200 clients looping on them made `/readyz` report 503 (a load balancer would eject a healthy
instance) and slowed real requests. Now the dependencies are probed at most once a second on a connection of the
probe's own, and every answer is served from memory: with every connection of the request pool taken by requests
that cannot finish, 200 concurrent `/readyz` still say ready. And `/healthz` names no dependency's address or error:
that goes to the log.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.health import PROBE_INTERVAL_SECONDS
from infra.settings import DATABASE_POOL_OVERFLOW
from tests.app.graphql.conftest import API_KEY, AUTH, FIXTURE_BATCH, SERVICE_ID
from tests.helpers.events import fixture_messages, project
from tests.helpers.processes import free_port
from tests.helpers.serve import metric, ras_serve, until

POOL_SIZE = 2
POOL_CAPACITY = POOL_SIZE + DATABASE_POOL_OVERFLOW
BLOCKED = POOL_CAPACITY + 8
READYZ = 200
BATCH = "query($id: ID!) { batch(id: $id) { id } }"


async def test_readiness_answers_from_memory_while_requests_hold_every_connection(
    database_url: str, engine: AsyncEngine, tmp_path: Path
) -> None:
    await project(engine, fixture_messages("gen2"))
    async with (
        ras_serve(
            database_url,
            tmp_path / "serve.log",
            key=API_KEY,
            service=SERVICE_ID,
            RAS_DATABASE_POOL_SIZE=str(POOL_SIZE),
            # As many executions as the pool has connections, the rest waiting for a slot until the lock goes.
            RAS_MAX_CONCURRENT_EXECUTIONS=str(POOL_CAPACITY),
            RAS_ADMISSION_WAIT_SECONDS="300",
        ) as base_url,
        httpx.AsyncClient(base_url=base_url, timeout=60, limits=httpx.Limits(max_connections=READYZ + 50)) as client,
        engine.connect() as locker,
    ):
        # Requests that cannot finish: the batches table is locked, so each holds its pooled connection.
        await locker.execute(text("LOCK TABLE batches IN ACCESS EXCLUSIVE MODE"))
        blocked = [
            asyncio.create_task(
                client.post("/graphql", json={"query": BATCH, "variables": {"id": FIXTURE_BATCH}}, headers=AUTH)
            )
            for _ in range(BLOCKED)
        ]

        async def pool_taken() -> bool:
            return await metric(client, AUTH, "ras_db_pool_connections", state="checked_out") == POOL_CAPACITY

        await until(pool_taken, "every request connection checked out")
        probes_before = await metric(client, AUTH, "ras_health_probes_total")
        started = time.monotonic()
        answers = await asyncio.gather(*(client.get("/readyz") for _ in range(READYZ)))
        health = await client.get("/healthz")
        elapsed = time.monotonic() - started
        probes = await metric(client, AUTH, "ras_health_probes_total") - probes_before

        assert [a.status_code for a in answers] == [200] * READYZ, {a.status_code for a in answers}
        assert all(a.json()["status"] == "ready" for a in answers)
        assert health.json()["dependencies"]["database"] == {"status": "healthy"}
        # At most one probe per interval (plus the one a stale memo starts), whatever the number of callers.
        assert probes <= elapsed / PROBE_INTERVAL_SECONDS + 1, (probes, elapsed)
        assert not any(task.done() for task in blocked), "the requests held their connections throughout"
        assert await metric(client, AUTH, "ras_db_pool_connections", state="checked_out") == POOL_CAPACITY

        await locker.rollback()  # the lock goes: the held requests finish
        async with asyncio.timeout(60):  # hang guard
            done = await asyncio.gather(*blocked)
        assert all(r.status_code == 200 and r.json()["data"]["batch"]["id"] == FIXTURE_BATCH for r in done)


async def test_healthz_shows_no_dependency_error_to_unauthenticated_callers(database_url: str, tmp_path: Path) -> None:
    nowhere = free_port()  # a Redis nothing listens on
    log = tmp_path / "serve.log"
    async with (
        ras_serve(
            database_url,
            log,
            key=API_KEY,
            service=SERVICE_ID,
            RAS_CACHE_ENABLED="true",
            RAS_REDIS_URL=f"redis://127.0.0.1:{nowhere}/0",
        ) as base_url,
        httpx.AsyncClient(base_url=base_url, timeout=30) as client,
    ):
        health = await client.get("/healthz")
        ready = await client.get("/readyz")
    assert health.status_code == 200 and ready.status_code == 200  # Redis down: the cache fails open
    assert health.json()["dependencies"]["redis"] == {"status": "unhealthy"}
    assert health.json()["checks"]["dependencies_available"] is False
    assert ready.json()["checks"]["redis"] == {"status": "unhealthy"}
    for body in (health.text, ready.text):
        assert str(nowhere) not in body and "127.0.0.1" not in body and "Error" not in body, body
    # Operators find the reason in the log, said once.
    reasons = [line for line in log.read_text().splitlines() if "dependency unhealthy" in line]
    assert len(reasons) == 1 and str(nowhere) in reasons[0], reasons
