"""The cache in front of the real GraphQL endpoint, schema, loaders and PostgreSQL.

The app is `create_app` with a `QueryCache`, as `ras serve` builds it. Events are applied through the real projection
and evicted with the `Applied` it returns, exactly as the consumer's runner does after its commit.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette

from app.cache import Executed, QueryCache, Served
from app.main import create_app
from consumer.eviction import Evictor
from infra import cache_keys as ck
from infra.settings import Settings
from tests.helpers.cache import cache_settings, pair
from tests.helpers.events import EPOCH, Message, project, registered, slot_assigned, spellchecked

API_KEY = "test-internal-key"
AUTH = {"X-Internal-API-Key": API_KEY, "X-Service-ID": "api-gateway-service"}


def app_for(engine: AsyncEngine, settings: Settings, cache: QueryCache) -> Starlette:
    return create_app(settings, engine=engine, cache=cache)


class Client:
    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http

    async def query(self, query: str, variables: Mapping[str, Any] | None = None, user: str | None = None) -> Any:
        headers = dict(AUTH) | ({"X-User-ID": user} if user is not None else {})
        response = await self.http.post("/graphql", json={"query": query, "variables": variables}, headers=headers)
        assert response.status_code == 200, response.text
        return response.json()


@dataclass
class Stack:
    api: Client
    cache: QueryCache
    evictor: Evictor


@pytest.fixture(params=["standalone", "cluster"])
async def stack(engine: AsyncEngine, redis_url: str, request: pytest.FixtureRequest) -> AsyncIterator[Stack]:
    """The endpoint over a single Redis and over a three-node Redis Cluster: every test here, the races too, runs on
    both."""
    if request.param == "cluster":
        url = request.getfixturevalue("redis_cluster_url")
        settings = cache_settings(url, internal_api_key=SecretStr(API_KEY), redis_cluster=True)
    else:
        settings = cache_settings(redis_url, internal_api_key=SecretStr(API_KEY))
    cache, evictor = pair(settings)
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app_for(engine, settings, cache)), base_url="http://t")
    yield Stack(Client(http), cache, evictor)
    await http.aclose()
    await cache.aclose()
    await evictor.aclose()


def new_batch(user: str, essays: int = 2) -> tuple[str, list[str], list[Message]]:
    batch_id, essay_ids = str(uuid.uuid4()), [str(uuid.uuid4()) for _ in range(essays)]
    messages = [registered("gen2", batch_id, user, essay_ids, EPOCH)]
    messages += [slot_assigned("gen2", batch_id, e, EPOCH + timedelta(seconds=1)) for e in essay_ids]
    return batch_id, essay_ids, messages


async def commit_and_evict(engine: AsyncEngine, evictor: Evictor, messages: list[Message]) -> None:
    """What the consumer does per transaction: commit the projection, then evict what it changed."""
    await evictor.evict(await project(engine, messages))


BATCH = "query Batch($id: ID!) { batch(id: $id) { id status lastUpdated processingStartedAt } }"
BATCHES = "{ batches { totalCount nodes { id } } }"


def cache_status(body: Any) -> str:
    return str(body["extensions"]["cache"]["status"])


async def test_hit_after_miss_and_an_event_evicts_only_its_batch(engine: AsyncEngine, stack: Stack) -> None:
    api, evictor = stack.api, stack.evictor
    x, x_essays, x_messages = new_batch("alice")
    y, _, y_messages = new_batch("bob")
    await commit_and_evict(engine, evictor, x_messages + y_messages)

    first = await api.query(BATCH, {"id": x})
    assert cache_status(first) == "miss" and first["extensions"]["cache"]["ageSeconds"] is None
    second = await api.query(BATCH, {"id": x})
    assert cache_status(second) == "hit" and second["extensions"]["cache"]["ageSeconds"] >= 0
    assert second["data"] == first["data"]
    assert cache_status(await api.query(BATCH, {"id": y})) == "miss"

    spelled = spellchecked("gen2", x, x_essays[0], True, 2, EPOCH + timedelta(seconds=100))
    await commit_and_evict(engine, evictor, [spelled])

    after = await api.query(BATCH, {"id": x})
    assert cache_status(after) == "miss"
    assert first["data"]["batch"]["processingStartedAt"] is None
    assert after["data"]["batch"]["processingStartedAt"] is not None, "the next query reflects the event"
    assert cache_status(await api.query(BATCH, {"id": y})) == "hit"


async def test_a_users_list_picks_up_a_new_batch(engine: AsyncEngine, stack: Stack) -> None:
    api, evictor = stack.api, stack.evictor
    first, _, messages = new_batch("alice")
    await commit_and_evict(engine, evictor, messages)
    before = await api.query(BATCHES, user="alice")
    assert before["data"]["batches"]["totalCount"] == 1
    assert cache_status(await api.query(BATCHES, user="alice")) == "hit"
    assert cache_status(await api.query(BATCHES, user="bob")) == "miss"

    second, _, messages = new_batch("alice")
    await commit_and_evict(engine, evictor, messages)

    after = await api.query(BATCHES, user="alice")
    assert cache_status(after) == "miss"
    assert {n["id"] for n in after["data"]["batches"]["nodes"]} == {first, second}
    assert cache_status(await api.query(BATCHES, user="bob")) == "hit", "bob's list did not change"


async def test_scoped_entries_never_leak_across_users(engine: AsyncEngine, stack: Stack) -> None:
    api, evictor = stack.api, stack.evictor
    batch_id, _, messages = new_batch("alice")
    await commit_and_evict(engine, evictor, messages)
    owner = await api.query(BATCH, {"id": batch_id}, user="alice")
    assert owner["data"]["batch"]["id"] == batch_id
    other = await api.query(BATCH, {"id": batch_id}, user="mallory")
    assert (cache_status(other), other["data"]["batch"]) == ("miss", None)
    unscoped = await api.query(BATCH, {"id": batch_id})
    assert (cache_status(unscoped), unscoped["data"]["batch"]["id"]) == ("miss", batch_id)
    star = await api.query(BATCH, {"id": batch_id}, user=ck.ALL_USERS)
    assert (cache_status(star), star["data"]["batch"]) == ("miss", None)
    assert cache_status(await api.query(BATCH, {"id": batch_id}, user="mallory")) == "hit"


ENTITIES = """query($representations: [_Any!]!) {
  _entities(representations: $representations) {
    ... on Batch { id processingStartedAt }
    ... on Essay { id spellcheck { status } }
  }
}"""


async def test_an_entities_answer_is_scoped_per_user_and_evicted_by_its_batches_events(
    engine: AsyncEngine, stack: Stack
) -> None:
    api, evictor = stack.api, stack.evictor
    x, x_essays, x_messages = new_batch("alice")
    y, _, y_messages = new_batch("bob")
    await commit_and_evict(engine, evictor, x_messages + y_messages)
    asked = {"representations": [{"__typename": "Batch", "id": x}, {"__typename": "Essay", "id": x_essays[0]}]}
    other = {"representations": [{"__typename": "Batch", "id": y}]}

    first = await api.query(ENTITIES, asked, user="alice")
    assert cache_status(first) == "miss"
    before = [{"id": x, "processingStartedAt": None}, {"id": x_essays[0], "spellcheck": None}]
    assert first["data"]["_entities"] == before
    assert cache_status(await api.query(ENTITIES, asked, user="alice")) == "hit"
    foreign = await api.query(ENTITIES, asked, user="mallory")
    assert (cache_status(foreign), foreign["data"]["_entities"]) == ("miss", [None, None])
    assert cache_status(await api.query(ENTITIES, other, user="bob")) == "miss"

    spelled = spellchecked("gen2", x, x_essays[0], True, 2, EPOCH + timedelta(seconds=100))
    await commit_and_evict(engine, evictor, [spelled])

    after = await api.query(ENTITIES, asked, user="alice")
    assert cache_status(after) == "miss"
    batch, essay = after["data"]["_entities"]
    assert batch["processingStartedAt"] is not None and essay["spellcheck"] is not None, "the event shows"
    assert cache_status(await api.query(ENTITIES, other, user="bob")) == "hit", "bob's batch did not change"


async def test_errors_and_projection_reads_are_never_stored(engine: AsyncEngine, stack: Stack) -> None:
    api = stack.api
    for query in ("{ batch(id: 1) { nope } }", "{ projection { totalLag } }"):
        assert cache_status(await api.query(query)) == "miss"
        assert cache_status(await api.query(query)) == "miss"
    unauthenticated = await api.http.post("/graphql", json={"query": BATCHES})
    assert unauthenticated.status_code == 401


async def test_the_forced_race_stores_nothing_stale(
    engine: AsyncEngine, stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reader misses and reads; the event commits and is evicted; then the reader would store: refused."""
    api, evictor = stack.api, stack.evictor
    batch_id, essays, messages = new_batch("alice")
    await commit_and_evict(engine, evictor, messages)
    real_fetch = stack.cache.fetch

    async def fetch_with_an_event_in_the_middle(key: str, execute: Callable[[], Awaitable[Executed]]) -> Served:
        async def racing() -> Executed:
            executed = await execute()
            spelled = spellchecked("gen2", batch_id, essays[0], True, 2, EPOCH + timedelta(seconds=100))
            await commit_and_evict(engine, evictor, [spelled])
            return executed

        return await real_fetch(key, racing)

    monkeypatch.setattr(stack.cache, "fetch", fetch_with_an_event_in_the_middle)
    raced = await api.query(BATCH, {"id": batch_id})
    monkeypatch.undo()
    assert raced["data"]["batch"]["processingStartedAt"] is None
    fresh = await api.query(BATCH, {"id": batch_id})
    assert cache_status(fresh) == "miss", "the raced result was not stored"
    assert fresh["data"]["batch"]["processingStartedAt"] is not None
