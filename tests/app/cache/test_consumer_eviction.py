"""The real consumer evicts through Kafka and PostgreSQL: only what an event changed leaves the cache, and answers
stay correct while Redis is killed, hung and restarted under it."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import timedelta

import orjson
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.cache import Executed, QueryCache
from app.cache import client as cache_client
from consumer.apply import Applied
from consumer.eviction import Evictor
from consumer.runner import ConsumerLoop
from devstack.demo import EPOCH, Message, registered, slot_assigned, spellchecked
from devstack.redis import RedisProcess
from infra import cache_keys as ck
from infra.settings import Settings
from tests.helpers.cache import Delta, cache_settings, pair, wait_until
from tests.helpers.kafka_io import Offsets, produce

pytestmark = pytest.mark.kafka

Execute = Callable[[], Awaitable[Executed]]
GEN = "gen2"

_BATCH = text(
    "SELECT b.batch_id, b.user_id, b.status, b.completed_essay_count, b.failed_essay_count, b.last_updated, "
    "(SELECT count(*) FROM phase_results p WHERE p.batch_id = b.batch_id) AS results "
    "FROM batches b WHERE b.batch_id = :id"
)
_LIST = text("SELECT batch_id, status FROM batches WHERE :user = '*' OR user_id = :user ORDER BY batch_id")


def batch_view(engine: AsyncEngine, batch_id: str) -> Execute:
    """What a `batch(id:)` query would read, tagged as the loaders tag it."""

    async def execute() -> Executed:
        async with engine.connect() as conn:
            row = (await conn.execute(_BATCH, {"id": batch_id})).mappings().first()
        return Executed(orjson.dumps({"data": {"batch": dict(row) if row else None}}), ck.read_tags([batch_id], []))

    return execute


def list_view(engine: AsyncEngine, user_id: str) -> Execute:
    """What a user's `batches` list would read: tagged with the user and with every batch on the page."""

    async def execute() -> Executed:
        async with engine.connect() as conn:
            rows = [dict(r) for r in (await conn.execute(_LIST, {"user": user_id})).mappings()]
        body = orjson.dumps({"data": {"batches": rows}})
        return Executed(body, ck.read_tags([r["batch_id"] for r in rows], [user_id]))

    return execute


class Batch:
    def __init__(self, user_id: str, essays: int = 2) -> None:
        self.id = str(uuid.uuid4())
        self.user_id = user_id
        self.essays = [str(uuid.uuid4()) for _ in range(essays)]

    def registration(self) -> list[Message]:
        out = [registered(GEN, self.id, self.user_id, self.essays, EPOCH)]
        return out + [slot_assigned(GEN, self.id, e, EPOCH + timedelta(seconds=1)) for e in self.essays]

    def spellchecked(self, essay: int) -> Message:
        return spellchecked(GEN, self.id, self.essays[essay], True, 3, EPOCH + timedelta(seconds=100 + essay))


def consumer_settings(database_url: str, bootstrap: str, redis_url: str) -> Settings:
    return cache_settings(
        redis_url,
        database_url=database_url,
        kafka_bootstrap_servers=bootstrap,
        kafka_group_id=f"ras-test-{uuid.uuid4().hex[:8]}",
        kafka_session_timeout_ms=6_000,
    )


class Evicted:
    """The evictor as the consumer's `on_applied`, recording how far evictions have run.

    The consumer evicts after its transaction commits, so stored positions that reached an event do not yet mean its
    eviction ran: a test that reads the cache must wait for this record instead."""

    def __init__(self, evictor: Evictor) -> None:
        self.evictor = evictor
        self.through: dict[tuple[str, int], int] = {}
        self.changed = asyncio.Condition()

    async def __call__(self, applied: Applied) -> None:
        await self.evictor.evict(applied)
        async with self.changed:
            for topic, partition, offset in applied.positions:
                self.through[(topic, partition)] = max(offset, self.through.get((topic, partition), 0))
            self.changed.notify_all()

    async def reached(self, ends: Offsets) -> None:
        async with asyncio.timeout(60), self.changed:  # the timeout only turns a hang into a failure
            await self.changed.wait_for(lambda: all(self.through.get(tp, 0) >= end for tp, end in ends.items()))


