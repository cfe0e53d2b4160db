"""A rebalance wherever a fetch is: outstanding, decoding in the worker thread, in its transaction (consumer/intake.py).

Consumer A applies a stream in small fetches. A hook stops A once at one place; a second member, B, then joins the
group, and A goes on once the rebalance has reached it: completed while the fetch was outstanding or decoding, begun
(its revocation waiting) while the transaction was open. The group's Kafka offsets are never committed (as when those
informational commits fail), so after a rebalance the client starts at the log's beginning unless it is sought to the
stored positions. Both finish the stream, and every record is applied exactly once: positions end at the produced
ends, the tables equal a direct application, the records A's and B's transactions counted add up to the stream, and
no transaction had to leave out records applied before (the position lock, the net below the intake, was never
needed). Each scenario also checks the step that made it so, from the log events in their order: the fetch from
before the assignment is let go before A begins another transaction; the revocation waits for the open transaction.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import uuid
from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
import structlog
from aiokafka import AIOKafkaConsumer
from sqlalchemy.ext.asyncio import AsyncEngine

from consumer.apply import Applied, apply_fetch
from consumer.pure.decode import Record
from consumer.pure.fetch import DecodedFetch, decode_fetch
from consumer.runner import ConsumerLoop
from infra.settings import Settings
from tests.consumer.test_kafka import settings_for, stream
from tests.helpers.consumer import apply, as_records, dump, in_event_order, truncate
from tests.helpers.kafka_io import produce, stored_positions, wait_for_positions

pytestmark = pytest.mark.kafka
log = structlog.get_logger(__name__)
Events = list[MutableMapping[str, Any]]
# Hang guards only: what they guard takes seconds (a group join on the embedded broker).
GUARD_SECONDS = 60.0


@dataclass
class Hold:
    """One stop of consumer A, once armed: `reached` when A is there; A waits there until `released`."""

    armed: bool = False
    fired: bool = False
    reached: asyncio.Event = field(default_factory=asyncio.Event)
    released: threading.Event = field(default_factory=threading.Event)  # a worker thread may wait on it

    def fires(self) -> bool:
        if self.armed and not self.fired:
            self.fired = True
            return True
        return False

    async def wait_released(self) -> None:
        await asyncio.to_thread(self.released.wait, GUARD_SECONDS)


def hold_fetch(monkeypatch: pytest.MonkeyPatch, hold: Hold) -> None:
    """Stop inside the client's `getmany`, records fetched and not yet handed over."""
    getmany = AIOKafkaConsumer.getmany

    async def held(self: AIOKafkaConsumer, *partitions: Any, **options: Any) -> Any:
        batches = await getmany(self, *partitions, **options)
        if batches and hold.fires():
            hold.reached.set()
            await hold.wait_released()
        return batches

    monkeypatch.setattr(AIOKafkaConsumer, "getmany", held)


def hold_decode(monkeypatch: pytest.MonkeyPatch, hold: Hold) -> None:
    """Stop in the worker thread decoding a fetch."""
    loop = asyncio.get_running_loop()

    def held(records: Sequence[Record], max_bytes: int, traced: bool = False) -> DecodedFetch:
        if hold.fires():
            loop.call_soon_threadsafe(hold.reached.set)
            hold.released.wait(GUARD_SECONDS)
        return decode_fetch(records, max_bytes, traced)

    monkeypatch.setattr("consumer.intake.decode_fetch", held)


def mark_transactions(monkeypatch: pytest.MonkeyPatch, hold: Hold | None = None) -> None:
    """Log each transaction as it begins; with `hold`, stop in an open transaction before its first statement."""

    async def marked(*args: Any, **options: Any) -> Applied:
        held = hold is not None and hold.fires()
        if hold is not None and held:
            hold.reached.set()
            await hold.wait_released()
        log.info("test: transaction")
        applied = await apply_fetch(*args, **options)
        if held:
            log.info("test: held transaction written")
        return applied

    monkeypatch.setattr("consumer.runner.apply_fetch", marked)


@dataclass
class Member:
    """A consumer of the group, running, with what each of its transactions did; its log events carry its name."""

    loop: ConsumerLoop
    task: asyncio.Task[None]
    results: list[Applied]

    @classmethod
    def start(cls, name: str, settings: Settings, engine: AsyncEngine) -> Member:
        results: list[Applied] = []

        async def record(applied: Applied) -> None:
            results.append(applied)

        loop = ConsumerLoop(settings, engine, on_applied=record)
        context = contextvars.copy_context()
        context.run(structlog.contextvars.bind_contextvars, member=name)
        return cls(loop, asyncio.create_task(loop.run(), context=context), results)

    async def stop(self) -> None:
        self.loop.stop()
        await asyncio.wait_for(self.task, GUARD_SECONDS)


