"""The REST shim through the real result cache (Redis) and the consumer's Evictor, against PostgreSQL.

The cached path and the uncached path (create_app, no cache) return identical bytes; events evict exactly the
batches and user lists they changed; errors and other users' views are never served from the cache.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from consumer.eviction import Evictor
from tests.app.graphql.conftest import AUTH, FIXTURE_BATCH, FIXTURE_USER, settings_for
from tests.app.rest.conftest import CachedStack, Rest, cached_app, client_for
from tests.helpers.cache import cache_settings, pair
from tests.helpers.events import EPOCH, Message, fixture_messages, project, registered, slot_assigned, spellchecked

STATUS = f"/batches/{FIXTURE_BATCH}/status"
LIST = f"/batches/user/{FIXTURE_USER}"


async def commit_and_evict(engine: AsyncEngine, evictor: Evictor, messages: list[Message]) -> None:
    """What the consumer does per transaction: commit the projection, then evict what it changed."""
    await evictor.evict(await project(engine, messages))


@pytest.mark.parametrize("gen", ["gen1", "gen2"])
@pytest.mark.parametrize(
    ("path", "params"),
    [(STATUS, {}), (LIST, {}), (LIST, {"limit": "1", "status": "completed_with_failures"})],
)
async def test_cached_and_uncached_paths_return_identical_bytes(
    engine: AsyncEngine, api: Rest, cached: CachedStack, gen: str, path: str, params: dict[str, str]
) -> None:
    await commit_and_evict(engine, cached.evictor, fixture_messages(gen))
    uncached = await api.get(path, params=params)
    miss = await cached.api.get(path, params=params)
    hit = await cached.api.get(path, params=params)
    assert (uncached.headers["X-Cache"], miss.headers["X-Cache"], hit.headers["X-Cache"]) == ("bypass", "miss", "hit")
    assert uncached.status_code == miss.status_code == hit.status_code == 200
    assert uncached.content == miss.content == hit.content
    assert uncached.headers["ETag"] == miss.headers["ETag"] == hit.headers["ETag"]
    # A hit answers If-None-Match like any other response.
    not_modified = await cached.api.get(path, params=params, headers={**AUTH, "If-None-Match": hit.headers["ETag"]})
    assert not_modified.status_code == 304 and not_modified.content == b""


async def test_an_event_evicts_its_batch_and_its_owners_list_only(engine: AsyncEngine, cached: CachedStack) -> None:
    api, evictor = cached.api, cached.evictor
    await commit_and_evict(engine, evictor, fixture_messages("gen2"))
    other = [registered("gen2", "b-other", "bob", ["o1"], EPOCH), slot_assigned("gen2", "b-other", "o1", EPOCH)]
    await commit_and_evict(engine, evictor, other)
    for path in (STATUS, LIST, "/batches/b-other/status", "/batches/user/bob"):
        assert (await api.get(path)).headers["X-Cache"] == "miss"
        assert (await api.get(path)).headers["X-Cache"] == "hit"
    before = await api.json(STATUS)

    essay = "171b04c1-1125-5665-b999-10266c83625c"
    await commit_and_evict(engine, evictor, [spellchecked("gen2", FIXTURE_BATCH, essay, True, 9, EPOCH + timedelta(1))])

    after = await api.get(STATUS)
    assert after.headers["X-Cache"] == "miss"
    changed = next(e for e in after.json()["essays"] if e["essay_id"] == essay)
    assert (changed["spellcheck_status"], changed["spellcheck_correction_count"]) == ("completed", 9)
    assert after.json() != before
    listed = await api.get(LIST)
    assert listed.headers["X-Cache"] == "miss"
    assert listed.json()["batches"][0] == after.json()
    assert (await api.get("/batches/b-other/status")).headers["X-Cache"] == "hit", "another batch did not change"
    assert (await api.get("/batches/user/bob")).headers["X-Cache"] == "hit", "another user's list did not change"


async def test_a_new_batch_reaches_its_owners_cached_list(engine: AsyncEngine, cached: CachedStack) -> None:
    api, evictor = cached.api, cached.evictor
    await commit_and_evict(engine, evictor, fixture_messages("gen2"))
    assert (await api.json(LIST))["pagination"]["total"] == 1
    assert (await api.get(LIST)).headers["X-Cache"] == "hit"
    await commit_and_evict(engine, evictor, [registered("gen2", "b-later", FIXTURE_USER, [], EPOCH + timedelta(1))])
    listed = await api.get(LIST)
    assert listed.headers["X-Cache"] == "miss"
    assert [b["batch_id"] for b in listed.json()["batches"]] == ["b-later", FIXTURE_BATCH]
    assert listed.json()["pagination"]["total"] == 2


async def test_errors_are_never_stored(engine: AsyncEngine, cached: CachedStack) -> None:
    api = cached.api
    for _ in range(2):
        missing = await api.get("/batches/b-soon/status")
        assert missing.status_code == 404 and "X-Cache" not in missing.headers
    # Registered without any eviction reaching the cache: a stored 404 would now be served, stale.
    await project(engine, [registered("gen2", "b-soon", "t1", [], EPOCH)])
    found = await api.get("/batches/b-soon/status")
    assert (found.status_code, found.headers["X-Cache"]) == (200, "miss")


async def test_scoped_views_never_share_entries(engine: AsyncEngine, cached: CachedStack) -> None:
    api = cached.api
    await commit_and_evict(engine, cached.evictor, fixture_messages("gen2"))
    owner = await api.get(STATUS, user=FIXTURE_USER)
    assert (owner.status_code, owner.headers["X-Cache"]) == (200, "miss")
    assert (await api.get(STATUS, user=FIXTURE_USER)).headers["X-Cache"] == "hit"
    assert (await api.get(STATUS, user="mallory")).status_code == 404
    assert (await api.get(STATUS, user="*")).status_code == 404
    unscoped = await api.get(STATUS)
    assert (unscoped.headers["X-Cache"], unscoped.content) == ("miss", owner.content)
    assert (await api.get(LIST, user="mallory")).status_code == 403


async def test_equivalent_parameters_share_one_entry(engine: AsyncEngine, cached: CachedStack) -> None:
    api = cached.api
    await commit_and_evict(engine, cached.evictor, fixture_messages("gen2"))
    assert (await api.get(LIST)).headers["X-Cache"] == "miss"
    for params in ({"limit": "20"}, {"offset": "0", "limit": "20"}, {"status": ""}, {"unknown": "x"}):
        assert (await api.get(LIST, params=params)).headers["X-Cache"] == "hit", params
    assert (await api.get(LIST, params={"limit": "19"})).headers["X-Cache"] == "miss"


async def test_without_redis_it_serves_the_same_bytes(engine: AsyncEngine, api: Rest) -> None:
    await project(engine, fixture_messages("gen2"))
    base = settings_for()
    settings = cache_settings(
        "redis://127.0.0.1:9/0",  # nothing listens there: fail-open
        internal_api_key=base.internal_api_key,
        allowed_service_ids=base.allowed_service_ids,
    )
    cache, evictor = pair(settings)
    client = client_for(cached_app(engine, settings, cache))
    async with client.client:
        response = await client.get(STATUS)
    await cache.aclose()
    await evictor.aclose()
    assert (response.status_code, response.headers["X-Cache"]) == (200, "bypass")
    assert response.content == (await api.get(STATUS)).content
