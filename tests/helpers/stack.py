"""Real processes for the resilience scenarios (issue 8, part B): what each scenario starts, stops and measures.

The service runs exactly as in production, as `ras consume` and `ras serve` subprocesses
(tests/helpers/processes.py), against PostgreSQL, Redis and broker processes that a scenario owns when it means
to stop them (devstack/). Scenarios import what they use from here explicitly; part A owns the package's
conftest.py, so nothing here is a conftest fixture.

Every scenario ends with the same two proofs: the stored positions equal the produced end offsets (nothing skipped,
nothing beyond), and the tables equal a clean application of the same events in event order (`check_tables`).

One module (about 440 lines) for the scenarios' whole kit: each scenario imports a few pieces, and the pieces are
built on each other (the processes on the wiring, the proofs on the streams and the API calls).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from aiokafka import AIOKafkaProducer
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.live import EventHub
from app.main import create_app
from consumer.pure.topics import ALL_TOPICS, BATCH_ESSAYS_REGISTERED
from devstack.demo import EPOCH, Message, batch_life, with_resends
from devstack.kafka import KafkaProcess
from devstack.redis import RedisProcess
from devstack.topics import create_topics
from infra.settings import Settings
from tests.helpers.consumer import apply, as_records, dump, in_event_order, truncate
from tests.helpers.kafka_io import Offsets, stored_positions
from tests.helpers.processes import RasProcess, free_port, wait_for_status

API_KEY = "resilience-internal-key"
SERVICE_ID = "api-gateway-service"
AUTH = {"X-Internal-API-Key": API_KEY, "X-Service-ID": SERVICE_ID}
SESSION_TIMEOUT_MS = 6_000

BATCH_QUERY = """
query Batch($id: ID!) {
  batch(id: $id) {
    id userId statusCode clientStatus currentPhase essayCount completedEssayCount failedEssayCount
    createdAt lastUpdated processingStartedAt processingCompletedAt
    phaseOutcomes { phaseCode statusCode completedCount failedCount completedAt }
    essays(first: 100) {
      totalCount
      nodes { id filename spellcheck { statusCode correctionCount } cjAssessment { statusCode rank score } }
    }
  }
}
"""
LIST_QUERY = """
query List($userId: String, $first: Int) {
  batches(userId: $userId, first: $first) {
    totalCount
    nodes { id statusCode completedEssayCount failedEssayCount lastUpdated }
  }
}
"""


# --- streams ---------------------------------------------------------------------------------------------------


def _life(rng: random.Random, i: int, users: int, essays: tuple[int, int]) -> list[Message]:
    """Batch `i`: gen 1 for every third; some essays fail (all of them in some, which end `failed_critically`).
    Batches start a minute apart, so lists (newest first) have one defined order."""
    gen = "gen1" if i % 3 == 0 else "gen2"
    user = f"teacher-{i % users:02d}"
    fail_rate = rng.choice([0.0, 0.1, 0.3, 1.0])
    return batch_life(rng, gen, user, rng.randint(*essays), fail_rate, EPOCH + timedelta(minutes=i))


def batch_lives(count: int, seed: int, *, users: int = 7, essays: tuple[int, int] = (5, 30)) -> list[list[Message]]:
    """`count` complete batch lives of both contract generations, each in event-time order."""
    rng = random.Random(seed)
    return [_life(rng, i, users, essays) for i in range(count)]


def stream(events: int, seed: int, *, users: int = 7, resend_rate: float = 0.03) -> list[Message]:
    """At least `events` events: whole batch lives one after another, plus outbox re-sends of some of them."""
    rng = random.Random(seed)
    messages: list[Message] = []
    lives = 0
    while len(messages) < events:
        messages += _life(rng, lives, users, (5, 30))
        lives += 1
    return with_resends(rng, messages, resend_rate)


def batch_ids(messages: Sequence[Message]) -> list[str]:
    """Registered batch ids, in stream order."""
    return [json.loads(m.value)["data"]["entity_id"] for m in messages if m.topic == BATCH_ESSAYS_REGISTERED]


# --- producing -------------------------------------------------------------------------------------------------


class PacedProducer:
    """Produces a stream at a steady rate, keyed as the real producers key it, and records the end offsets."""

    def __init__(self, bootstrap: str) -> None:
        self._producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_request_size=8_388_608)
        self.ends: Offsets = {}
        self.sent = 0

    async def __aenter__(self) -> PacedProducer:
        await self._producer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._producer.stop()

    async def send(self, messages: Sequence[Message]) -> None:
        futures = [await self._producer.send(m.topic, m.value, key=m.key) for m in messages]
        for meta in await asyncio.gather(*futures):
            tp = (meta.topic, meta.partition)
            self.ends[tp] = max(self.ends.get(tp, 0), meta.offset + 1)
        self.sent += len(messages)

    async def send_to(self, placed: Sequence[tuple[Message, int]]) -> None:
        """Send each message to the partition given with it, whatever its key: a scenario that must reach every
        partition (so each one's position is announced again) cannot rely on keys hashing there."""
        futures = [await self._producer.send(m.topic, m.value, key=m.key, partition=p) for m, p in placed]
        for meta in await asyncio.gather(*futures):
            tp = (meta.topic, meta.partition)
            self.ends[tp] = max(self.ends.get(tp, 0), meta.offset + 1)
        self.sent += len(placed)

    async def paced(self, messages: Sequence[Message], rate: float, tick: float = 0.05) -> float:
        """Send `messages` at `rate` per second; returns the rate achieved. The schedule is absolute, so a late tick
        (a busy event loop) sends what fell due meanwhile instead of drifting."""
        started = time.monotonic()
        done = 0
        while done < len(messages):
            due = min(len(messages), int((time.monotonic() - started) * rate) + 1)
            if due > done:
                await self.send(messages[done:due])
                done = due
            await asyncio.sleep(tick)
        return len(messages) / max(time.monotonic() - started, 1e-9)


# --- servers the scenario owns ---------------------------------------------------------------------------------


@asynccontextmanager
async def owned_redis() -> AsyncIterator[RedisProcess]:
    server = RedisProcess()
    await asyncio.to_thread(server.start)
    try:
        yield server
    finally:
        if server.pid is not None:
            os.kill(server.pid, signal.SIGCONT)  # a scenario may end with it frozen; a stopped process ignores TERM
        await asyncio.to_thread(server.close)


@asynccontextmanager
async def owned_broker(partitions: int = 4) -> AsyncIterator[KafkaProcess]:
    server = KafkaProcess()
    await asyncio.to_thread(server.start)
    try:
        await create_topics(server.bootstrap, ALL_TOPICS, partitions)
        yield server
    finally:
        if server.pid is not None:
            os.kill(server.pid, signal.SIGCONT)
        await asyncio.to_thread(server.close)


def freeze(pid: int | None) -> None:
    """SIGSTOP: the server keeps its sockets and data but answers nothing, like a hung host or a network partition."""
    assert pid is not None, "server not running"
    os.kill(pid, signal.SIGSTOP)


def thaw(pid: int | None) -> None:
    assert pid is not None, "server not running"
    os.kill(pid, signal.SIGCONT)


# --- the service's processes -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Wiring:
    """What both service processes are pointed at. Without Redis, the cache and live updates are off."""

    database_url: str
    bootstrap: str
    redis_url: str | None = None
    # One private prefix for both processes: the session's shared Redis may serve other tests at the same time.
    cache_prefix: str = field(default_factory=lambda: f"ras-res-{uuid.uuid4().hex[:12]}")

    def env(self) -> dict[str, str]:
        cached = self.redis_url is not None
        env = {
            "RAS_DATABASE_URL": self.database_url,
            "RAS_KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "RAS_CACHE_ENABLED": str(cached).lower(),
            "RAS_LIVE_UPDATES_ENABLED": str(cached).lower(),
            "RAS_CACHE_PREFIX": self.cache_prefix,
            "RAS_INTERNAL_API_KEY": API_KEY,
            "RAS_HOST": "127.0.0.1",
            "RAS_STARTUP_TIMEOUT_SECONDS": "60",
            # A second, not the deployed 0.1 s: on a busy test machine a healthy Redis call can take longer than
            # that, and the cache would go without Redis where no outage was meant.
            "RAS_REDIS_TIMEOUT_SECONDS": "1",
        }
        if self.redis_url is not None:
            env["RAS_REDIS_URL"] = self.redis_url
        return env

    def with_cache(self, redis_url: str) -> Wiring:
        return Wiring(self.database_url, self.bootstrap, redis_url, self.cache_prefix)


class Consumer:
    """`ras consume` with its ops port; its log is kept in a file the scenario searches and parses."""

    def __init__(
        self,
        wiring: Wiring,
        log: Path,
        *,
        group: str | None = None,
        max_batch_records: int | None = None,
        log_level: str = "INFO",
    ) -> None:
        self.ops_port = free_port()
        self.group = group or f"resilience-{uuid.uuid4().hex[:8]}"
        env = {
            **wiring.env(),
            "RAS_KAFKA_GROUP_ID": self.group,
            "RAS_KAFKA_SESSION_TIMEOUT_MS": str(SESSION_TIMEOUT_MS),
            "RAS_CONSUMER_METRICS_PORT": str(self.ops_port),
            "RAS_LOG_LEVEL": log_level,
        }
        if max_batch_records is not None:
            env["RAS_KAFKA_MAX_BATCH_RECORDS"] = str(max_batch_records)
        self.started = time.monotonic()
        self.process = RasProcess("consume", env, log)

    @property
    def pid(self) -> int:
        return self.process.proc.pid

    @property
    def readyz(self) -> str:
        return f"http://127.0.0.1:{self.ops_port}/readyz"

    def alive(self) -> bool:
        return self.process.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no cleanup of any kind, the transaction in hand (if any) is lost with the process."""
        self.process.kill()

    async def stop(self) -> int:
        """SIGTERM: finish the transaction in hand, leave the group; returns the exit status."""
        return await self.process.stop(signal.SIGTERM)

    def log_events(self, event: str) -> list[dict[str, Any]]:
        """The JSON log lines (structlog) whose event starts with `event`, oldest first."""
        found = []
        for line in self.process.output().splitlines():
            if line.startswith("{") and event in line:
                entry = json.loads(line)
                if str(entry.get("event", "")).startswith(event):
                    found.append(entry)
        return found

    def assignments(self) -> list[int]:
        """How many partitions each assignment of this consumer's life gave it, in order."""
        return [int(e["partitions"]) for e in self.log_events("partitions assigned")]


class Api:
    """`ras serve` on a port of its own."""

    def __init__(self, wiring: Wiring, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = RasProcess(
            "serve", {**wiring.env(), "RAS_PORT": str(self.port), "RAS_LOG_LEVEL": "WARNING"}, log
        )

    @property
    def pid(self) -> int:
        return self.process.proc.pid

    async def ready(self, timeout: float = 120) -> None:
        await wait_for_status(self.url + "/readyz", 200, timeout)

    async def stop(self) -> None:
        """SIGTERM, and check the shutdown was graceful. uvicorn raises the signal again once it has drained the
        requests in flight, so a graceful exit reports SIGTERM rather than 0; a traceback in the log does not."""
        code = await self.process.stop(signal.SIGTERM)
        output = self.process.output()
        assert code in (0, -signal.SIGTERM) and "Traceback" not in output, f"exit {code}:\n{output[-3000:]}"

    def kill(self) -> None:
        self.process.kill()


def rss_mib(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / 1_048_576


# --- asking the API ----------------------------------------------------------------------------------------------


async def graphql(
    client: httpx.AsyncClient, query: str, variables: Mapping[str, Any] | None = None, user: str | None = None
) -> httpx.Response:
    headers = dict(AUTH)
    if user is not None:
        headers["X-User-ID"] = user
    return await client.post("/graphql", json={"query": query, "variables": dict(variables or {})}, headers=headers)


def cache_status(body: Mapping[str, Any]) -> str | None:
    status = body.get("extensions", {}).get("cache", {}).get("status")
    return str(status) if status is not None else None


@asynccontextmanager
async def reference_api(engine: AsyncEngine) -> AsyncIterator[httpx.AsyncClient]:
    """The same API in this process, without any cache, reading the scenario's database directly: what a correct
    answer is at this moment."""
    settings = Settings.model_validate(
        {
            "database_url": "postgresql+asyncpg://unused/unused",  # the app reads through `engine`
            "internal_api_key": API_KEY,
            "cache_enabled": False,
            "live_updates_enabled": False,
        }
    )
    app = create_app(settings, engine)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://reference") as client:
        yield client


# --- the two proofs ----------------------------------------------------------------------------------------------


async def until(what: str, check: Callable[[], bool], timeout: float) -> float:
    """Wait for `check()` to hold; returns how long it took. The timeout only turns a hang into a failure."""
    started = time.monotonic()
    try:
        async with asyncio.timeout(timeout):
            while not check():
                await asyncio.sleep(0.05)
    except TimeoutError:
        pytest.fail(f"not within {timeout:.0f}s: {what}")
    return time.monotonic() - started


async def committed(engine: AsyncEngine) -> int:
    """Records the projection has committed: the sum of the stored next offsets (every partition starts at 0)."""
    return sum((await stored_positions(engine)).values())


async def wait_for_ends(engine: AsyncEngine, ends: Offsets, timeout: float, *alive: Consumer) -> Offsets:
    """Poll the stored positions until every partition reaches its end; fail early if a consumer died."""
    async with asyncio.timeout(timeout):
        while True:
            positions = await stored_positions(engine)
            if all(positions.get(tp, 0) >= end for tp, end in ends.items()):
                return positions
            for consumer in alive:
                assert consumer.alive(), f"consumer exited:\n{consumer.process.output()[-3000:]}"
            await asyncio.sleep(0.05)


@asynccontextmanager
async def announcements(wiring: Wiring, redis_url: str) -> AsyncIterator[EventHub]:
    """The positions `ras consume` announces on the live-update channel, heard as an API process hears them.

    `redis_url` is Redis itself, where `wiring` may name a proxy a scenario cuts; the hub reconnects by itself after
    an outage. Subscribed before it is handed over, so no later announcement is missed."""
    settings = Settings(database_url=wiring.database_url, redis_url=redis_url, cache_prefix=wiring.cache_prefix)
    hub = EventHub.from_settings(settings)
    await hub.start()
    try:
        async with asyncio.timeout(60):
            await hub.listening.wait()
        yield hub
    finally:
        await hub.aclose()


async def wait_for_announced(hub: EventHub, ends: Offsets, timeout: float) -> None:
    """Wait until the consumer has announced the end positions `ends` of the partitions just produced to.

    It announces each commit's positions after evicting the cache entries the commit changed (`ras consume` chains
    the two, one commit after another), so once the last commit is announced no cached answer from before any of
    them can be served: the condition to wait for before asking the API, where a pause would only guess how long an
    eviction takes. Only the partitions produced to: a partition's position is announced by a commit that reads it,
    and one that is not read again keeps what an outage may have cost its last announcement."""
    behind: list[tuple[tuple[str, int], int | None, int]] = []
    try:
        async with asyncio.timeout(timeout):
            while behind := [
                (tp, hub.known_position(tp), end) for tp, end in ends.items() if (hub.known_position(tp) or 0) < end
            ]:
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(
            f"not announced within {timeout:.0f} s (partition, announced, end): {behind[:5]}"
        ) from None


async def check_tables(engine: AsyncEngine, messages: Sequence[Message]) -> dict[str, int]:
    """The projected tables equal a clean, in-order application of `messages`, row for row, and nothing was
    quarantined. Leaves the database holding the reference rows. Returns the row counts."""
    quarantined = (await dump(engine, ["quarantine"]))["quarantine"]
    assert quarantined == [], f"{len(quarantined)} records quarantined, first: {quarantined[0]}"
    projected = await dump(engine)
    await truncate(engine)
    await apply(engine, as_records(in_event_order(list(messages))))
    reference = await dump(engine)
    # A readable summary instead of pytest's diff of two lists of tens of thousands of rows.
    differences = []
    for table, rows in reference.items():
        got = projected[table]
        if got != rows:
            first = next(
                (i for i, (a, b) in enumerate(zip(got, rows, strict=False)) if a != b), min(len(got), len(rows))
            )
            sample = (got[first] if first < len(got) else None, rows[first] if first < len(rows) else None)
            differences.append(f"{table}: {len(got)} rows vs {len(rows)} in the reference; first difference {sample}")
    assert not differences, "\n".join(differences)
    return {table: len(rows) for table, rows in reference.items()}


async def duplicate_keys(engine: AsyncEngine) -> int:
    """Rows sharing a natural key (there are unique constraints, so anything but 0 means the schema lost one)."""
    keys = {
        "batches": "batch_id",
        "batch_facts": "batch_id, kind, digest",
        "essays": "essay_id",
        "phase_results": "essay_id, phase",
    }
    total = 0
    async with engine.connect() as conn:
        for table, key in keys.items():
            row = await conn.execute(text(f"SELECT count(*) - count(DISTINCT ({key})) FROM {table}"))  # noqa: S608
            total += int(row.scalar_one())
    return total
