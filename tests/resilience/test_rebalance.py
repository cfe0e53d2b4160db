"""Rebalance: two `ras consume` instances share one group while events flow; one is SIGKILLed mid-stream.

The survivor must take over the dead member's partitions once its session expires, resume each at the position
stored with the rows (not Kafka's group offset), and finish the stream: positions equal the produced ends, the tables
equal a clean run's, nothing is quarantined or stored twice, and no partition's stored position ever moves back.
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.helpers import figures
from tests.helpers.kafka_io import Offsets, stored_positions
from tests.helpers.processes import wait_for_status
from tests.helpers.stack import (
    SESSION_TIMEOUT_MS,
    Consumer,
    PacedProducer,
    Wiring,
    check_tables,
    duplicate_keys,
    stream,
    until,
    wait_for_ends,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

EVENTS = 20_000
RATE = 1_000.0  # events/s: the stream lasts ~20 s, so it flows before, during and after the takeover
PARTITIONS = 32  # eight topics of four partitions (the kafka_bootstrap fixture)


class PositionWatch:
    """Samples the stored positions while the scenario runs and records any partition whose position went back."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._last: Offsets = {}
        self.samples = 0
        self.backwards: list[str] = []

    async def run(self) -> None:
        while True:
            positions = await stored_positions(self._engine)
            for tp, offset in positions.items():
                if offset < self._last.get(tp, 0):
                    self.backwards.append(f"{tp[0]}:{tp[1]} {self._last[tp]} -> {offset}")
            self._last = positions
            self.samples += 1
            await asyncio.sleep(0.1)


async def applied_events(consumer: Consumer) -> int:
    """Events this consumer process applied so far, from its own /metrics."""
    async with httpx.AsyncClient(timeout=5) as client:
        text = (await client.get(f"http://127.0.0.1:{consumer.ops_port}/metrics")).text
    return int(
        sum(
            sample.value
            for family in text_string_to_metric_families(text)
            if family.name == "ras_consumer_events"
            for sample in family.samples
            if sample.name == "ras_consumer_events_total"
        )
    )


async def test_a_killed_member_s_partitions_move_to_the_survivor_with_nothing_lost_or_doubled(
    engine: AsyncEngine, database_url: str, kafka_bootstrap: str, tmp_path: Path
) -> None:
    scenario = "rebalance"
    began = time.monotonic()
    messages = stream(EVENTS, seed=71)
    rng = random.Random(71)
    wiring = Wiring(database_url, kafka_bootstrap)
    group = f"rebalance-{rng.getrandbits(32):08x}"
    members = [Consumer(wiring, tmp_path / f"consume-{name}.log", group=group, max_batch_records=500) for name in "ab"]
    victim, survivor = rng.sample(members, 2)
    watch = PositionWatch(engine)
    watching = asyncio.create_task(watch.run())
    try:
        async with PacedProducer(kafka_bootstrap) as producer:
            sending = asyncio.create_task(producer.paced(messages, rate=RATE))

            def shared() -> bool:
                counts = [m.assignments() for m in members]
                return all(counts) and sum(c[-1] for c in counts) == PARTITIONS and all(c[-1] for c in counts)

            joined = await until("both members own partitions", shared, 60)
            for member in members:
                body = await wait_for_status(member.readyz, 200)
                assert body["assigned"] is True
            split = [m.assignments()[-1] for m in (victim, survivor)]
            # Once the victim is working on the stream, let both go on a while, then kill it in the middle of it.
            async with asyncio.timeout(120):
                while await applied_events(victim) == 0:
                    await asyncio.sleep(0.1)
            await asyncio.sleep(rng.uniform(2.0, 4.0))
            victim_applied = await applied_events(victim)
            assignments_before = len(survivor.assignments())
            victim.kill()
            killed = time.monotonic()
            sent_at_kill = producer.sent

            def taken_over() -> bool:
                counts = survivor.assignments()
                return len(counts) > assignments_before and counts[-1] == PARTITIONS

            # The session timeout plus a rejoin; the guard is ten times that.
            takeover = await until("the survivor owns every partition", taken_over, SESSION_TIMEOUT_MS / 1000 * 10 + 30)
            rate = await sending
            positions = await wait_for_ends(engine, producer.ends, 120, survivor)
            caught_up = time.monotonic() - killed
            survivor_applied = await applied_events(survivor)
        assert positions == producer.ends, "every partition ends exactly at its produced end"
        assert await survivor.stop() == 0
    finally:
        watching.cancel()
        await asyncio.gather(watching, return_exceptions=True)
        for member in members:
            member.kill()
    assert watch.backwards == [], "stored positions never move back"
    assert await duplicate_keys(engine) == 0
    counts = await check_tables(engine, messages)
    figures.report(
        scenario,
        events=len(messages),
        produce_rate=round(rate),
        joined_s=joined,
        split=split,
        sent_at_kill=sent_at_kill,
        victim_applied_before_kill=victim_applied,
        survivor_applied=survivor_applied,
        re_read=victim_applied + survivor_applied - len(messages),
        takeover_s=takeover,
        caught_up_after_kill_s=caught_up,
        position_samples=watch.samples,
        positions_backwards=len(watch.backwards),
        errors_seen=0,
        rows=counts,
        total_s=time.monotonic() - began,
    )
