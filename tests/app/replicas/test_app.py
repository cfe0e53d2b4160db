"""The real application (create_app) over a primary and its streaming replica, with the result cache: a GraphQL
query and a REST route read the replica, carry its replay position to the cache's store (the forced race of
test_guard.py, through the endpoints), and an `@consistent` query is served by the primary while the replica has not
applied the awaited position."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import text

from app.cache import QueryCache
from app.main import create_app
from app.replicas import Replicas
from consumer.eviction import Evictor
from infra import cache_keys as ck
from tests.app.graphql.conftest import AUTH, FIXTURE_BATCH, settings_for
from tests.app.replicas.conftest import Pair
from tests.helpers.cache import Delta, cache_settings
from tests.helpers.events import EPOCH, fixture_messages, project, spellchecked

ESSAY = "171b04c1-1125-5665-b999-10266c83625c"
STATUS = f"/internal/v1/batches/{FIXTURE_BATCH}/status"
QUERY = "query($id: ID!) { batch(id: $id) { essays(first: 50) { edges { node { id spellcheck { status } } } } } }"
# The position the change below is recorded at, for `@consistent` (a topic of its own: the projection's own
# positions are numbered per call of `project`).
CONSISTENT = (
    'query($id: ID!) @consistent(topic: "acks", partition: 0, offset: 9, timeoutMs: 0) '
    "{ batch(id: $id) { essays(first: 50) { edges { node { id spellcheck { status } } } } } }"
)


@dataclass
class Stack:
    client: httpx.AsyncClient
    evictor: Evictor

    async def graphql(self, query: str = QUERY) -> tuple[str, dict[str, object]]:
        response = await self.client.post(
            "/graphql", json={"query": query, "variables": {"id": FIXTURE_BATCH}}, headers=AUTH
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert "errors" not in body, body["errors"]
        return body["extensions"]["cache"]["status"], body["data"]

    async def rest(self) -> tuple[str, object]:
        response = await self.client.get(STATUS, headers=AUTH)
        assert response.status_code == 200, response.text
        return response.headers["X-Cache"], response.json()


def spellcheck_of(data: dict[str, object]) -> object:
    """The changed essay's spellcheck (null before the change)."""
    edges = data["batch"]["essays"]["edges"]  # type: ignore[index]
    return next(e["node"]["spellcheck"] for e in edges if e["node"]["id"] == ESSAY)


@pytest.fixture
async def stack(pair: Pair, redis_url: str) -> AsyncIterator[Stack]:
    base = settings_for()
    settings = cache_settings(
        redis_url, internal_api_key=base.internal_api_key, allowed_service_ids=base.allowed_service_ids
    )
    await project(pair.primary, fixture_messages("gen2"))
    await pair.caught_up()
    cache = QueryCache(ck.connect(settings), settings)
    evictor = Evictor(ck.connect(settings), settings, wal_position=pair.wal_position)
    await evictor.bump_epoch()  # as the consumer does at start
    replicas = Replicas([pair.replica_url], pool_size=2)
    app = create_app(settings, pair.primary, cache=cache, replicas=replicas)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ras.test") as client:
        yield Stack(client, evictor)
    await cache.aclose()
    await evictor.aclose()
    await replicas.aclose()


async def _change(pair: Pair, evictor: Evictor) -> None:
    """The consumer's commit of a spellcheck result, its eviction, then an acknowledged position at offset 9."""
    later = EPOCH + timedelta(days=1)
    await evictor.evict(await project(pair.primary, [spellchecked("gen2", FIXTURE_BATCH, ESSAY, True, 9, later)]))
    async with pair.primary.begin() as conn:
        acknowledged = "INSERT INTO consumer_positions (topic, partition, next_offset) VALUES ('acks', 0, 10)"
        await conn.execute(text(acknowledged))


async def test_graphql_and_rest_answers_read_on_a_lagging_replica_are_not_stored(pair: Pair, stack: Stack) -> None:
    before_graphql, before_rest = await stack.graphql(), await stack.rest()
    assert before_graphql[0] == "miss" and (await stack.graphql())[0] == "hit"
    assert before_rest[0] == "miss" and (await stack.rest())[0] == "hit"
    async with pair.paused():
        await _change(pair, stack.evictor)
        lagging_graphql, lagging_rest = await stack.graphql(), await stack.rest()
        assert lagging_graphql == ("miss", before_graphql[1]), "read on the replica, which has not replayed it"
        assert lagging_rest == ("miss", before_rest[1])
    await pair.caught_up()
    status, data = await stack.graphql()
    assert status == "miss" and spellcheck_of(data) != spellcheck_of(before_graphql[1])
    rest_status, document = await stack.rest()
    assert rest_status == "miss" and document != before_rest[1]


async def test_a_consistent_query_is_served_by_the_primary_while_the_replica_lags(pair: Pair, stack: Stack) -> None:
    _, before = await stack.graphql()
    counted = Delta()
    async with pair.paused():
        await _change(pair, stack.evictor)
        _, lagging = await stack.graphql()
        _, consistent = await stack.graphql(CONSISTENT)
    assert spellcheck_of(lagging) == spellcheck_of(before)
    assert spellcheck_of(consistent) != spellcheck_of(before), "the awaited position's state, from the primary"
    assert counted("ras_replica_fallbacks_total", reason="behind") == 1
    await pair.caught_up()
    _, served = await stack.graphql(CONSISTENT)
    assert spellcheck_of(served) == spellcheck_of(consistent)
    assert counted("ras_replica_fallbacks_total", reason="behind") == 1, "the replica has applied it now"