@asynccontextmanager
async def consuming(settings: Settings, engine: AsyncEngine, evictor: Evictor) -> AsyncIterator[Evicted]:
    """The consumer as `ras consume` runs it: epoch change at start, the evictor as `on_applied`."""
    await evictor.bump_epoch()
    evicted = Evicted(evictor)
    consumer = ConsumerLoop(settings, engine, on_applied=evicted)
    task = asyncio.create_task(consumer.run())
    try:
        yield evicted
    finally:
        consumer.stop()
        await asyncio.wait_for(task, 30)


async def project(bootstrap: str, evicted: Evicted, messages: list[Message]) -> None:
    """Produce `messages` and wait until the consumer has applied them and run their evictions."""
    await evicted.reached(await produce(bootstrap, messages))


@pytest.fixture
async def server() -> AsyncIterator[RedisProcess]:
    process = RedisProcess()
    await asyncio.to_thread(process.start)
    yield process
    await asyncio.to_thread(process.close)


async def test_an_event_for_one_batch_evicts_exactly_what_it_changed(
    engine: AsyncEngine, database_url: str, kafka_bootstrap: str, redis_url: str
) -> None:
    settings = consumer_settings(database_url, kafka_bootstrap, redis_url)
    cache, evictor = pair(settings)
    x, y = Batch("alice"), Batch("bob")
    views = {
        "x": batch_view(engine, x.id),
        "y": batch_view(engine, y.id),
        "alice": list_view(engine, "alice"),
        "bob": list_view(engine, "bob"),
        "all": list_view(engine, ck.ALL_USERS),
    }
    try:
        async with consuming(settings, engine, evictor) as evicted:
            await project(kafka_bootstrap, evicted, x.registration() + y.registration())
            for name, view in views.items():
                assert (await cache.fetch(name, view)).status == "miss"
                assert (await cache.fetch(name, view)).status == "hit"
            before = orjson.loads((await cache.fetch("x", views["x"])).body)["data"]["batch"]

            delta = Delta()
            await project(kafka_bootstrap, evicted, [x.spellchecked(0)])

            statuses = {name: (await cache.fetch(name, view)).status for name, view in views.items()}
            assert statuses == {"x": "miss", "y": "hit", "alice": "miss", "bob": "hit", "all": "miss"}
            after = orjson.loads((await cache.fetch("x", views["x"])).body)["data"]["batch"]
            assert (before["results"], after["results"]) == (0, 1), "the next query reflects the event"
            assert delta("ras_cache_entries_evicted_total") == 3
            for name, view in views.items():
                assert (await cache.fetch(name, view)).body == (await view()).body
    finally:
        await cache.aclose()
        await evictor.aclose()


async def test_a_new_batch_shows_up_in_its_users_list_and_in_an_earlier_lookup(
    engine: AsyncEngine, database_url: str, kafka_bootstrap: str, redis_url: str
) -> None:
    settings = consumer_settings(database_url, kafka_bootstrap, redis_url)
    cache, evictor = pair(settings)
    first, second = Batch("alice"), Batch("alice")
    alice, lookup = list_view(engine, "alice"), batch_view(engine, second.id)
    try:
        async with consuming(settings, engine, evictor) as evicted:
            await project(kafka_bootstrap, evicted, first.registration())
            assert len(orjson.loads((await cache.fetch("alice", alice)).body)["data"]["batches"]) == 1
            assert orjson.loads((await cache.fetch("second", lookup)).body)["data"]["batch"] is None
            assert (await cache.fetch("alice", alice)).status == (await cache.fetch("second", lookup)).status == "hit"

            await project(kafka_bootstrap, evicted, second.registration())

            listed = await cache.fetch("alice", alice)
            assert listed.status == "miss"
            assert [b["batch_id"] for b in orjson.loads(listed.body)["data"]["batches"]] == sorted(
                [first.id, second.id]
            )
            found = await cache.fetch("second", lookup)
            assert found.status == "miss" and orjson.loads(found.body)["data"]["batch"]["user_id"] == "alice"
    finally:
        await cache.aclose()
        await evictor.aclose()


