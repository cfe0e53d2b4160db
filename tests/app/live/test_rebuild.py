"""`ras rebuild` as a real process on a populated model: identical tables, the API serving throughout, the live
consumer carrying on after the swap, and a rebuild killed mid-way leaving the live projection untouched."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from app.cache import QueryCache
from app.live import EventHub
from app.main import create_app
from consumer.pure import topics
from consumer.tools.rebuild import REBUILD_LOCK, RebuildError, rebuild
from db import shadow
from db.migrate import upgrade_async
from devstack.demo import Message, batch_life, with_resends
from infra import cache_keys as ck
from infra.settings import Settings
from tests.app.graphql.conftest import AUTH
from tests.app.live.conftest import live_settings, process_env, running_consumer
from tests.helpers import servers
from tests.helpers.events import EPOCH, project
from tests.helpers.kafka_io import produce, stored_positions, wait_for_positions
from tests.helpers.processes import RasProcess

pytestmark = pytest.mark.kafka

TABLES = {
    "batches": "batch_id",
    "batch_facts": "batch_id, kind, digest",
    "essays": "essay_id",
    "phase_results": "essay_id, phase",
    "quarantine": 'topic, partition, "offset"',
    "consumer_positions": "topic, partition",
}
# Row identity and bookkeeping times, not projection: a rebuilt quarantine numbers its rows afresh.
VOLATILE = {"quarantine": ("id", "quarantined_at"), "consumer_positions": ("updated_at",)}
LIST_WITH_ESSAYS = "{ batches(first: 50) { totalCount nodes { id statusCode essays { totalCount } } } }"


def _stream(batches: int, seed: int) -> list[Message]:
    rng = random.Random(seed)
    messages: list[Message] = []
    for i in range(batches):
        gen = "gen1" if i % 3 == 0 else "gen2"
        messages += batch_life(rng, gen, f"teacher-{i % 4}", 6, 0.2, EPOCH)
    messages = with_resends(rng, messages, 0.1)
    # A record nobody can read: quarantined by the live consumer, and so by the rebuild.
    messages.append(Message(topics.SPELLCHECK_RESULTS, b"broken", b"{not json", EPOCH))
    return messages


async def _dump(engine: AsyncEngine) -> dict[str, list[dict[str, Any]]]:
    out = {}
    async with engine.connect() as conn:
        for table, order in TABLES.items():
            rows = await conn.execute(text(f"SELECT * FROM {table} ORDER BY {order}"))  # noqa: S608
            skip = VOLATILE.get(table, ())
            out[table] = [{k: v for k, v in r._mapping.items() if k not in skip} for r in rows]
    return out


async def _schemas(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        rows = await conn.execute(text("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'ras_%'"))
        return {r.nspname for r in rows}


@pytest.fixture
def settings(database_url: str, redis_url: str, prefix: str, kafka_bootstrap: str) -> Settings:
    return live_settings(database_url, redis_url, prefix, kafka_bootstrap_servers=kafka_bootstrap)


class Traffic:
    """GraphQL queries sent back to back (with the cache, as `ras serve` runs) until stopped; counts outcomes."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.answers = 0
        self.failures: list[str] = []
        self.totals: set[int] = set()
        self.seen: list[int] = []  # every answer's totalCount, in order
        self._stop = asyncio.Event()

    async def run(self) -> None:
        while not self._stop.is_set():
            response = await self.client.post("/graphql", json={"query": LIST_WITH_ESSAYS}, headers=AUTH)
            body = response.json()
            if response.status_code != 200 or "errors" in body:
                self.failures.append(response.text[:300])
            else:
                self.answers += 1
                self.totals.add(body["data"]["batches"]["totalCount"])
                self.seen.append(body["data"]["batches"]["totalCount"])
            await asyncio.sleep(0.005)

    def stop(self) -> None:
        self._stop.set()


@pytest.fixture
async def api(settings: Settings, engine: AsyncEngine) -> AsyncIterator[httpx.AsyncClient]:
    hub = EventHub.from_settings(settings)
    await hub.start()
    app = create_app(settings, engine, cache=QueryCache.from_settings(settings), events=hub)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ras.test") as client:
        yield client
    await hub.aclose()


