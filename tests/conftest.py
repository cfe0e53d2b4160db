"""Session-wide servers and a fresh, Alembic-migrated database per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from db.migrate import upgrade_async
from tests import servers


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """SQLAlchemy URL of a database on the test server from which others can be created."""
    configured = servers.env(servers.TEST_DATABASE_URL)
    if configured:
        yield configured
        return
    from ras.embedded import PostgresProcess

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


@pytest.fixture
async def database_url(postgres_server_url: str, template_database: str) -> AsyncIterator[str]:
    name = f"ras_t_{uuid.uuid4().hex[:12]}"
    url = await servers.create_database(postgres_server_url, name, template=template_database)
    yield url
    await servers.drop_database(postgres_server_url, name)


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    eng = create_async_engine(database_url, pool_size=5)
    yield eng
    await eng.dispose()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    configured = servers.env(servers.TEST_REDIS_URL)
    if configured:
        yield configured
        return
    from ras.embedded import RedisProcess

    with RedisProcess() as server:
        yield server.url


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    configured = servers.env(servers.TEST_KAFKA_BOOTSTRAP)
    if configured:
        yield configured
        return
    from ras.embedded import KafkaProcess

    with KafkaProcess() as server:
        yield server.bootstrap
