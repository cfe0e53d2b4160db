"""Crash: SIGKILL the real `ras consume` at random points of a 50,000-event stream, again and again.

Every restart must resume exactly where the last committed transaction left off: the final positions equal the
produced end offsets for every partition (none skipped, none beyond) and the tables equal a clean run's, row for row.
The kill points are drawn across the whole stream before it starts, so they land early, late and in between; each
run is killed a random few milliseconds after it passed its point, which with 500-record transactions falls both
inside a transaction (lost with the process, to be re-read) and between two.
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.helpers import figures
from tests.helpers.kafka_io import produce
from tests.helpers.stack import Consumer, Wiring, check_tables, committed, stream, wait_for_ends

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

EVENTS = 50_000
KILLS = 10
BATCH_RECORDS = 500
SCENARIO = "crash"


async def run_until(engine: AsyncEngine, consumer: Consumer, target: int, timeout: float = 90) -> int:
    """Wait until the committed count reaches `target`, polling fast enough to kill within one transaction."""
    async with asyncio.timeout(timeout):
        while (count := await committed(engine)) < target:
            assert consumer.alive(), f"consumer exited:\n{consumer.process.output()[-3000:]}"
            await asyncio.sleep(0.01)
    return count


async def open_transactions(engine: AsyncEngine) -> int:
    """Transactions open in this database on other connections than ours: the consumer's, when it is applying."""
    async with engine.connect() as conn:
        row = await conn.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND pid <> pg_backend_pid() AND xact_start IS NOT NULL"
            )
        )
        return int(row.scalar_one())


async def test_sigkill_across_a_long_stream_loses_nothing_and_skips_no_offset(
    engine: AsyncEngine, database_url: str, kafka_bootstrap: str, tmp_path: Path
) -> None:
    began = time.monotonic()
    messages = stream(EVENTS, seed=8)
    ends = await produce(kafka_bootstrap, messages)
    total = sum(ends.values())
    assert total == len(messages) >= EVENTS
    figures.report(SCENARIO, events=total, partitions=len(ends), produced_in_s=time.monotonic() - began)

    rng = random.Random(88)
    # Kill points spread over the first 85% of the stream, so the last run still has work left to prove recovery.
    points = sorted(rng.sample(range(1, int(total * 0.85)), KILLS))
    wiring = Wiring(database_url, kafka_bootstrap)
    progress = 0
    kills_inside = 0
    for kill, point in enumerate(points, start=1):
        # A fresh group each run: positions live in the database, and the dead member's session need not expire.
        consumer = Consumer(wiring, tmp_path / f"consume-{kill}.log", max_batch_records=BATCH_RECORDS)
        try:
            # Each run must commit something of its own, even when the last one overshot this point.
            reached = await run_until(engine, consumer, max(point, progress + 1))
            delay = rng.uniform(0.0, 0.08)
            await asyncio.sleep(delay)
            # Looked at just before the kill: whether it lands inside a transaction (which must then leave no trace).
            inside = await open_transactions(engine) > 0
            kills_inside += inside
        finally:
            consumer.kill()
        before, progress = progress, await committed(engine)
        figures.report(
            SCENARIO,
            kill=kill,
            point=point,
            seen=reached,
            committed=progress,
            run_applied=progress - before,
            delay_ms=round(delay * 1000),
            in_transaction=inside,
            run_s=time.monotonic() - consumer.started,
        )
        assert progress < total, "the stream ended before this kill; it landed after the work, not in it"

    consumer = Consumer(wiring, tmp_path / "consume-final.log", max_batch_records=BATCH_RECORDS)
    restarted = time.monotonic()
    try:
        positions = await wait_for_ends(engine, ends, 180, consumer)
        recovery = time.monotonic() - restarted
        assert await consumer.stop() == 0, "graceful stop on SIGTERM"
    finally:
        consumer.kill()
    assert positions == ends, "every partition ends exactly at its produced end: no offset skipped or overshot"

    counts = await check_tables(engine, messages)
    figures.report(
        SCENARIO,
        events=total,
        kills=KILLS,
        kills_inside_a_transaction=kills_inside,
        committed_before_final_run=progress,
        final_run_s=recovery,
        errors_seen=0,
        rows=counts,
        total_s=time.monotonic() - began,
    )
