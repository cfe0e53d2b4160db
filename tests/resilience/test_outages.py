"""Outages of each dependency while the real `ras consume` and `ras serve` run: PostgreSQL, Redis, the broker.

Each scenario owns the server it stops. The promises: the consumer survives and resumes by itself with nothing
lost or applied twice (positions reach the produced ends, tables equal a clean run's), and the API stays honest:
cached answers where it has them, a clear SERVICE_UNAVAILABLE (HTTP 503) where it has none, no stale answer after
a Redis outage, and readiness that says so.

One module (about 500 lines): one scenario per dependency, sharing the streams and answer checks above, so each
promise is checked alike for every dependency.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from consumer.pure.topics import ALL_TOPICS
from devstack.demo import Message
from devstack.kafka import kafka_ready
from devstack.postgres import PostgresProcess
from devstack.redis import RedisProcess
from devstack.topics import create_topics
from tests.helpers import figures, servers
from tests.helpers.kafka_io import produce, stored_positions
from tests.helpers.processes import get_status, wait_for_status
from tests.helpers.proxy import Proxy
from tests.helpers.stack import (
    AUTH,
    BATCH_QUERY,
    LIST_QUERY,
    SESSION_TIMEOUT_MS,
    Api,
    Consumer,
    PacedProducer,
    Wiring,
    announcements,
    batch_ids,
    batch_lives,
    cache_status,
    check_tables,
    freeze,
    graphql,
    owned_broker,
    owned_redis,
    reference_api,
    thaw,
    wait_for_announced,
    wait_for_ends,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

OUTAGE_SECONDS = 10.0
REDIS_OUTAGE_SECONDS = 3.0
# Partitions and freezes twice each: whether the API or the consumer reaches Redis first after one is a race.
ROUNDS = 11
OUTAGES = {1: "partition", 3: "freeze", 5: "partition", 7: "freeze", 9: "crash"}
BEYOND_END = "stored position beyond the end of the partition"


def halves(lives: list[list[Message]]) -> tuple[list[Message], list[Message]]:
    """The first and second half of every batch's life: after the second, every batch has changed."""
    first = [m for life in lives for m in life[: len(life) // 2]]
    second = [m for life in lives for m in life[len(life) // 2 :]]
    return first, second


async def answered_from_cache(client: httpx.AsyncClient, batch_id: str) -> Any:
    """Ask until the answer is a cache hit (the last commit's eviction may still be on its way); its data."""
    async with asyncio.timeout(10):
        while True:
            response = await graphql(client, BATCH_QUERY, {"id": batch_id})
            assert response.status_code == 200, response.text
            if cache_status(response.json()) == "hit":
                return response.json()["data"]
            await asyncio.sleep(0.1)


async def test_database_outage_consumer_waits_api_serves_cache_and_503(
    owned_postgres: tuple[PostgresProcess, str], redis_url: str, kafka_bootstrap: str, tmp_path: Path
) -> None:
    scenario = "database outage"
    server, url = owned_postgres
    engine = create_async_engine(url, pool_pre_ping=True)
    first, second = halves(batch_lives(40, seed=21))
    ids = batch_ids(first)
    warm, cold = ids[:6], ids[6:12]
    wiring = Wiring(url, kafka_bootstrap).with_cache(redis_url)
    consumer = Consumer(wiring, tmp_path / "consume.log")
    api = Api(wiring, tmp_path / "serve.log")
    seen: Counter[str] = Counter()
    try:
        async with announcements(wiring, redis_url) as announced:
            ends = await produce(kafka_bootstrap, first)
            await api.ready()
            await wait_for_ends(engine, ends, 90, consumer)
            async with httpx.AsyncClient(base_url=api.url, timeout=10) as client:
                cached = {batch_id: await answered_from_cache(client, batch_id) for batch_id in warm}

                stopped = time.monotonic()
                await asyncio.to_thread(server.stop)
                async with PacedProducer(kafka_bootstrap) as producer:
                    # Events keep coming during the outage; the consumer must hold them, not lose or skip them.
                    produced = asyncio.create_task(producer.paced(second, rate=len(second) / (OUTAGE_SECONDS * 0.7)))
                    body = await wait_for_status(api.url + "/readyz", 503, timeout=60)
                    assert body["checks"]["database"]["status"] == "unhealthy"  # type: ignore[index]
                    body = await wait_for_status(consumer.readyz, 503, timeout=60)
                    assert body["database"]["status"] == "unhealthy"  # type: ignore[index]
                    while time.monotonic() - stopped < OUTAGE_SECONDS:
                        for batch_id in warm:
                            response = await graphql(client, BATCH_QUERY, {"id": batch_id})
                            assert response.status_code == 200, response.text
                            assert cache_status(response.json()) == "hit"
                            assert response.json()["data"] == cached[batch_id]
                            seen["cached 200 (hit)"] += 1
                        for batch_id in cold:
                            response = await graphql(client, BATCH_QUERY, {"id": batch_id})
                            assert response.status_code == 503, response.text
                            assert response.headers["Retry-After"]
                            errors = response.json()["errors"]
                            assert [e["extensions"]["code"] for e in errors] == ["SERVICE_UNAVAILABLE"], errors
                            seen["uncached 503 SERVICE_UNAVAILABLE"] += 1
                            rest = await client.get(f"/internal/v1/batches/{batch_id}/status", headers=AUTH)
                            assert rest.status_code == 503, rest.text
                            seen["REST 503"] += 1
                        status, _ = await get_status(api.url + "/readyz")
                        assert status == 503
                        seen["readyz 503"] += 1
                        assert consumer.alive(), consumer.process.output()[-3000:]
                        await asyncio.sleep(0.5)
                    await produced
                    ends = {**ends, **producer.ends}
                # The consumer says why it waits (the events produced meanwhile are what it waits to apply).
                await consumer.process.wait_for_output("database unavailable, retrying", timeout=60)
                retries = consumer.process.output().count("database unavailable, retrying")
                assert consumer.alive()

                await asyncio.to_thread(server.start)
                restarted = time.monotonic()
                outage = restarted - stopped
                await engine.dispose()  # the pool's connections died with the server
                positions = await wait_for_ends(engine, ends, 90, consumer)
                recovery = time.monotonic() - restarted
                assert "partitions resumed" in consumer.process.output()
                await api.ready(timeout=60)
                await wait_for_announced(announced, producer.ends, 60)  # the last commit's eviction is done
                # Once the breaker lets a trial through, uncached queries are answered again, with the new state.
                async with reference_api(engine) as reference, asyncio.timeout(60):
                    for batch_id in warm + cold:
                        while (response := await graphql(client, BATCH_QUERY, {"id": batch_id})).status_code == 503:
                            await asyncio.sleep(0.2)
                        truth = (await graphql(reference, BATCH_QUERY, {"id": batch_id})).json()["data"]
                        assert response.status_code == 200 and response.json()["data"] == truth, response.text
                        assert response.json()["data"] != cached.get(batch_id), "the second half changed every batch"
            assert positions == ends
        assert await consumer.stop() == 0
        await api.stop()
        counts = await check_tables(engine, first + second)
    finally:
        consumer.kill()
        api.kill()
        await engine.dispose()
    figures.report(
        scenario,
        events=len(first) + len(second),
        during_outage=len(second),
        outage_s=outage,
        consumer_retry_logs=retries,
        errors_seen=dict(seen),
        recovery_s=recovery,
        batches=counts["batches"],
    )


def rounds_of(lives: list[list[Message]], rounds: int) -> list[list[Message]]:
    """Round k holds the k-th slice of every batch's life: each round changes every batch again."""
    return [
        [m for life in lives for m in life[k * len(life) // rounds : (k + 1) * len(life) // rounds]]
        for k in range(rounds)
    ]


class AnswerCheck:
    """Asks the API (through the cache) and the reference (no cache, same database) the same questions."""

    def __init__(self, api: httpx.AsyncClient, reference: httpx.AsyncClient, ids: list[str], users: list[str]):
        self._api = api
        self._reference = reference
        self._questions: list[tuple[str, dict[str, Any]]] = [(BATCH_QUERY, {"id": i}) for i in ids]
        self._questions += [(LIST_QUERY, {"userId": u, "first": 100}) for u in [*users, None]]
        self.statuses: Counter[str] = Counter()
        self.failed = 0
        self.stale = 0
        self.problems: list[str] = []

    async def truths(self) -> list[Any]:
        answers = []
        for query, variables in self._questions:
            response = await graphql(self._reference, query, variables)
            assert response.status_code == 200 and "errors" not in response.json(), response.text
            answers.append(response.json()["data"])
        return answers

    async def ask(self, index: int, truth: Any) -> None:
        """One question; a failed request or a wrong answer is counted and described, and the scenario goes on so
        that its figures show how often it happened."""
        query, variables = self._questions[index]
        response = await graphql(self._api, query, variables)
        body = response.json() if response.headers.get("content-type") == "application/json" else {}
        if response.status_code != 200 or "errors" in body:
            self.failed += 1
            self.problems.append(f"HTTP {response.status_code}: {response.text[:300]}")
            return
        status = cache_status(body) or "none"
        self.statuses[status] += 1
        if body["data"] != truth:
            self.stale += 1
            age = body["extensions"]["cache"]["ageSeconds"]
            self.problems.append(f"stale answer ({status}, stored {age}s ago) to {variables}")

    async def everything_twice(self) -> None:
        """Every question twice: the first may store, the second may hit; both must equal the reference."""
        truths = await self.truths()
        for _ in range(2):
            for index, truth in enumerate(truths):
                await self.ask(index, truth)

    async def keep_asking(self, seconds: float) -> int:
        """Ask in a tight loop for `seconds` (nothing is produced meanwhile, so the truths hold throughout)."""
        truths = await self.truths()
        asked = 0
        ends = time.monotonic() + seconds
        while time.monotonic() < ends:
            await self.ask(asked % len(truths), truths[asked % len(truths)])
            asked += 1
        return asked


class RedisFaults:
    """The three ways Redis goes away. Both service processes reach it through a proxy the test can cut."""

    def __init__(self, redis: RedisProcess, proxy: Proxy) -> None:
        self._redis = redis
        self._proxy = proxy

    async def begin(self, kind: str) -> None:
        if kind == "partition":  # Redis keeps its data; commands in flight are lost, new ones time out
            self._proxy.cut()
        elif kind == "freeze":  # SIGSTOP, a hung host: Redis keeps its data and its clients' sockets
            freeze(self._redis.pid)
        else:  # SIGKILL: a crash; Redis runs without persistence, so it comes back empty
            self._redis.kill()

    async def end(self, kind: str) -> None:
        if kind == "partition":
            self._proxy.heal()
        elif kind == "freeze":
            thaw(self._redis.pid)
        else:
            await asyncio.to_thread(self._redis.start)


async def test_redis_outage_consumer_keeps_going_and_no_stale_answer_survives(
    engine: AsyncEngine, database_url: str, kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Round by round, every batch changes. During five of the rounds Redis is away: cut off by a network
    partition or frozen (twice each), and crashed (then restarted empty). After every round each answer, asked
    twice (to be served by the cache), must equal the reference's; right after each outage the API is asked in a
    tight loop, when entries stored before the outage may still be in Redis and no eviction of the round got
    through."""
    scenario = "redis outage"
    users = [f"teacher-{i:02d}" for i in range(4)]
    lives = batch_lives(24, seed=31, users=len(users))
    rounds = rounds_of(lives, ROUNDS)
    ids = batch_ids(rounds[0])
    durations: list[str] = []
    asked_after = 0
    async with owned_redis() as redis:
        proxy = Proxy(redis.host, redis.port)
        await proxy.start()
        faults = RedisFaults(redis, proxy)
        wiring = Wiring(database_url, kafka_bootstrap).with_cache(proxy.url)
        consumer = Consumer(wiring, tmp_path / "consume.log")
        api = Api(wiring, tmp_path / "serve.log")
        try:
            await api.ready()
            async with (
                httpx.AsyncClient(base_url=api.url, timeout=10) as client,
                reference_api(engine) as reference,
                PacedProducer(kafka_bootstrap) as producer,
                announcements(wiring, redis.url) as announced,
            ):
                check = AnswerCheck(client, reference, ids, users)
                for k, events in enumerate(rounds):
                    outage = OUTAGES.get(k)
                    if outage is not None:
                        await faults.begin(outage)
                    else:
                        # After Redis crashed the hub subscribes again by itself; it must hear this round's news.
                        async with asyncio.timeout(60):
                            await announced.listening.wait()
                    began = time.monotonic()
                    before = dict(producer.ends)
                    await producer.send(events)
                    await wait_for_ends(engine, producer.ends, 60, consumer)
                    if outage is None:
                        # Evictions follow their commit: ask once the last one is done. (During an outage every
                        # eviction of the round fails, and the epoch change after it covers them.)
                        sent = {tp: end for tp, end in producer.ends.items() if end > before.get(tp, 0)}
                        await wait_for_announced(announced, sent, 60)
                    else:
                        # Answers during the outage come from the database (bypass) and must be right too. The API
                        # is asked for at least a second, so that it sees the outage for itself (docs/cache.md).
                        await check.keep_asking(max(1.0, REDIS_OUTAGE_SECONDS - (time.monotonic() - began)))
                        await faults.end(outage)
                        durations.append(f"{outage} {time.monotonic() - began:.1f}s")
                        asked_after += await check.keep_asking(2.0)
                    await check.everything_twice()
                    assert consumer.alive()
                positions = await stored_positions(engine)
                assert positions == producer.ends
            output = consumer.process.output()
            assert "redis unavailable" in output and "cache epoch changed" in output, output[-3000:]
            assert await consumer.stop() == 0
            await api.stop()
        finally:
            consumer.kill()
            api.kill()
            await proxy.close()
    counts = await check_tables(engine, [m for r in rounds for m in r])
    figures.report(
        scenario,
        events=sum(len(r) for r in rounds),
        rounds=len(rounds),
        batches=counts["batches"],
        outages=durations,
        asked_right_after_outages=asked_after,
        answers=dict(check.statuses),
        failed_requests=check.failed,
        stale_answers=check.stale,
    )
    assert check.failed == 0 and check.stale == 0, "\n".join(check.problems[:20])


async def test_broker_unresponsive_beyond_the_session_timeout_loses_and_doubles_nothing(
    engine: AsyncEngine, database_url: str, tmp_path: Path
) -> None:
    """The broker hangs (SIGSTOP: it keeps its log) for longer than the group session timeout while producers keep
    sending; once it answers again the group is rebuilt and the consumer goes on from its stored positions."""
    scenario = "broker unresponsive"
    lives = batch_lives(40, seed=41)
    first, second = halves(lives)
    async with owned_broker() as broker:
        consumer = Consumer(Wiring(database_url, broker.bootstrap), tmp_path / "consume.log")
        try:
            async with PacedProducer(broker.bootstrap) as producer:
                await producer.send(first)
                await wait_for_ends(engine, producer.ends, 60, consumer)
                before = await stored_positions(engine)
                freeze(broker.pid)
                frozen = time.monotonic()
                # The producer's sends wait in its buffer for the broker, as a real service's would.
                sending = asyncio.create_task(producer.paced(second, rate=len(second) / 4))
                await asyncio.sleep(SESSION_TIMEOUT_MS / 1000 + 3)
                assert consumer.alive()
                assert await stored_positions(engine) == before, "nothing can be consumed from a hung broker"
                thaw(broker.pid)
                thawed = time.monotonic()
                await sending
                positions = await wait_for_ends(engine, producer.ends, 90, consumer)
                recovery = time.monotonic() - thawed
            assert positions == producer.ends
            assert await consumer.stop() == 0
        finally:
            consumer.kill()
    counts = await check_tables(engine, first + second)
    figures.report(
        scenario,
        events=len(first) + len(second),
        sent_during_outage=len(second),
        outage_s=thawed - frozen,
        assignments=consumer.assignments(),
        errors_seen=0,
        recovery_s=recovery,
        batches=counts["batches"],
    )


async def test_broker_restart_that_lost_its_log_is_read_again_from_the_beginning(
    engine: AsyncEngine, database_url: str, tmp_path: Path
) -> None:
    """Tansu keeps its log in memory, so a restart loses every topic and record: the stored positions are then
    beyond the ends of the new, empty partitions. The consumer must say so and read the new log from its first
    record, and store positions that match it, so that a later restart neither skips nor re-reads."""
    scenario = "broker restart, log lost"
    before, after, later = (
        [m for life in batch_lives(n, seed=s) for m in life] for n, s in ((30, 51), (10, 52), (10, 53))
    )
    async with owned_broker() as broker:
        wiring = Wiring(database_url, broker.bootstrap)
        consumer = Consumer(wiring, tmp_path / "consume-1.log")
        try:
            ends = await produce(broker.bootstrap, before)
            await wait_for_ends(engine, ends, 60, consumer)
            await asyncio.to_thread(broker.stop)
            stopped = time.monotonic()
            await asyncio.sleep(3)
            assert consumer.alive(), "a broker outage is no reason to exit"
            await asyncio.to_thread(broker.start)
            await create_topics(broker.bootstrap, ALL_TOPICS, 4)
            restarted = time.monotonic()
            # Every partition that had a position is read again, each with a warning naming it.
            warned: set[str] = set()
            async with asyncio.timeout(60):
                while len(warned) < len(ends):
                    assert consumer.alive(), consumer.process.output()[-3000:]
                    warned = {e["partition"] for e in consumer.log_events(BEYOND_END)}
                    await asyncio.sleep(0.1)
            assert warned == {f"{topic}:{partition}" for topic, partition in ends}
            new_ends = await produce(broker.bootstrap, after)
            positions = await wait_for_ends(engine, new_ends, 60, consumer)
            recovery = time.monotonic() - restarted
            assert positions == {**dict.fromkeys(ends, 0), **new_ends}, "the stored positions are the new log's"
            assert await consumer.stop() == 0

            # A restart resumes exactly there: nothing beyond any end any more, nothing re-read or skipped.
            more_ends = await produce(broker.bootstrap, later)
            consumer = Consumer(wiring, tmp_path / "consume-2.log")
            final = {**dict.fromkeys(ends, 0), **new_ends, **more_ends}
            assert await wait_for_ends(engine, final, 60, consumer) == final
            assert consumer.log_events(BEYOND_END) == []
            assert await consumer.stop() == 0
        finally:
            consumer.kill()
    counts = await check_tables(engine, before + after + later)
    figures.report(
        scenario,
        events=len(before) + len(after) + len(later),
        before_restart=len(before),
        broker_down_s=restarted - stopped,
        partitions_rewound=len(warned),
        errors_seen=0,
        recovery_s=recovery,
        batches=counts["batches"],
    )


RESTART_COMMAND = os.environ.get("RAS_TEST_KAFKA_RESTART_COMMAND", "").strip()


@pytest.mark.skipif(
    not (servers.env(servers.TEST_KAFKA_BOOTSTRAP) and RESTART_COMMAND),
    reason="needs a broker that keeps its log across a restart: the embedded Tansu keeps it in memory only. Set "
    "RAS_TEST_KAFKA_BOOTSTRAP to an Apache Kafka and RAS_TEST_KAFKA_RESTART_COMMAND to a command that restarts it "
    "(e.g. 'docker compose restart kafka').",
)
async def test_broker_restart_with_retention_loses_and_doubles_nothing(
    engine: AsyncEngine, database_url: str, kafka_bootstrap: str, tmp_path: Path
) -> None:
    """A real restart of a real broker, its log kept: the consumer reconnects, rejoins and goes on."""
    scenario = "broker restart, log kept"
    first, second = halves(batch_lives(40, seed=61))
    consumer = Consumer(Wiring(database_url, kafka_bootstrap), tmp_path / "consume.log")
    try:
        ends = await produce(kafka_bootstrap, first)
        await wait_for_ends(engine, ends, 60, consumer)
        began = time.monotonic()
        await asyncio.to_thread(subprocess.run, shlex.split(RESTART_COMMAND), check=True, timeout=300)
        host, _, port = kafka_bootstrap.split(",")[0].rpartition(":")
        async with asyncio.timeout(120):  # the command may return before the broker answers again
            while not await asyncio.to_thread(kafka_ready, host, int(port)):
                await asyncio.sleep(0.5)
        restarted = time.monotonic()
        ends = {**ends, **await produce(kafka_bootstrap, second)}
        positions = await wait_for_ends(engine, ends, 180, consumer)
        recovery = time.monotonic() - restarted
        assert positions == ends
        assert consumer.log_events(BEYOND_END) == [], "the log survived, so no position can be beyond its end"
        assert await consumer.stop() == 0
    finally:
        consumer.kill()
    counts = await check_tables(engine, first + second)
    figures.report(
        scenario,
        events=len(first) + len(second),
        restart_s=restarted - began,
        recovery_s=recovery,
        errors_seen=0,
        batches=counts["batches"],
    )
