"""A client that leaves mid-operation: logged once at debug, nothing left behind, no traceback.

What happened before: an operation that finished after its WebSocket connection had ended failed its send with
Starlette's "Cannot call send once a close message has been sent", which Strawberry logged as an error with the
chained traceback; and a loader's read still in flight when the operation was cancelled opened a connection after
the operation's snapshot had been closed, which the garbage collector then reclaimed with an error.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from starlette.types import Message
from starlette.websockets import WebSocket, WebSocketState
from strawberry.http.exceptions import WebSocketDisconnected
from structlog.testing import capture_logs
from websockets.asyncio.client import connect

from app.graphql.endpoint import GraphQLEndpoint
from app.graphql.websocket import WebSocketAdapter, client_went_away
from app.reads.session import ReadSession
from infra.settings import Settings
from tests.app.graphql.conftest import AUTH
from tests.app.live.conftest import PROTOCOL, live_api, live_settings


@pytest.fixture
def settings(database_url: str, redis_url: str, prefix: str) -> Settings:
    return live_settings(database_url, redis_url, prefix)


async def _send_after_close() -> WebSocketDisconnected:
    """The error an operation gets when it sends on a connection that has ended, from a real Starlette WebSocket."""

    async def receive() -> Message:
        return {"type": "websocket.disconnect", "code": 1000}

    async def send(message: Message) -> None:
        raise AssertionError("nothing is sent on an ended connection")

    websocket = WebSocket({"type": "websocket", "path": "/graphql", "headers": []}, receive, send)
    websocket.application_state = WebSocketState.DISCONNECTED
    adapter = WebSocketAdapter(None, websocket, websocket)  # type: ignore[arg-type]
    with pytest.raises(WebSocketDisconnected) as raised:
        await adapter.send_json({"id": "1", "type": "next", "payload": {"data": None}})
    return raised.value


async def test_a_send_after_the_client_left_is_logged_once_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    error = await _send_after_close()
    assert client_went_away(error)
    handler = object.__new__(GraphQLEndpoint.graphql_transport_ws_handler_class)  # only its logging is exercised
    with capture_logs() as logs, caplog.at_level(logging.DEBUG, logger="strawberry"):
        await handler.handle_task_exception(error)
    assert [(entry["log_level"], entry["event"]) for entry in logs] == [
        ("debug", "websocket client disconnected during an operation")
    ]
    assert not caplog.records, "Strawberry's own error log (with the chained traceback) is not reached"


async def test_other_operation_errors_are_still_logged_as_errors(caplog: pytest.LogCaptureFixture) -> None:
    handler = object.__new__(GraphQLEndpoint.graphql_transport_ws_handler_class)
    with caplog.at_level(logging.ERROR, logger="strawberry.ws.task"):
        await handler.handle_task_exception(RuntimeError("a bug"))
    [record] = caplog.records
    assert record.levelno == logging.ERROR and record.exc_info is not None


async def test_a_read_that_outlives_its_session_leaves_no_connection_behind(engine: AsyncEngine) -> None:
    session = ReadSession(engine)
    release = asyncio.Event()

    async def slow(conn: AsyncConnection) -> Any:
        await release.wait()
        return await conn.scalar(text("SELECT 1"))

    in_flight = asyncio.create_task(session.run(slow))  # a loader's batch, in a task of its own
    await asyncio.sleep(0.05)
    closing = asyncio.create_task(session.close())  # the operation ends meanwhile
    await asyncio.sleep(0.05)
    assert not closing.done(), "close waits for the read in flight"
    release.set()
    assert await in_flight == 1
    await closing
    assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]

    late: Callable[[AsyncConnection], Awaitable[Any]] = lambda conn: conn.scalar(text("SELECT 2"))  # noqa: E731
    assert await session.run(late) == 2  # scheduled before the close, run after it
    assert engine.pool.checkedout() == 0, "a read after the close does not open a snapshot nobody closes"  # type: ignore[attr-defined]


WAIT_QUERY = (
    'query { projection { waitFor(topic: "huleedu.els.batch.essays.registered.v1", partition: 0, '
    "offset: 999999, timeoutMs: 60) } }"
)


async def test_clients_leaving_mid_operation_leave_no_error_behind(
    settings: Settings, engine: AsyncEngine, caplog: pytest.LogCaptureFixture
) -> None:
    """Real clients: each starts five operations that finish about when it leaves (closing or dropping the TCP
    connection). Whatever the interleaving, nothing is logged above debug and no connection is left over."""

    async def client(url: str, abort: bool) -> None:
        ws = await connect(url, subprotocols=[PROTOCOL])  # type: ignore[list-item]
        await ws.send(orjson.dumps({"type": "connection_init", "payload": AUTH}).decode())
        await ws.recv()
        for op in range(5):
            await ws.send(orjson.dumps({"id": str(op), "type": "subscribe", "payload": {"query": WAIT_QUERY}}).decode())
        await asyncio.sleep(0.04 + random.random() * 0.05)
        if abort:
            ws.transport.abort()
        else:
            await ws.close()

    with caplog.at_level(logging.WARNING):
        async with live_api(settings, engine) as api:
            for _ in range(3):
                await asyncio.gather(*(client(api.ws_url, i % 2 == 1) for i in range(40)))
            await asyncio.sleep(0.3)
            gc.collect()
    problems = [r for r in caplog.records if r.name.startswith(("strawberry", "sqlalchemy", "uvicorn", "py."))]
    assert not problems, [r.getMessage()[:200] for r in problems]
