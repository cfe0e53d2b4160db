"""A full Redis under `maxmemory-policy noeviction` (the setup docs/cache.md asks for) refuses the consumer's eviction
while still answering reads: no API instance may then serve what the eviction should have deleted. And a caller
cannot fill Redis with made-up ids: results that read an id over the cap are answered but not stored.

Real PostgreSQL, the real projection, the real GraphQL endpoint (`create_app`, as `ras serve` builds it) of two API
instances, and a redis-server of the test's own that is filled until it refuses writes.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from redis.asyncio import Redis
from redis.exceptions import OutOfMemoryError
from sqlalchemy.ext.asyncio import AsyncEngine

from app.cache import QueryCache
from app.cache import client as cache_client
from app.main import create_app
from consumer.eviction import Evictor
from devstack.redis import RedisProcess
from infra import cache_keys as ck
from infra.settings import Settings
from tests.helpers.cache import Delta, cache_settings, sample
from tests.helpers.events import EPOCH, Message, project, registered, slot_assigned, spellchecked

API_KEY = "test-internal-key"
AUTH = {"X-Internal-API-Key": API_KEY, "X-Service-ID": "api-gateway-service"}
BATCH = "query Batch($id: ID!) { batch(id: $id) { id status processingStartedAt } }"
FILLER = b"x" * 65_536
# Hang guards only: filling a few MB takes a few dozen writes, a breaker pause a fraction of a second.
MAX_FILLER_WRITES = 10_000
HANG_GUARD_SECONDS = 30


class Api:
    """One API instance: its own app and its own QueryCache, as one `ras serve` process has."""

    def __init__(self, engine: AsyncEngine, settings: Settings) -> None:
        self.cache = QueryCache(cache_client(settings), settings, pause_after_error=0.05)
        app = create_app(settings, engine=engine, cache=self.cache)
        self.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")

    async def batch(self, batch_id: str) -> tuple[str, Any]:
        """(cache status, the batch) of a `batch(id:)` query."""
        response = await self.http.post("/graphql", json={"query": BATCH, "variables": {"id": batch_id}}, headers=AUTH)
        assert response.status_code == 200, response.text
        body = response.json()
        return body["extensions"]["cache"]["status"], body["data"]["batch"]

    async def aclose(self) -> None:
        await self.http.aclose()
        await self.cache.aclose()


@pytest.fixture
async def server() -> AsyncIterator[RedisProcess]:
    process = RedisProcess()
    await asyncio.to_thread(process.start)
    yield process
    await asyncio.to_thread(process.close)


@pytest.fixture
def settings(server: RedisProcess) -> Settings:
    return cache_settings(server.url, internal_api_key=SecretStr(API_KEY))


@pytest.fixture
async def admin(server: RedisProcess) -> AsyncIterator[Redis]:
    client = Redis.from_url(server.url)
    yield client
    await client.aclose()


@pytest.fixture
async def apis(engine: AsyncEngine, settings: Settings) -> AsyncIterator[tuple[Api, Api]]:
    first, second = Api(engine, settings), Api(engine, settings)
    yield first, second
    await first.aclose()
    await second.aclose()


@pytest.fixture
async def evictor(settings: Settings) -> AsyncIterator[Evictor]:
    evictor = Evictor(ck.connect(settings), settings, retry_interval=0.05)
    yield evictor
    await evictor.aclose()


def new_batch(user: str) -> tuple[str, str, list[Message]]:
    batch_id, essay_id = str(uuid.uuid4()), str(uuid.uuid4())
    registration = registered("gen2", batch_id, user, [essay_id], EPOCH)
    return batch_id, essay_id, [registration, slot_assigned("gen2", batch_id, essay_id, EPOCH + timedelta(seconds=1))]


async def used_memory(admin: Redis) -> int:
    return int((await admin.info("memory"))["used_memory"])


async def fill(admin: Redis) -> None:
    """Make Redis refuse writes as a full one does: noeviction, maxmemory a few MB above what it holds, then
    writes of 64 KB until one is refused. Then hold it full: the refused write's own buffer is freed after the
    refusal, which could let the next small write in again, so maxmemory goes down to half of what is used."""
    await admin.config_set("maxmemory-policy", "noeviction")
    await admin.config_set("maxmemory", await used_memory(admin) + 4 * 1_048_576)
    for n in range(MAX_FILLER_WRITES):
        try:
            await admin.set(f"filler:{n}", FILLER)
        except OutOfMemoryError:
            await admin.config_set("maxmemory", await used_memory(admin) // 2)
            return
    raise AssertionError("Redis never refused a write")


async def until_cached(api: Api, batch_id: str) -> tuple[str, Any]:
    """Query until the answer is a hit again (the breaker's pause after a refusal lets a few requests bypass)."""
    async with asyncio.timeout(HANG_GUARD_SECONDS):
        while True:
            status, batch = await api.batch(batch_id)
            if status == "hit":
                return status, batch
            await asyncio.sleep(0.02)


async def test_an_eviction_refused_by_a_full_redis_stops_every_instance_serving_hits(
    engine: AsyncEngine, apis: tuple[Api, Api], evictor: Evictor, admin: Redis
) -> None:
    storing, only_hits = apis
    x, essay, messages = new_batch("alice")
    await evictor.evict(await project(engine, messages))
    assert (await storing.batch(x))[0] == "miss"
    # The second instance only ever hits: before the fix nothing told it that an eviction was lost.
    assert (await only_hits.batch(x))[0] == "hit"
    status, before = await only_hits.batch(x)
    assert status == "hit" and before["processingStartedAt"] is None

    await fill(admin)
    delta = Delta()
    spelled = spellchecked("gen2", x, essay, True, 2, EPOCH + timedelta(seconds=100))
    await evictor.evict(await project(engine, [spelled]))

    for api in (only_hits, storing, only_hits):
        status, after = await api.batch(x)
        assert after["processingStartedAt"] is not None, "never the answer the refused eviction should have deleted"
        assert status == "bypass", "nothing is stored or served while Redis refuses writes"
    assert delta("ras_cache_errors_total", side="consumer", op="evict") == 1, "Redis did refuse the eviction"
    assert sample("ras_cache_writes_refused") == 1

    # Redis has room again: the cache comes back, under a new epoch, and evictions work again.
    await admin.config_set("maxmemory", 0)
    for api in apis:
        assert await until_cached(api, x) == ("hit", after)
    _, _, messages = new_batch("alice")
    await evictor.evict(await project(engine, messages))
    assert sample("ras_cache_writes_refused") == 0
    for api in apis:
        assert await api.batch(x) == ("hit", after), "an eviction of another batch leaves this one cached"


async def test_a_refused_epoch_change_at_start_up_still_hides_every_entry(
    engine: AsyncEngine, apis: tuple[Api, Api], evictor: Evictor, admin: Redis
) -> None:
    """`ras consume` changes the epoch at every start (a crash may have lost an eviction); a full Redis must not
    make that a no-op."""
    api, _ = apis
    x, _, messages = new_batch("alice")
    await evictor.evict(await project(engine, messages))
    await api.batch(x)
    assert (await api.batch(x))[0] == "hit"

    await fill(admin)
    await evictor.bump_epoch()
    assert (await api.batch(x))[0] == "bypass"


async def test_results_that_read_an_overlong_id_are_answered_but_never_stored(
    apis: tuple[Api, Api], admin: Redis, settings: Settings
) -> None:
    """The attack: unique `batch(id: "<15 KB>")` lookups, each stored with its tag keys (16 KB a request)."""
    api, _ = apis
    long_ids = [f"{n}-" + "x" * 15_000 for n in range(20)]
    used_before = await used_memory(admin)
    delta = Delta()
    for batch_id in long_ids:
        assert await api.batch(batch_id) == ("miss", None)
        assert await api.batch(batch_id) == ("miss", None), "not stored, so never a hit"
    assert delta("ras_cache_stores_total", outcome="skipped_too_large") == 2 * len(long_ids)
    keys = [k async for k in admin.scan_iter(match=f"*{settings.cache_prefix}*")]
    assert all(len(k) < 1_000 for k in keys), "no key holds an overlong id"
    # Far below the 300 KB the same lookups stored before the cap (allocator noise aside).
    assert await used_memory(admin) - used_before < 100_000

    at_the_cap = "y" * settings.cache_max_id_chars
    assert await api.batch(at_the_cap) == ("miss", None)
    assert await api.batch(at_the_cap) == ("hit", None), "an id up to the cap is cached as before"
