"""Where a request's snapshot opens with read replicas (app/reads/session.py, app/replicas.py), on a real streaming
replica: on the replica, with how far it had replayed; on the primary when the replica is down (seen in the metrics
and /readyz, which stays ready) or has not applied a position the request waited for."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import text

from app.main import create_app
from app.reads.session import ReadSession
from app.replicas import Replicas
from devstack.process import free_port
from tests.app.graphql.conftest import AUTH, settings_for
from tests.app.replicas.conftest import Pair
from tests.app.replicas.helpers import create_probe, read_value, set_value
from tests.helpers.cache import Delta, sample


@pytest.fixture
async def replicas(pair: Pair) -> AsyncIterator[Replicas]:
    await create_probe(pair.primary)
    await set_value(pair.primary, "x", 1)
    await pair.caught_up()
    replicas = Replicas([pair.replica_url], pool_size=2)
    yield replicas
    await replicas.aclose()


@pytest.fixture
async def unreachable() -> AsyncIterator[Replicas]:
    """A replica nothing listens for."""
    replicas = Replicas([f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/ras"], pool_size=1)
    yield replicas
    await replicas.aclose()


async def _read(session: ReadSession) -> int | None:
    try:
        return await session.run(lambda conn: read_value(conn, "x"))
    finally:
        await session.close()


async def test_a_snapshot_opens_on_the_replica_after_reading_its_replay_position(
    pair: Pair, replicas: Replicas
) -> None:
    (replica,) = replicas.replicas
    counted = Delta()
    async with pair.paused():
        await set_value(pair.primary, "x", 2)
        session = ReadSession(pair.primary, replicas=replicas)
        assert await _read(session) == 1, "read on the paused replica"
        primary = ReadSession(pair.primary)
        assert await _read(primary) == 2 and primary.replayed is None
    assert session.replayed is not None and session.replayed < await pair.wal_position()
    assert counted("ras_replica_snapshots_total", replica=replica.name) == 1


async def test_a_statement_alone_reads_the_replica_too(pair: Pair, replicas: Replicas) -> None:
    async with pair.paused():
        await set_value(pair.primary, "x", 2)
        session = ReadSession(pair.primary, replicas=replicas)
        try:
            assert await session.run_alone(lambda conn: read_value(conn, "x")) == 1
        finally:
            await session.close()
    assert session.replayed is not None


async def test_a_replica_behind_a_required_position_is_passed_over(pair: Pair, replicas: Replicas) -> None:
    counted = Delta()
    async with pair.paused():
        async with pair.primary.begin() as conn:
            position = "INSERT INTO consumer_positions (topic, partition, next_offset) VALUES ('t', 0, 10)"
            await conn.execute(text(position))
            await conn.execute(text("UPDATE probe SET v = 2"))
        waited = ReadSession(pair.primary, replicas=replicas)
        waited.require(("t", 0), 10)  # a read-your-writes wait found offset 9 applied on the primary
        assert await _read(waited) == 2 and waited.replayed is None
        assert counted("ras_replica_fallbacks_total", reason="behind") == 1
    await pair.caught_up()
    served = ReadSession(pair.primary, replicas=replicas)
    served.require(("t", 0), 10)
    assert await _read(served) == 2 and served.replayed is not None, "the replica has applied it now"


async def test_a_replica_that_is_down_falls_back_to_the_primary(pair: Pair, unreachable: Replicas) -> None:
    await create_probe(pair.primary)
    await set_value(pair.primary, "x", 3)
    (replica,) = unreachable.replicas
    counted = Delta()
    session = ReadSession(pair.primary, replicas=unreachable)
    assert await _read(session) == 3 and session.replayed is None
    assert counted("ras_replica_fallbacks_total", reason="down") == 1
    assert sample("ras_replica_up", replica=replica.name) == 0
    assert unreachable.candidates() == [], "left alone for a while, not tried by every request"
    again = ReadSession(pair.primary, replicas=unreachable)
    assert await _read(again) == 3
    assert counted("ras_replica_fallbacks_total", reason="down") == 2


async def test_readyz_reports_a_down_replica_and_stays_ready(pair: Pair, unreachable: Replicas) -> None:
    (replica,) = unreachable.replicas
    app = create_app(settings_for(cache_enabled=False), pair.primary, replicas=unreachable)
    await unreachable.sample(lambda: pair.primary)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ras.test") as client:
        response = await client.get("/readyz", headers=AUTH)
    assert response.status_code == 200
    checks = response.json()["checks"]
    assert checks["database"] == {"status": "healthy"}
    assert checks[f"replica {replica.name}"] == {"status": "unhealthy"}


async def test_the_sample_measures_the_lag(pair: Pair, replicas: Replicas) -> None:
    (replica,) = replicas.replicas
    async with pair.paused():
        await set_value(pair.primary, "x", 2)
        await replicas.sample(lambda: pair.primary)
        assert sample("ras_replica_lag_bytes", replica=replica.name) > 0
    await pair.caught_up()
    await replicas.sample(lambda: pair.primary)
    assert sample("ras_replica_up", replica=replica.name) == 1
