"""Live updates end to end: WebSocket clients, API servers (in-process and `ras serve`), a consumer that publishes."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
import uvicorn
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncEngine
from websockets.asyncio.client import ClientConnection, connect

from app.live import EventHub
from app.main import create_app
from consumer.notify import Publisher
from consumer.runner import ConsumerLoop
from devstack.process import free_port
from infra.settings import Settings
from infra.tracing import Tracing
from tests.app.graphql.conftest import API_KEY, AUTH, SERVICE_ID

PROTOCOL = "graphql-transport-ws"

BATCH_PROGRESS = """
subscription Progress($id: ID!) {
  batchProgress(batchId: $id) { id userId statusCode essayCount essays { totalCount } }
}
"""


@pytest.fixture
def prefix() -> str:
    """A Redis key prefix of this test's own: its channels and cache keys meet no other test's."""
    return f"ras-live-{uuid.uuid4().hex[:10]}"


def live_settings(database_url: str, redis_url: str, prefix: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "redis_url": redis_url,
        "cache_prefix": prefix,
        "internal_api_key": SecretStr(API_KEY),
        "allowed_service_ids": (SERVICE_ID, "admin-dashboard-service"),
        "environment": "development",
        "kafka_group_id": f"live-{uuid.uuid4().hex[:8]}",
        "kafka_session_timeout_ms": 6_000,
        "kafka_fetch_timeout_ms": 50,
        "redis_timeout_seconds": 0.5,
    }
    values.update(overrides)
    return Settings(**values)


def process_env(settings: Settings, port: int | None = None) -> dict[str, str]:
    """The same settings as RAS_* variables, for `ras serve` / `ras consume` / `ras rebuild` subprocesses."""
    env = {
        "RAS_DATABASE_URL": settings.database_url,
        "RAS_REDIS_URL": settings.redis_url,
        "RAS_REDIS_CLUSTER": str(settings.redis_cluster).lower(),
        "RAS_CACHE_PREFIX": settings.cache_prefix,
        "RAS_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "RAS_KAFKA_GROUP_ID": settings.kafka_group_id,
        "RAS_KAFKA_SESSION_TIMEOUT_MS": str(settings.kafka_session_timeout_ms),
        "RAS_KAFKA_FETCH_TIMEOUT_MS": str(settings.kafka_fetch_timeout_ms),
        "RAS_INTERNAL_API_KEY": API_KEY,
        "RAS_ALLOWED_SERVICE_IDS": ",".join(settings.allowed_service_ids),
        "RAS_REDIS_TIMEOUT_SECONDS": str(settings.redis_timeout_seconds),
        "RAS_CONSUMER_METRICS_PORT": "0",
        "RAS_HOST": "127.0.0.1",
        "RAS_LOG_LEVEL": "INFO",
    }
    if port is not None:
        env["RAS_PORT"] = str(port)
    return env


class _Server(uvicorn.Server):
    """uvicorn as a task of the test's loop; signals stay pytest's."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass
class LiveApi:
    """An API server in this process, on a real port, so real WebSocket clients can reach it."""

    port: int
    hub: EventHub
    server: _Server
    task: asyncio.Task[None]

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/graphql"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextlib.asynccontextmanager
async def live_api(settings: Settings, engine: AsyncEngine, tracing: Tracing | None = None) -> AsyncIterator[LiveApi]:
    hub = EventHub.from_settings(settings)
    port = free_port()
    app = create_app(settings, engine, events=hub, tracing=tracing)
    server = _Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", ws_ping_interval=None))
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(10):
            while not server.started or not hub.listening.is_set():
                assert not task.done(), "the API server did not start"
                await asyncio.sleep(0.02)
        yield LiveApi(port, hub, server, task)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


@contextlib.asynccontextmanager
async def running_consumer(settings: Settings, engine: AsyncEngine) -> AsyncIterator[ConsumerLoop]:
    """The real consumer loop against the broker, publishing after each commit (as `ras consume` wires it)."""
    publisher = Publisher.from_settings(settings, engine)
    consumer = ConsumerLoop(settings, engine, on_applied=publisher.publish)
    task = asyncio.create_task(consumer.run())
    try:
        async with asyncio.timeout(30):
            await consumer.assigned.wait()
        yield consumer
    finally:
        consumer.stop()
        await asyncio.wait_for(task, 30)
        await publisher.aclose()


class GraphQLWs:
    """A graphql-transport-ws client: connection_init, subscribe, next messages by operation id."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self._held: dict[str, list[dict[str, Any]]] = {}  # messages of other operations, read while waiting

    @classmethod
    async def open(
        cls, url: str, payload: Mapping[str, str] | None = None, headers: Mapping[str, str] | None = None
    ) -> GraphQLWs:
        ws = await connect(url, subprotocols=[PROTOCOL], additional_headers=dict(headers or {}))  # type: ignore[list-item]
        client = cls(ws)
        await client.send({"type": "connection_init", "payload": dict(AUTH if payload is None else payload)})
        return client

    async def acknowledged(self) -> GraphQLWs:
        message = await self.receive()
        assert message["type"] == "connection_ack", message
        return self

    async def send(self, message: Mapping[str, Any]) -> None:
        await self.ws.send(orjson.dumps(message).decode())

    async def receive(self, timeout: float = 5.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            frame = await self.ws.recv()
        assert isinstance(frame, str), "graphql-transport-ws messages are text frames"
        message: dict[str, Any] = orjson.loads(frame)
        return message

    async def subscribe(self, op_id: str, query: str, variables: Mapping[str, Any] | None = None) -> None:
        await self.send({"id": op_id, "type": "subscribe", "payload": {"query": query, "variables": variables or {}}})

    async def next_payload(self, op_id: str, timeout: float = 5.0) -> dict[str, Any]:
        """The payload of the next `next` message of `op_id` (other operations' messages are skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            held = self._held.get(op_id)
            if held:
                message = held.pop(0)
            else:
                message = await self.receive(max(0.01, deadline - time.monotonic()))
                if message.get("id") != op_id:
                    self._held.setdefault(str(message.get("id")), []).append(message)
                    continue
            assert message["type"] == "next", message
            payload: dict[str, Any] = message["payload"]
            return payload

    async def close(self) -> None:
        await self.ws.close()


@contextlib.asynccontextmanager
async def ws_client(
    url: str, payload: Mapping[str, str] | None = None, headers: Mapping[str, str] | None = None
) -> AsyncIterator[GraphQLWs]:
    client = await GraphQLWs.open(url, payload, headers)
    try:
        yield await client.acknowledged()
    finally:
        await client.close()
