"""Slow and greedy clients against the real server: the app `ras serve` runs (`create_app`) under its uvicorn options
(`app.main.server_config`), on a real port, spoken to over raw sockets.

A slowloris client that sends a header line now and then is cut off; a body that does not arrive in time is
answered 408 with the error JSON; a body still trickling in after an early answer is cut off too; one address
cannot hold more than its share of connections. Outcomes only: the deadlines are short so the tests are quick, and
every wait has a hang guard far above them.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import orjson
import pytest
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncEngine

from app.main import create_app, server_config
from infra.http_server import TaskServer, listen
from infra.settings import Settings
from tests.helpers.cache import Delta

API_KEY = "test-internal-key"
HANG_GUARD_SECONDS = 30
DRIBBLE_SECONDS = 0.1
Server = tuple[str, int]


def settings_with(**changes: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": "postgresql+asyncpg://unused@127.0.0.1/unused",
        "environment": "development",
        "internal_api_key": SecretStr(API_KEY),
        "cache_enabled": False,
        "live_updates_enabled": False,
        "host": "127.0.0.1",
        "log_level": "WARNING",
    }
    return Settings(**{**values, **changes})


@contextlib.asynccontextmanager
async def serving(engine: AsyncEngine, settings: Settings) -> AsyncIterator[Server]:
    sock = listen(settings.host, 0, "port")  # any free port
    server = TaskServer(server_config(settings, create_app(settings, engine=engine)))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(HANG_GUARD_SECONDS):
            while not server.started:
                assert not task.done(), "the server did not start"
                await asyncio.sleep(0.02)
        yield settings.host, sock.getsockname()[1]
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, HANG_GUARD_SECONDS)
        sock.close()


@pytest.fixture
async def quick(engine: AsyncEngine) -> AsyncIterator[Server]:
    """Deadlines of one second."""
    settings = settings_with(http_header_timeout_seconds=1.0, http_body_timeout_seconds=1.0)
    async with serving(engine, settings) as server:
        yield server


async def until_closed(server: Server, start: bytes, piece: bytes) -> bytes:
    """Send `start`, then `piece` now and then as a slow client does; everything the server answered before it
    closed the connection. Plain socket calls: a reset that follows the answer (the client was still sending) must
    not hide the answer, as an asyncio stream's would."""
    loop = asyncio.get_running_loop()
    sock = socket.create_connection(server)
    sock.setblocking(False)

    async def dribble() -> None:
        with contextlib.suppress(OSError):
            await loop.sock_sendall(sock, start)
            while True:
                await asyncio.sleep(DRIBBLE_SECONDS)
                await loop.sock_sendall(sock, piece)

    sender = asyncio.create_task(dribble())
    received = bytearray()
    try:
        async with asyncio.timeout(HANG_GUARD_SECONDS):
            while chunk := await _received(loop, sock):
                received += chunk
    finally:
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
        sock.close()
    return bytes(received)


async def _received(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> bytes:
    """The next bytes the server sent; b"" once it closed the connection (a reset after its answer included)."""
    try:
        return await loop.sock_recv(sock, 65_536)
    except ConnectionResetError:
        return b""


def parsed(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode().split("\r\n")
    headers = {name.lower(): value for name, _, value in (line.partition(": ") for line in lines)}
    return int(status_line.split()[1]), headers, body


def request_head(method: str, path: str, **headers: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: ras", *(f"{k.replace('_', '-')}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def healthy(server: Server) -> bool:
    async with httpx.AsyncClient(base_url=f"http://{server[0]}:{server[1]}", timeout=HANG_GUARD_SECONDS) as client:
        try:
            return (await client.get("/healthz")).status_code == 200
        except httpx.TransportError:
            return False


async def test_a_client_sending_its_headers_a_line_at_a_time_is_cut_off(quick: Server) -> None:
    delta = Delta()
    answered = await until_closed(quick, b"GET /healthz HTTP/1.1\r\nHost: ras\r\n", b"X-Slow: 1\r\n")
    assert answered == b"", "closed without an answer: nothing of the request could be answered yet"
    assert delta("ras_http_connections_closed_total", reason="head_timeout") == 1
    assert await healthy(quick), "other clients are served as before"


async def test_a_connection_that_never_sends_a_byte_is_closed(quick: Server) -> None:
    reader, writer = await asyncio.open_connection(*quick)
    try:
        async with asyncio.timeout(HANG_GUARD_SECONDS):
            assert await reader.read() == b""
    finally:
        writer.close()


async def test_a_body_that_does_not_arrive_in_time_is_answered_408(quick: Server) -> None:
    delta = Delta()
    head = request_head(
        "POST",
        "/graphql",
        Content_Type="application/json",
        Content_Length="1000",
        X_Internal_API_Key=API_KEY,
        X_Service_ID="api-gateway-service",
        X_Correlation_ID="slow-body-1",
    )
    status, headers, body = parsed(await until_closed(quick, head + b'{"query": "', b" "))
    assert status == 408 and headers["connection"] == "close"
    assert orjson.loads(body) == {
        "errors": [
            {
                "message": "The request body did not arrive within 1 seconds.",
                "extensions": {"code": "LIMIT_EXCEEDED", "correlationId": "slow-body-1", "limit": 1.0},
            }
        ]
    }
    assert delta("ras_http_connections_closed_total", reason="body_timeout") == 1
    assert await healthy(quick)


async def test_a_body_still_trickling_in_after_an_early_answer_is_cut_off(quick: Server) -> None:
    """Without credentials the request is refused (401) before its body is read; the body must still stop."""
    head = request_head("POST", "/graphql", Content_Type="application/json", Content_Length="60000")
    status, _, _ = parsed(await until_closed(quick, head + b"{", b" "))
    assert status == 401


async def test_one_address_holds_at_most_its_cap_of_connections(engine: AsyncEngine) -> None:
    cap = 3
    settings = settings_with(http_header_timeout_seconds=600.0, http_max_connections_per_ip=cap)
    async with serving(engine, settings) as server:
        delta = Delta()
        held = [await asyncio.open_connection(*server) for _ in range(cap)]
        reader, writer = await asyncio.open_connection(*server)
        async with asyncio.timeout(HANG_GUARD_SECONDS):
            assert await reader.read() == b"", "the connection over the cap is closed at once"
        writer.close()
        assert delta("ras_http_connections_closed_total", reason="per_ip_cap") == 1

        # One of the held connections closes: a new one is served again (once the server has seen it go).
        held.pop()[1].close()
        await until(lambda: healthy(server))
        for _, held_writer in held:
            held_writer.close()


async def until(check: Callable[[], Any]) -> None:
    async with asyncio.timeout(HANG_GUARD_SECONDS):
        while not await check():
            await asyncio.sleep(0.05)
