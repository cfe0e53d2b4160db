"""The throwaway servers of devstack/: they answer, survive stop/start on the same port, and crash cleanly.

Each test owns its server instances (never the session-wide ones from conftest), because it stops and kills them.
"""

from __future__ import annotations

import socket
import uuid
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from devstack.kafka import KafkaProcess, kafka_ready
from devstack.postgres import PostgresProcess
from devstack.process import EmbeddedServerError, reap_orphans
from devstack.redis import RedisProcess
from devstack.topics import create_topics


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


async def _pg_scalar(url: str, sql: str) -> object:
    # NullPool: no pooled connection may outlive a server restart between calls.
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.begin() as conn:
            result = await conn.execute(text(sql))
            return result.scalar() if result.returns_rows else None
    finally:
        await engine.dispose()


async def test_postgres_answers_and_keeps_data_across_stop_and_kill() -> None:
    with PostgresProcess() as pg:
        port, run_dir = pg.port, pg.run_dir
        assert pg.url == f"postgresql+asyncpg://postgres@127.0.0.1:{port}/postgres"
        url = pg.create_database("emb_check")
        assert pg.create_database("emb_check") == url  # idempotent
        assert await _pg_scalar(url, "SELECT current_setting('fsync')") == "off"
        await _pg_scalar(url, "CREATE TABLE t AS SELECT 42 AS v")

        pg.stop()
        assert not pg.is_running() and not _port_open(port)
        pg.start()
        assert pg.port == port
        assert await _pg_scalar(url, "SELECT v FROM t") == 42

        pg.kill()  # crash: recovery on the next start must keep committed data
        assert not pg.is_running()
        pg.start()
        assert await _pg_scalar(url, "SELECT v FROM t") == 42
    assert not pg.is_running() and not _port_open(port)
    assert not run_dir.exists()


def test_postgres_keeps_a_caller_provided_data_dir(tmp_path: Path) -> None:
    data = tmp_path / "pgdata"
    with PostgresProcess(data) as pg:
        assert pg.data_dir == data
    assert (data / "PG_VERSION").exists()  # close() deletes only what it created
    with PostgresProcess(data) as pg:  # and a second server reuses the existing cluster
        assert pg.is_running()


async def test_redis_answers_and_restarts_on_the_same_port() -> None:
    with RedisProcess() as rs:
        port = rs.port
        assert rs.url == f"redis://127.0.0.1:{port}/0"
        client = aioredis.Redis.from_url(rs.url)
        try:
            assert await client.set("k", "v")
            rs.stop()
            assert not _port_open(port)
            rs.start()
            await client.connection_pool.disconnect()
            assert await client.ping()
            assert await client.get("k") is None  # no persistence, by design
            rs.kill()
            rs.start()
            await client.connection_pool.disconnect()
            assert await client.ping()
        finally:
            await client.aclose()
    assert not _port_open(port)


async def test_kafka_round_trip_and_restart() -> None:
    with KafkaProcess() as kafka:
        port = kafka.port
        assert kafka.bootstrap == f"127.0.0.1:{port}"
        topic = f"emb-{uuid.uuid4().hex[:8]}"
        await create_topics(kafka.bootstrap, [topic], 4)
        await create_topics(kafka.bootstrap, [topic], 4)  # "already exists" is tolerated

        producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap)
        await producer.start()
        try:
            meta = await producer.send_and_wait(topic, b"hello", key=b"k", partition=2)
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            tp = TopicPartition(topic, 2)
            consumer.assign([tp])
            consumer.seek(tp, meta.offset)
            batch = await consumer.getmany(tp, timeout_ms=5000)
            assert [r.value for r in batch[tp]] == [b"hello"]
        finally:
            await consumer.stop()

        kafka.stop()
        assert not _port_open(port) and not kafka_ready("127.0.0.1", port)
        kafka.start()
        assert kafka.port == port
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap)
        await admin.start()
        try:
            # The bundled Tansu only has in-memory storage: a restart starts from an empty broker.
            assert topic not in await admin.list_topics()
        finally:
            await admin.close()
        kafka.kill()
        kafka.start()
        assert kafka_ready("127.0.0.1", port)
    assert not _port_open(port)


def test_start_failure_reports_the_log_tail() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        server = RedisProcess(port=blocker.getsockname()[1])
        try:
            with pytest.raises(EmbeddedServerError, match=r"(?i)address already in use"):
                server.start(timeout=5)
            assert not server.is_running()
        finally:
            server.close()


def test_orphans_of_a_dead_owner_are_reaped() -> None:
    server = RedisProcess()
    try:
        server.start()
        port = server.port
        # Pretend the owning interpreter died without cleanup (e.g. SIGKILLed pytest).
        (server.run_dir / "owner").write_text("999999999 0.000")
        assert reap_orphans() >= 1
        assert not server.run_dir.exists()
        assert not _port_open(port)
    finally:
        server.close()