@pytest.mark.slow
async def test_redis_killed_hung_and_restarted_mid_run_serves_correct_data_throughout(
    engine: AsyncEngine, database_url: str, kafka_bootstrap: str, server: RedisProcess
) -> None:
    settings = consumer_settings(database_url, kafka_bootstrap, server.url)
    cache = QueryCache(cache_client(settings), settings, pause_after_error=0.2)
    evictor = Evictor(ck.connect(settings), settings, retry_interval=0.2)
    x, y = Batch("alice", essays=3), Batch("bob", essays=3)
    views = {
        "x": batch_view(engine, x.id),
        "y": batch_view(engine, y.id),
        "alice": list_view(engine, "alice"),
        "all": list_view(engine, ck.ALL_USERS),
    }
    seen: list[str] = []

    async def check() -> None:
        """Every view answers exactly what the database holds now (no event is in flight between the two)."""
        for name, view in views.items():
            served = await cache.fetch(name, view)
            seen.append(served.status)
            assert served.body == (await view()).body, f"{name} served {served.status} data that is not current"

    try:
        async with consuming(settings, engine, evictor) as evicted:
            await project(kafka_bootstrap, evicted, x.registration() + y.registration())
            await check()
            await check()

            await asyncio.to_thread(server.kill)
            await check()
            await project(kafka_bootstrap, evicted, [x.spellchecked(0)])  # the consumer keeps projecting
            assert evictor.bump_pending
            await check()

            await asyncio.to_thread(server.start)
            await wait_until(lambda: not evictor.bump_pending)
            await check()
            await check()

            # Hung rather than dead: Redis keeps its entries while evictions time out.
            assert server.pid is not None
            os.kill(server.pid, signal.SIGSTOP)
            try:
                await project(kafka_bootstrap, evicted, [x.spellchecked(1), y.spellchecked(0)])
                await check()
            finally:
                os.kill(server.pid, signal.SIGCONT)
            await wait_until(lambda: not evictor.bump_pending)
            await check()
            await check()

            await project(kafka_bootstrap, evicted, [y.spellchecked(1)])
            await check()
        assert {"hit", "miss", "bypass"} <= set(seen)
    finally:
        await cache.aclose()
        await evictor.aclose()


class Gains:
    """A member's `on_gained`: the real epoch change, counted."""

    def __init__(self, evictor: Evictor) -> None:
        self.evictor = evictor
        self.calls = 0

    async def __call__(self) -> None:
        await self.evictor.bump_epoch()
        self.calls += 1


async def test_a_member_that_takes_over_partitions_changes_the_epoch(
    engine: AsyncEngine, database_url: str, kafka_bootstrap: str, redis_url: str
) -> None:
    """The last owner of a partition may have died between a commit and its eviction; the member that takes the
    partition over cannot know what it did not evict, so it hides every entry stored so far (as a restart does)."""
    settings = consumer_settings(database_url, kafka_bootstrap, redis_url)
    redis = ck.connect(settings)
    epoch_key = ck.CacheLayout(settings.cache_prefix).epoch
    gains = {name: Gains(pair(settings)[1]) for name in ("a", "b")}
    loops = {name: ConsumerLoop(settings, engine, on_gained=gains[name]) for name in gains}
    tasks = {"a": asyncio.create_task(loops["a"].run())}
    try:
        await wait_until(lambda: gains["a"].calls == 1, 60)  # A's first assignment: all partitions
        tasks["b"] = asyncio.create_task(loops["b"].run())
        await wait_until(lambda: gains["b"].calls == 1 and loops["a"].intake.generation >= 2, 60)
        await wait_until(lambda: loops["a"].intake.settled, 60)
        before = await redis.get(epoch_key)
        assert before is not None
        loops["b"].stop()
        await asyncio.wait_for(tasks.pop("b"), 60)
        await wait_until(lambda: gains["a"].calls == 2, 60)  # A takes B's partitions over
        assert await redis.get(epoch_key) != before, "the epoch changed when A took over B's partitions"
    finally:
        for name, task in tasks.items():
            loops[name].stop()
            await asyncio.wait_for(task, 60)
        for gain in gains.values():
            await gain.evictor.aclose()
        await redis.aclose()
