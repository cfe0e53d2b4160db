"""SIGKILL the real `ras consume` process mid-stream, again and again: the tables end as an uninterrupted run's."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
import uuid

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.consumer.test_kafka import stream
from tests.helpers.consumer import apply, as_records, dump, in_event_order, truncate
from tests.helpers.kafka_io import produce, stored_positions, wait_for_positions

pytestmark = pytest.mark.kafka

KILLS = 5


def start_consumer(database_url: str, bootstrap: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "RAS_DATABASE_URL": database_url,
        "RAS_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        # A fresh group each time: positions come from the database, and the killed member's session need not expire.
        "RAS_KAFKA_GROUP_ID": f"crash-{uuid.uuid4().hex[:8]}",
        "RAS_KAFKA_SESSION_TIMEOUT_MS": "6000",
        "RAS_KAFKA_MAX_BATCH_RECORDS": "300",
        "RAS_LOG_LEVEL": "WARNING",
    }
    return subprocess.Popen([sys.executable, "-m", "ras.cli", "consume"], env=env, stdin=subprocess.DEVNULL)


async def applied_count(engine: AsyncEngine) -> int:
    return sum((await stored_positions(engine)).values())


async def wait_for_progress(engine: AsyncEngine, beyond: int, proc: subprocess.Popen[bytes]) -> int:
    async with asyncio.timeout(60):
        while (count := await applied_count(engine)) <= beyond:
            assert proc.poll() is None, f"consumer exited with {proc.returncode}"
            await asyncio.sleep(0.02)
    return count


async def test_sigkill_mid_stream_loses_nothing_and_applies_nothing_twice(
    engine: AsyncEngine, database_url: str, kafka_bootstrap: str
) -> None:
    messages = stream(1000, seed=7)
    ends = await produce(kafka_bootstrap, messages)
    total = sum(ends.values())
    rng = random.Random(11)
    kills = 0
    progress = 0
    while kills < KILLS:
        proc = start_consumer(database_url, kafka_bootstrap)
        try:
            progress = await wait_for_progress(engine, progress, proc)
            await asyncio.sleep(rng.uniform(0.0, 0.2))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        kills += 1
        progress = await applied_count(engine)
        print(f"kill {kills}: {progress}/{total} records committed")
        if progress >= total:
            pytest.fail("stream finished before all kills happened; make it longer")

    proc = start_consumer(database_url, kafka_bootstrap)
    started = time.monotonic()
    try:
        positions = await wait_for_positions(engine, ends, timeout=120)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, "graceful stop on SIGTERM"
    print(f"{total} records, {kills} kills, final run finished in {time.monotonic() - started:.1f}s")
    assert positions == ends, "no offset skipped or overshot"
    after_crashes = await dump(engine)
    assert (await dump(engine, ["quarantine"]))["quarantine"] == []

    await truncate(engine)
    await apply(engine, as_records(in_event_order(messages)))
    assert after_crashes == await dump(engine)
