"""Subscriptions over graphql-transport-ws against a real server: pushes after commits, scoping, auth, slow clients."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from websockets.exceptions import ConnectionClosed, InvalidStatus

from app.auth import Caller
from app.graphql.schema import build_schema
from app.graphql.subscriptions import LiveContext
from app.limits import ApiLimits
from app.live import EventHub
from consumer.notify import Publisher
from infra.settings import Settings
from tests.app.graphql.conftest import API_KEY, AUTH, SERVICE_ID
from tests.app.live.conftest import BATCH_PROGRESS, GraphQLWs, live_api, live_settings, ws_client
from tests.helpers import figures
from tests.helpers.events import EPOCH, project, registered, slot_assigned

USER_BATCHES = "subscription Mine($user: String) { userBatches(userId: $user) { totalCount nodes { id } } }"
# How long a test waits for a push that must come: a hang guard (a push takes milliseconds), never what is asserted.
PUSHED_WITHIN = 30.0


def _ids(n: int) -> list[str]:
    return [str(uuid.uuid4()) for _ in range(n)]


async def _commit(engine: AsyncEngine, publisher: Publisher, *messages: Any) -> None:
    """Apply as one consumer transaction, then publish as the consumer does after its commit."""
    await publisher.publish(await project(engine, list(messages)))


@pytest.fixture
def settings(database_url: str, redis_url: str, prefix: str) -> Settings:
    return live_settings(database_url, redis_url, prefix)


@pytest.fixture
async def publisher(settings: Settings, engine: AsyncEngine) -> Any:
    publisher = Publisher.from_settings(settings, engine)
    yield publisher
    await publisher.aclose()


async def test_a_committed_change_is_pushed_with_what_a_query_would_return(
    settings: Settings, engine: AsyncEngine, publisher: Publisher
) -> None:
    batch, essays = str(uuid.uuid4()), _ids(3)
    await _commit(engine, publisher, registered("gen2", batch, "teacher-a", essays, EPOCH))
    async with live_api(settings, engine) as api, ws_client(api.ws_url, {**AUTH, "X-User-ID": "teacher-a"}) as ws:
        await ws.subscribe("1", BATCH_PROGRESS, {"id": batch})
        first = await ws.next_payload("1")
        assert first["data"]["batchProgress"]["essays"]["totalCount"] == 0  # the current state, at once

        latencies = []
        for i, essay in enumerate(essays, start=1):
            started = time.perf_counter()
            await _commit(engine, publisher, slot_assigned("gen2", batch, essay, EPOCH))
            update = await ws.next_payload("1", timeout=PUSHED_WITHIN)
            latencies.append(time.perf_counter() - started)
            assert update["data"]["batchProgress"]["essays"]["totalCount"] == i
        figures.report("in-process push", commit_to_websocket_ms=[round(s * 1000, 1) for s in latencies])


async def test_another_users_batch_stays_null_and_silent(
    settings: Settings, engine: AsyncEngine, publisher: Publisher
) -> None:
    theirs, essays = str(uuid.uuid4()), _ids(2)
    await _commit(engine, publisher, registered("gen2", theirs, "teacher-b", essays, EPOCH))
    async with live_api(settings, engine) as api, ws_client(api.ws_url, {**AUTH, "X-User-ID": "teacher-a"}) as ws:
        await ws.subscribe("spy", BATCH_PROGRESS, {"id": theirs})
        assert (await ws.next_payload("spy"))["data"] == {"batchProgress": None}
        await ws.subscribe("list", USER_BATCHES, {"user": "teacher-b"})
        refused = await ws.next_payload("list")
        assert refused["data"] is None and refused["errors"][0]["extensions"]["code"] == "FORBIDDEN"

        await _commit(engine, publisher, slot_assigned("gen2", theirs, essays[0], EPOCH))
        with pytest.raises(TimeoutError):  # not even the fact that it changed is revealed
            await ws.next_payload("spy", timeout=0.5)

    # The owner, and a service acting for no user, do see it change.
    async with live_api(settings, engine) as api, ws_client(api.ws_url) as ws:
        await ws.subscribe("admin", BATCH_PROGRESS, {"id": theirs})
        assert (await ws.next_payload("admin"))["data"]["batchProgress"]["userId"] == "teacher-b"
        await _commit(engine, publisher, slot_assigned("gen2", theirs, essays[1], EPOCH))
        assert (await ws.next_payload("admin", timeout=PUSHED_WITHIN))["data"]["batchProgress"]["essays"][
            "totalCount"
        ] == 2


async def test_a_batch_not_registered_yet_appears_when_it_registers(
    settings: Settings, engine: AsyncEngine, publisher: Publisher
) -> None:
    batch = str(uuid.uuid4())
    async with live_api(settings, engine) as api, ws_client(api.ws_url, {**AUTH, "X-User-ID": "teacher-a"}) as ws:
        await ws.subscribe("1", BATCH_PROGRESS, {"id": batch})
        await ws.subscribe("2", USER_BATCHES)  # defaults to the connection's user
        assert (await ws.next_payload("1"))["data"] == {"batchProgress": None}
        assert (await ws.next_payload("2"))["data"]["userBatches"]["totalCount"] == 0
        await _commit(engine, publisher, registered("gen2", batch, "teacher-a", _ids(1), EPOCH))
        assert (await ws.next_payload("1", timeout=PUSHED_WITHIN))["data"]["batchProgress"]["id"] == batch
        assert (await ws.next_payload("2", timeout=PUSHED_WITHIN))["data"]["userBatches"]["nodes"] == [{"id": batch}]


async def _close_code(url: str, payload: dict[str, str], headers: dict[str, str] | None = None) -> tuple[int, str]:
    client = await GraphQLWs.open(url, payload, headers)
    try:
        with pytest.raises(ConnectionClosed) as closed:
            await client.receive()
        assert closed.value.rcvd is not None
        return closed.value.rcvd.code, closed.value.rcvd.reason
    finally:
        await client.close()


async def test_connection_init_is_authenticated_like_a_request(settings: Settings, engine: AsyncEngine) -> None:
    async with live_api(settings, engine) as api:
        code, reason = await _close_code(api.ws_url, {})
        assert code == 4401 and "X-Internal-API-Key" in reason
        assert (await _close_code(api.ws_url, {**AUTH, "X-Internal-API-Key": "wrong"}))[0] == 4403
        assert (await _close_code(api.ws_url, {**AUTH, "X-User-ID": " "}))[0] == 4403
        # A gateway's headers on the upgrade request count; a payload may not switch the user they name.
        gateway = {**AUTH, "X-User-ID": "teacher-a"}
        assert (await _close_code(api.ws_url, {"X-User-ID": "teacher-b"}, gateway))[0] == 4403
        async with ws_client(api.ws_url, {}, gateway) as ws:
            await ws.subscribe("1", USER_BATCHES)
            assert (await ws.next_payload("1"))["data"]["userBatches"]["totalCount"] == 0
        # Header names are matched case-insensitively in the payload too.
        lower = {"x-internal-api-key": API_KEY, "x-service-id": SERVICE_ID}
        async with ws_client(api.ws_url, lower) as ws:
            await ws.subscribe("1", USER_BATCHES, {"user": "teacher-a"})
            assert "errors" not in await ws.next_payload("1")


async def test_without_live_updates_the_handshake_is_refused(
    database_url: str, redis_url: str, prefix: str, engine: AsyncEngine
) -> None:
    import uvicorn

    from app.main import create_app
    from devstack.process import free_port
    from tests.app.live.conftest import _Server

    settings = live_settings(database_url, redis_url, prefix, live_updates_enabled=False)
    port = free_port()
    server = _Server(uvicorn.Config(create_app(settings, engine), host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            await asyncio.sleep(0.02)
        with pytest.raises(InvalidStatus) as refused:
            await GraphQLWs.open(f"ws://127.0.0.1:{port}/graphql")
        assert refused.value.response.status_code == 403
    finally:
        server.should_exit = True
        await task


async def test_a_subscriber_that_stops_reading_is_dropped_with_bounded_memory(
    settings: Settings, engine: AsyncEngine, publisher: Publisher
) -> None:
    """The subscription's generator is not pulled (as when the socket's send blocks): its queue fills, then it is
    dropped, holding nothing; when finally read, it ends with SUBSCRIBER_TOO_SLOW."""
    batch, essays = str(uuid.uuid4()), _ids(40)
    await _commit(engine, publisher, registered("gen2", batch, "teacher-a", essays, EPOCH))
    hub = EventHub.from_settings(settings)
    await hub.start()
    try:
        async with asyncio.timeout(5):
            await hub.listening.wait()
        schema = build_schema(ApiLimits())
        stream = await schema.subscribe(BATCH_PROGRESS, {"id": batch}, context_value=_connection(settings, engine, hub))
        first = await anext(stream)
        assert first.data is not None and first.data["batchProgress"]["essays"]["totalCount"] == 0
        assert hub.subscriber_count() == 1

        for essay in essays:  # 40 commits, 40 notices; the subscriber takes none of them
            await _commit(engine, publisher, slot_assigned("gen2", batch, essay, EPOCH))
        async with asyncio.timeout(5):
            while hub.subscriber_count():
                await asyncio.sleep(0.02)

        last = await anext(stream)
        assert last.data is None and last.errors
        assert last.errors[0].extensions is not None
        assert last.errors[0].extensions["code"] == "SUBSCRIBER_TOO_SLOW"
        assert "too slow" in last.errors[0].message
        with pytest.raises(StopAsyncIteration):
            await anext(stream)
    finally:
        await hub.aclose()


def _connection(settings: Settings, engine: AsyncEngine, hub: EventHub) -> LiveContext:
    caller, limits = Caller(SERVICE_ID, None), ApiLimits()
    return LiveContext.open(engine, caller, "test", limits, None, None, hub=hub, settings=settings, authenticated=True)


async def test_a_subscription_sent_over_http_is_refused(engine: AsyncEngine) -> None:
    from tests.app.graphql.conftest import api_for

    api = api_for(engine)
    async with api.client:
        errors = await api.errors('subscription { batchProgress(batchId: "b") { id } }')
    assert errors[0]["extensions"]["code"] == "BAD_USER_INPUT" and "WebSocket" in errors[0]["message"]