async def no_commit(self: AIOKafkaConsumer, offsets: Any = None) -> None:
    pass


async def until(check: Callable[[], bool]) -> None:
    async with asyncio.timeout(GUARD_SECONDS):
        while not check():
            await asyncio.sleep(0.02)


def handled(results: Sequence[Applied]) -> int:
    return sum(sum(r.applied.values()) + sum(r.ignored.values()) + sum(r.quarantined.values()) for r in results)


async def rebalance_at(
    hold: Hold, engine: AsyncEngine, database_url: str, bootstrap: str, reached_a: Callable[[ConsumerLoop, int], bool]
) -> Events:
    """Run the scenario and check that every record was applied once; returns the log events, in order.
    `reached_a(a, generation)` says when the rebalance has got as far as the scenario lets it while A is held
    (`generation`: A's when it stopped)."""
    messages = stream(30, seed=5)
    ends = await produce(bootstrap, messages)
    settings = settings_for(database_url, bootstrap).model_copy(
        update={"kafka_group_id": f"rebalance-{uuid.uuid4().hex[:8]}", "kafka_max_batch_records": 25}
    )
    members: list[Member] = []
    tagged = structlog.testing.capture_logs(processors=[structlog.contextvars.merge_contextvars])
    with pytest.MonkeyPatch.context() as patch, tagged as events:
        patch.setattr(AIOKafkaConsumer, "commit", no_commit)
        try:
            a = Member.start("A", settings, engine)
            members.append(a)
            await until(lambda: bool(a.results))  # A is applying the stream
            hold.armed = True
            await asyncio.wait_for(hold.reached.wait(), GUARD_SECONDS)
            generation = a.loop.intake.generation
            members.append(Member.start("B", settings, engine))
            await until(lambda: reached_a(a.loop, generation))
            log.info("test: released")
            hold.released.set()
            await wait_for_positions(engine, ends, GUARD_SECONDS)
        finally:
            hold.released.set()
            for member in members:
                await member.stop()
    assert await stored_positions(engine) == ends, "every partition's position is exactly its end"
    assert handled([r for m in members for r in m.results]) == len(messages), "each record counted once"
    assert [e for e in events if e["event"] == "records applied before left out"] == []
    via_broker = await dump(engine)
    await truncate(engine)
    await apply(engine, as_records(in_event_order(messages)))
    assert via_broker == await dump(engine), "nothing lost: the tables of a direct application"
    return events


def assigned_anew(a: ConsumerLoop, generation: int) -> bool:
    return a.intake.generation > generation and a.intake.settled


def first_of_a(events: Events, *names: str, after: str | None = None) -> str:
    """Which of the events `names` consumer A logs first (after the event `after`); a revocation of nothing (a
    member's first join) is not one."""
    start = next(i for i, e in enumerate(events) if e["event"] == after) if after else 0
    return next(
        str(e["event"])
        for e in events[start:]
        if e.get("member") == "A" and e["event"] in names and e.get("partitions") != []
    )


LET_GO = "fetch let go, to be read again from the stored positions"


@pytest.mark.parametrize("hold_at", [hold_fetch, hold_decode], ids=["fetch outstanding", "fetch decoding"])
async def test_a_rebalance_while_a_fetch_is_outstanding_or_decoding(
    engine: AsyncEngine,
    database_url: str,
    kafka_bootstrap: str,
    monkeypatch: pytest.MonkeyPatch,
    hold_at: Callable[[pytest.MonkeyPatch, Hold], None],
) -> None:
    hold = Hold()
    hold_at(monkeypatch, hold)
    mark_transactions(monkeypatch)
    events = await rebalance_at(hold, engine, database_url, kafka_bootstrap, assigned_anew)
    assert first_of_a(events, LET_GO, "test: transaction", after="test: released") == LET_GO


async def test_a_rebalance_while_a_transaction_is_open(
    engine: AsyncEngine, database_url: str, kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    hold = Hold()
    mark_transactions(monkeypatch, hold)

    def revoking(a: ConsumerLoop, generation: int) -> bool:
        return not a.intake.settled  # the revocation has begun

    events = await rebalance_at(hold, engine, database_url, kafka_bootstrap, revoking)
    held, revoked = "test: held transaction written", "partitions revoked"
    assert first_of_a(events, held, revoked) == held, "the revocation waited for the transaction"
