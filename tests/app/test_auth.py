"""X-User-ID parsing (SECURITY.md, finding 8), against a real `ras serve`: credential headers are read exactly as sent,
each at most once.

The attacks: a gateway that appends its `X-User-ID` instead of replacing the client's let the client's (the first)
win, so a client could read any teacher's batches; `teacher-3f9a\\xa0` was stripped to `teacher-3f9a`. The same for
X-Service-ID and X-Internal-API-Key, on GraphQL, REST and a WebSocket's connection_init.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import orjson
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from app.auth import USER_ID_MAX_LENGTH
from tests.app.graphql.conftest import API_KEY, AUTH, FIXTURE_BATCH, FIXTURE_USER, SERVICE_ID
from tests.app.live.conftest import PROTOCOL
from tests.helpers.events import fixture_messages, project
from tests.helpers.serve import ras_serve

BATCH = "query($id: ID!) { batch(id: $id) { id userId } }"
Pairs = list[tuple[bytes, bytes]]


def credentials(*extra: tuple[str, str | bytes]) -> Pairs:
    """The service's credentials plus `extra`, as raw pairs (a name may repeat; values go as they are)."""
    pairs = [*AUTH.items(), *extra]
    return [(name.encode(), value if isinstance(value, bytes) else value.encode()) for name, value in pairs]


@pytest.fixture
async def server(
    database_url: str, engine: AsyncEngine, redis_url: str, tmp_path: Path
) -> AsyncIterator[httpx.AsyncClient]:
    """`ras serve` with live updates (for WebSocket connections) over the gen 2 fixtures, of FIXTURE_USER."""
    await project(engine, fixture_messages("gen2"))
    async with (
        ras_serve(
            database_url,
            tmp_path / "serve.log",
            key=API_KEY,
            service=SERVICE_ID,
            RAS_REDIS_URL=redis_url,
            RAS_CACHE_PREFIX=f"auth-{uuid.uuid4().hex[:10]}",
            RAS_LIVE_UPDATES_ENABLED="true",
        ) as base_url,
        httpx.AsyncClient(base_url=base_url, timeout=30) as client,
    ):
        yield client


async def graphql(client: httpx.AsyncClient, headers: Pairs) -> httpx.Response:
    return await client.post("/graphql", json={"query": BATCH, "variables": {"id": FIXTURE_BATCH}}, headers=headers)


async def rest(client: httpx.AsyncClient, headers: Pairs) -> httpx.Response:
    return await client.get(f"/internal/v1/batches/{FIXTURE_BATCH}/status", headers=headers)


SPOOFS = {
    # The client's value first, the gateway's appended: before, the first was read (the victim's batch was served).
    "appended X-User-ID": credentials(("X-User-ID", FIXTURE_USER), ("X-User-ID", "gateway-user")),
    "X-User-ID in two cases": credentials(("X-User-ID", FIXTURE_USER), ("x-user-id", "gateway-user")),
    "repeated X-Service-ID": credentials(("X-Service-ID", "admin-dashboard-service")),
    "repeated X-Internal-API-Key": credentials(("X-Internal-API-Key", "another")),
    # Before, .strip() made these the owner's id.
    "no-break space": credentials(("X-User-ID", f"{FIXTURE_USER}\u00a0".encode("latin-1"))),
    "tab inside": credentials(("X-User-ID", f"{FIXTURE_USER}\tx")),
    "folded list": credentials(("X-User-ID", f"{FIXTURE_USER},gateway-user")),
    "too long": credentials(("X-User-ID", "u" * (USER_ID_MAX_LENGTH + 1))),
}


async def test_the_exact_owner_reads_and_a_stranger_does_not(server: httpx.AsyncClient) -> None:
    owner = await graphql(server, credentials(("X-User-ID", FIXTURE_USER)))
    assert owner.json()["data"]["batch"] == {"id": FIXTURE_BATCH, "userId": FIXTURE_USER}
    stranger = await graphql(server, credentials(("X-User-ID", "gateway-user")))
    assert stranger.json()["data"]["batch"] is None
    assert (await rest(server, credentials(("X-User-ID", FIXTURE_USER)))).status_code == 200


async def test_spoofed_credential_headers_are_refused_on_graphql_and_rest(server: httpx.AsyncClient) -> None:
    for spoof, headers in SPOOFS.items():
        answer = await graphql(server, headers)
        assert answer.status_code == 400, (spoof, answer.text)
        assert "data" not in answer.json()
        (error,) = answer.json()["errors"]
        assert error["extensions"]["code"] == "BAD_USER_INPUT"
        sent = {name.decode().lower() for name, _ in headers}
        named = sent & {"x-user-id", "x-service-id", "x-internal-api-key"}
        assert any(header in error["message"].lower() for header in named), (spoof, error["message"])

        refused = await rest(server, headers)
        assert refused.status_code == 400, (spoof, refused.text)
        body = refused.json()
        assert (body["error"], body["error_code"]) == ("Invalid parameters", "INVALID_PARAMETER")
        assert body["message"] == error["message"]


async def close_code(
    ws_url: str, payload: dict[str, object], headers: list[tuple[str, str]] | None = None
) -> tuple[int, str]:
    """The code and reason a WebSocket connection is closed with after `connection_init` with `payload`; `headers`
    go on the upgrade request (a name may repeat)."""
    async with connect(ws_url, subprotocols=[PROTOCOL], additional_headers=headers or []) as ws:  # type: ignore[list-item]
        await ws.send(orjson.dumps({"type": "connection_init", "payload": payload}).decode())
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code, closed.value.rcvd.reason


async def test_connection_init_takes_each_credential_once_and_exactly(server: httpx.AsyncClient) -> None:
    ws_url = str(server.base_url).replace("http://", "ws://") + "/graphql"
    refused: list[tuple[dict[str, object], list[tuple[str, str]] | None]] = [
        ({**AUTH, "X-User-ID": FIXTURE_USER, "x-user-id": "gateway-user"}, None),
        ({**AUTH, "X-User-ID": f"{FIXTURE_USER}\u00a0"}, None),
        ({**AUTH, "X-User-ID": 7}, None),
        ({**AUTH}, [("X-User-ID", FIXTURE_USER), ("X-User-ID", "gateway-user")]),
    ]
    for payload, headers in refused:
        code, reason = await close_code(ws_url, payload, headers)
        assert code == 4400 and "X-User-ID" in reason, (payload, code, reason)
    # The exact id is acknowledged.
    async with connect(ws_url, subprotocols=[PROTOCOL]) as ws:  # type: ignore[list-item]
        init = {"type": "connection_init", "payload": {**AUTH, "X-User-ID": FIXTURE_USER}}
        await ws.send(orjson.dumps(init).decode())
        assert orjson.loads(await ws.recv())["type"] == "connection_ack"