async def test_rebuild_yields_identical_tables_while_the_api_serves_and_the_consumer_runs(
    settings: Settings, engine: AsyncEngine, api: httpx.AsyncClient, kafka_bootstrap: str, tmp_path: Path
) -> None:
    messages = _stream(24, seed=11)
    async with running_consumer(settings, engine):
        ends = await produce(kafka_bootstrap, messages)
        await wait_for_positions(engine, ends, timeout=60)
        before = await _dump(engine)
        assert len(before["batches"]) == 24 and len(before["quarantine"]) == 1
        redis = Redis.from_url(settings.redis_url)
        epoch = await redis.get(ck.CacheLayout(settings.cache_prefix).epoch)

        traffic = Traffic(api)
        querying = asyncio.create_task(traffic.run())
        rebuild = rebuild_process(process_env(settings), tmp_path / "rebuild.log", "--records-per-transaction", "20")
        code = await asyncio.to_thread(rebuild.proc.wait, 90)
        await asyncio.sleep(0.1)
        traffic.stop()
        await querying
        output = rebuild.output().replace("\r", "\n")
        assert code == 0, output[-3000:]
        assert "swapped in" in output and "rec/s" in output  # the progress bar, with its rate (and ETA)
        print(output.splitlines()[-1], f"| API answered {traffic.answers} queries meanwhile, 0 failed")

        assert traffic.failures == [] and traffic.answers > 10
        assert traffic.totals == {24}  # every answer, before, during and after the swap, saw the whole model
        assert await _dump(engine) == before
        assert await _schemas(engine) == set()  # shadow and old tables dropped
        assert await redis.get(ck.CacheLayout(settings.cache_prefix).epoch) != epoch  # every cached answer retired
        await redis.aclose()

        # The live consumer carries on into the new tables from the positions carried over.
        later = _stream(2, seed=12)[:-1]
        ends = {**ends, **await produce(kafka_bootstrap, later)}
        await wait_for_positions(engine, ends, timeout=30)
        after = await _dump(engine)
        assert len(after["batches"]) == 26


async def test_a_rebuild_killed_midway_leaves_the_live_projection_untouched_and_a_rerun_succeeds(
    settings: Settings, engine: AsyncEngine, kafka_bootstrap: str, tmp_path: Path
) -> None:
    ends = await produce(kafka_bootstrap, _stream(40, seed=21))
    total = sum(ends.values())
    async with running_consumer(settings, engine):
        await wait_for_positions(engine, ends, timeout=60)
    before = await _dump(engine)

    env = process_env(settings)
    # Small transactions, so there is a "midway" to kill it at.
    doomed = rebuild_process(env, tmp_path / "killed.log", "--records-per-transaction", "25")
    replayed = 0
    async with asyncio.timeout(60):
        while not 0 < replayed < total // 2:
            assert doomed.proc.poll() is None, doomed.output()[-2000:]
            replayed = await _shadow_progress(engine)
            await asyncio.sleep(0.005)
    doomed.proc.send_signal(signal.SIGKILL)
    await asyncio.to_thread(doomed.proc.wait, 10)
    doomed.kill()
    assert "swapped in" not in doomed.output()
    assert await _dump(engine) == before
    assert shadow.SHADOW_SCHEMA in await _schemas(engine)  # the half-filled shadow is left behind…

    rerun = rebuild_process(env, tmp_path / "rerun.log")
    code = await asyncio.to_thread(rerun.proc.wait, 90)
    assert code == 0, rerun.output()[-3000:]
    assert await _dump(engine) == before  # …and the next run starts over from scratch
    assert await _schemas(engine) == set()
    assert sum((await stored_positions(engine)).values()) == total


async def test_events_arriving_during_a_rebuild_end_up_in_the_new_tables(
    settings: Settings,
    engine: AsyncEngine,
    api: httpx.AsyncClient,
    kafka_bootstrap: str,
    postgres_server_url: str,
    template_database: str,
    tmp_path: Path,
) -> None:
    """The live consumer keeps applying while the shadow is filled, so at the swap it may be ahead: the rebuild
    reads on until it is not. Answers never go back in time across the swap."""
    first, second = _stream(20, seed=31), _stream(8, seed=32)[:-1]
    async with running_consumer(settings, engine):
        ends = await produce(kafka_bootstrap, first)
        await wait_for_positions(engine, ends, timeout=60)
        traffic = Traffic(api)
        querying = asyncio.create_task(traffic.run())
        rebuild = rebuild_process(process_env(settings), tmp_path / "rebuild.log", "--records-per-transaction", "20")
        async with asyncio.timeout(60):
            while await _shadow_progress(engine) == 0:
                await asyncio.sleep(0.01)
        ends = {**ends, **await produce(kafka_bootstrap, second)}  # while the rebuild replays
        code = await asyncio.to_thread(rebuild.proc.wait, 90)
        assert code == 0, rebuild.output()[-3000:]
        await wait_for_positions(engine, ends, timeout=60)
        await asyncio.sleep(0.1)
        traffic.stop()
        await querying
    assert traffic.failures == []
    assert traffic.seen == sorted(traffic.seen) and traffic.seen[-1] == 28  # never an older state

    name = f"ras_ref_{uuid.uuid4().hex[:10]}"
    url = await servers.create_database(postgres_server_url, name, template=template_database)
    reference = create_async_engine(url)
    try:
        await project(reference, first + second)  # the projection does not depend on delivery order
        expected, got = await _dump(reference), await _dump(engine)
        for table in ("batches", "batch_facts", "essays", "phase_results"):
            assert got[table] == expected[table], table
        assert len(got["quarantine"]) == 1
        assert {(p["topic"], p["partition"]): p["next_offset"] for p in got["consumer_positions"]} == ends
    finally:
        await reference.dispose()
        await servers.drop_database(postgres_server_url, name)


