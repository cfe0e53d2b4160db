"""A PostgreSQL primary and its streaming replica, started once per session and only for these tests (or the
configured RAS_TEST_DATABASE_URL and RAS_TEST_DATABASE_READ_URL), and a fresh migrated database on them per test.

A test holds the replica's replay (`Pair.paused`) to make it lag behind the primary by exactly the commits it makes
meanwhile, and waits for it to catch up (`Pair.caught_up`): a wait for a condition, never a sleep."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from db.engine import create_engine
from db.migrate import upgrade_async
from db.replication import insert_lsn
from tests.helpers import servers

CATCH_UP_TIMEOUT_SECONDS = 60


@pytest.fixture(scope="session")
def replica_servers() -> Iterator[tuple[str, str]]:
    """URLs of the `postgres` database on the primary and on its replica."""
    configured = servers.env(servers.TEST_DATABASE_READ_URL)
    if configured:
        its_primary = servers.env(servers.TEST_DATABASE_URL)
        if its_primary is None:
            pytest.fail(f"{servers.TEST_DATABASE_READ_URL} needs {servers.TEST_DATABASE_URL}, the replica's primary")
        yield its_primary, configured
        return
    from devstack.postgres import PostgresProcess, ReplicaProcess

    with PostgresProcess() as primary, ReplicaProcess(primary) as replica:
        yield primary.url_for("postgres"), replica.url_for("postgres")


@pytest.fixture(scope="session")
async def replica_template(replica_servers: tuple[str, str]) -> AsyncIterator[str]:
    primary, _ = replica_servers
    name = f"ras_rtpl_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    await upgrade_async(await servers.create_database(primary, name))
    yield name
    await servers.drop_database(primary, name)


@dataclass
class Pair:
    primary: AsyncEngine  # the test's database on the primary
    replica_url: str  # the same database on the replica
    replica_server_dsn: str  # the replica's `postgres` database, where replay is paused and resumed

    async def wal_position(self) -> int:
        """The primary's WAL position now, as the consumer reads it for each eviction."""
        async with self.primary.connect() as conn:
            return await insert_lsn(conn)

    async def caught_up(self) -> None:
        """Wait until the replica has replayed everything the primary has written so far."""
        target = await self.wal_position()
        async with asyncio.timeout(CATCH_UP_TIMEOUT_SECONDS):
            while True:
                try:
                    conn = await asyncpg.connect(servers.asyncpg_dsn(self.replica_url))
                except asyncpg.InvalidCatalogNameError:  # the database's creation is not replayed yet
                    await asyncio.sleep(0.02)
                    continue
                try:
                    replayed = await conn.fetchval("SELECT pg_last_wal_replay_lsn() - '0/0'")
                finally:
                    await conn.close()
                if replayed >= target:
                    return
                await asyncio.sleep(0.02)

    @asynccontextmanager
    async def paused(self) -> AsyncIterator[None]:
        """The replica's replay held for the block: what the primary commits meanwhile is not visible on it."""
        await self._replay("pg_wal_replay_pause")
        try:
            yield
        finally:
            await self._replay("pg_wal_replay_resume")

    async def _replay(self, function: str) -> None:
        conn = await asyncpg.connect(self.replica_server_dsn)
        try:
            await conn.execute(f"SELECT {function}()")
        finally:
            await conn.close()


@pytest.fixture
async def pair(replica_servers: tuple[str, str], replica_template: str) -> AsyncIterator[Pair]:
    primary_server, replica_server = replica_servers
    name = f"ras_r_{uuid.uuid4().hex[:12]}"
    url = await servers.create_database(primary_server, name, template=replica_template)
    engine = create_engine(url, pool_size=2)
    pair = Pair(engine, servers.with_database(replica_server, name), servers.asyncpg_dsn(replica_server))
    try:
        await pair.caught_up()
        yield pair
    finally:
        await engine.dispose()
        await servers.drop_database(primary_server, name)
