"""Session-wide servers and a fresh, Alembic-migrated database per test; the slow marks (tests/helpers/slow.py);
the figures block at the end of a run.

Every server fixture starts its server on first use only, so tests that ask for none (the pure logic of
tests/consumer/pure, tests/infra, the layer and packaging checks) run without any.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from consumer.pure.topics import ALL_TOPICS
from db.engine import create_engine
from db.migrate import upgrade_async
from tests.helpers import figures, servers, slow
from tests.helpers.databases import DatabasePool

if TYPE_CHECKING:
    from devstack.postgres import PostgresProcess

# RAS_ENVIRONMENT has no default: the suite states development, for every Settings it builds and every `ras`
# subprocess that inherits this environment (a test about production, or about the variable, sets its own).
os.environ["RAS_ENVIRONMENT"] = "development"


# Before the marker plugin deselects (`-m "not slow"`).
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    slow.mark(items)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The scenarios' figures (tests/helpers/figures.py) in one block, after the results."""
    reported = figures.reported()
    if not reported:
        return
    terminalreporter.section("figures")
    for entry in reported:
        terminalreporter.write_line(f"{entry.title}  ({entry.test})")
        for line in entry.lines:
            terminalreporter.write_line(f"    {line}")


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """SQLAlchemy URL of a database on the test server from which others can be created."""
    configured = servers.env(servers.TEST_DATABASE_URL)
    if configured:
        yield configured
        return
    from devstack.postgres import PostgresProcess

    with PostgresProcess() as server:
        yield server.url_for("postgres")


@pytest.fixture(scope="session")
async def template_database(postgres_server_url: str) -> AsyncIterator[str]:
    """A database migrated once with Alembic; every test database is a copy of it."""
    name = f"ras_tpl_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    url = await servers.create_database(postgres_server_url, name)
    await upgrade_async(url)
    yield name
    await servers.drop_database(postgres_server_url, name)


@pytest.fixture(scope="session")
def database_pool(postgres_server_url: str, template_database: str) -> Iterator[DatabasePool]:
    pool = DatabasePool(postgres_server_url, template_database)
    yield pool
    pool.close()


@pytest.fixture
def database_url(database_pool: DatabasePool) -> Iterator[str]:
    """A fresh copy of the migrated template for this test alone (prepared while the test before it ran)."""
    url = database_pool.take()
    yield url
    database_pool.release(url)


@pytest.fixture(scope="session")
def redis_cluster_url() -> Iterator[str]:
    """A Redis Cluster of three local nodes (devstack/redis_cluster.py), started for the first test that asks."""
    from devstack.redis_cluster import RedisClusterProcesses

    with RedisClusterProcesses() as cluster:
        yield cluster.url


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    eng = create_engine(database_url, pool_size=5)
    yield eng
    await eng.dispose()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    configured = servers.env(servers.TEST_REDIS_URL)
    if configured:
        yield configured
        return
    from devstack.redis import RedisProcess

    with RedisProcess() as server:
        yield server.url


@pytest.fixture
async def kafka_bootstrap() -> AsyncIterator[str]:
    """A broker whose eight topics are empty, with 4 partitions each.

    A throwaway Tansu per test (it starts in ~50 ms); a configured broker gets its topics deleted and recreated.
    """
    configured = servers.env(servers.TEST_KAFKA_BOOTSTRAP)
    if configured:
        await servers.recreate_topics(configured, ALL_TOPICS, partitions=4)
        yield configured
        return
    from devstack.kafka import KafkaProcess
    from devstack.topics import create_topics

    server = KafkaProcess()
    await asyncio.to_thread(server.start)
    try:
        await create_topics(server.bootstrap, ALL_TOPICS, 4)
        yield server.bootstrap
    finally:
        await asyncio.to_thread(server.close)


@pytest.fixture
async def owned_postgres() -> AsyncIterator[tuple[PostgresProcess, str]]:
    """A PostgreSQL server this test alone owns (it may stop or kill it), with a migrated database `ras`."""
    from devstack.postgres import PostgresProcess

    server = PostgresProcess()
    await asyncio.to_thread(server.start)
    try:
        url = await servers.create_database(server.url_for("postgres"), "ras")
        await upgrade_async(url)
        yield server, url
    finally:
        await asyncio.to_thread(server.close)