async def test_the_rebuild_reads_on_and_retries_when_the_swap_cannot_happen_yet(
    settings: Settings, engine: AsyncEngine, kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Locks busy, then the live consumer ahead: each time the rebuild goes back to reading, then tries again."""
    ends = await produce(kafka_bootstrap, _stream(3, seed=41))
    async with running_consumer(settings, engine):
        await wait_for_positions(engine, ends, timeout=30)
    before = await _dump(engine)
    real_swap, outcomes = shadow.swap, [{}, {("huleedu.batch.essays.registered.v1", 0): 1}]

    async def swap(live_engine: AsyncEngine, live: str) -> shadow.Positions | None:
        return outcomes.pop(0) if outcomes else await real_swap(live_engine, live)

    monkeypatch.setattr(shadow, "swap", swap)
    done = await rebuild(settings, progress=False)
    assert done.swap_attempts == 3 and outcomes == []
    assert await _dump(engine) == before


async def _shadow_progress(engine: AsyncEngine) -> int:
    try:
        async with engine.connect() as conn:
            found = await conn.scalar(
                text(f"SELECT coalesce(sum(next_offset), 0) FROM {shadow.SHADOW_SCHEMA}.consumer_positions")  # noqa: S608
            )
            return int(found or 0)
    except DBAPIError:
        return 0  # not created yet


async def test_the_swap_is_all_or_nothing(database_url: str, engine: AsyncEngine) -> None:
    """A failure after some tables moved (here: a shadow table missing) rolls every move back."""
    async with engine.begin() as conn:
        await conn.execute(text("INSERT INTO consumer_positions (topic, partition, next_offset) VALUES ('t', 0, 5)"))
        await shadow.reset(conn)
    await upgrade_async(database_url, schema=shadow.SHADOW_SCHEMA)
    async with engine.begin() as conn:
        insert = "INSERT INTO {}.consumer_positions (topic, partition, next_offset) VALUES ('t', 0, 5)"
        await conn.execute(text(insert.format(shadow.SHADOW_SCHEMA)))
        await conn.execute(text(f"DROP TABLE {shadow.SHADOW_SCHEMA}.quarantine"))
    with pytest.raises(DBAPIError):
        await shadow.swap(engine, "public")
    async with engine.connect() as conn:
        assert await conn.scalar(text("SELECT count(*) FROM public.consumer_positions")) == 1
        assert await conn.scalar(text("SELECT to_regclass('public.quarantine') IS NOT NULL")) is True
    assert shadow.OLD_SCHEMA not in await _schemas(engine)

    # Behind the live positions, it does not swap at all.
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE consumer_positions SET next_offset = 9"))
        await conn.execute(text(f"CREATE TABLE {shadow.SHADOW_SCHEMA}.quarantine (LIKE public.quarantine)"))
    assert await shadow.swap(engine, "public") == {("t", 0): 4}


def rebuild_process(env: dict[str, str], log: Path, *args: str) -> RasProcess:
    """`ras rebuild [args]` as a child process (RasProcess runs a bare command)."""
    process = RasProcess.__new__(RasProcess)
    process.log = log
    process._file = log.open("wb")
    process.proc = subprocess.Popen(
        [sys.executable, "-m", "ras.cli", "rebuild", *args],
        env={**os.environ, "RAS_LOG_LEVEL": "INFO", **env},
        stdout=process._file,
        stderr=subprocess.STDOUT,
    )
    return process


async def test_only_one_rebuild_runs_at_a_time(settings: Settings, engine: AsyncEngine) -> None:
    async with engine.connect() as other:
        await other.execute(text("SELECT pg_advisory_lock(:key)"), {"key": REBUILD_LOCK})
        with pytest.raises(RebuildError, match="another rebuild"):
            await rebuild(settings, progress=False)
    assert await _schemas(engine) == set()  # refused before touching anything
