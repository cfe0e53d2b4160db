"""Where the test suite's PostgreSQL, Redis and Kafka-protocol broker come from.

Each is taken from an environment variable when set (a real Apache Kafka included), and otherwise started as a
throwaway process owned by the test session (devstack/postgres.py, redis.py, kafka.py). Tests that stop or kill a
server ask for an owned one explicitly (`owned_postgres` etc. in conftest) so a shared server is never disturbed.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence

import asyncpg
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

TEST_DATABASE_URL = "RAS_TEST_DATABASE_URL"
TEST_REDIS_URL = "RAS_TEST_REDIS_URL"
TEST_KAFKA_BOOTSTRAP = "RAS_TEST_KAFKA_BOOTSTRAP"
# A streaming replica of RAS_TEST_DATABASE_URL, for the read-replica tests (tests/app/replicas): else they start a
# primary and a replica of their own (the shared server may not accept replication connections).
TEST_DATABASE_READ_URL = "RAS_TEST_DATABASE_READ_URL"


def env(name: str) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or None


def asyncpg_dsn(sqlalchemy_url: str) -> str:
    return sqlalchemy_url.replace("postgresql+asyncpg://", "postgresql://", 1)


def with_database(sqlalchemy_url: str, database: str) -> str:
    base, _, _ = sqlalchemy_url.rpartition("/")
    return f"{base}/{database}"


async def create_database(server_url: str, name: str, template: str | None = None) -> str:
    conn = await asyncpg.connect(asyncpg_dsn(server_url))
    try:
        # FILE_COPY copies the template's few files whole: about a third of WAL_LOG's time per test database on
        # the suite's throwaway server (fsync off), and faster on a durable server too (it costs a checkpoint,
        # WAL_LOG writes every block to the WAL).
        suffix = f' TEMPLATE "{template}" STRATEGY FILE_COPY' if template else ""
        await conn.execute(f'CREATE DATABASE "{name}"{suffix}')
    finally:
        await conn.close()
    return with_database(server_url, name)


async def drop_database(server_url: str, name: str) -> None:
    conn = await asyncpg.connect(asyncpg_dsn(server_url))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def recreate_topics(bootstrap: str, topics: Sequence[str], partitions: int) -> None:
    """Delete and recreate `topics` on a long-lived broker (a configured real Kafka), so each test starts empty."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        async with asyncio.timeout(60):
            existing = set(await admin.list_topics()) & set(topics)
            if existing:
                await admin.delete_topics(sorted(existing))
            # Kafka deletes asynchronously: creating too early reports "already exists".
            while set(await admin.list_topics()) & set(topics):
                await asyncio.sleep(0.2)
            response = await admin.create_topics([NewTopic(t, partitions, 1) for t in topics])
            failed = [(t, code) for t, code, *_ in response.topic_errors if code != 0]
            if failed:
                raise RuntimeError(f"could not create topics on {bootstrap}: {failed}")
    finally:
        await admin.close()
