"""Applying fetches as delivered: records delivered again after their transaction committed are left out, not
applied twice (`Positions.LEAVE_OUT_APPLIED`)."""

from __future__ import annotations

import asyncio
import random

from sqlalchemy.ext.asyncio import AsyncEngine

from consumer.apply import Applied, Positions, apply_fetch
from consumer.pure.decode import Record
from consumer.pure.fetch import decode_fetch, next_offsets
from tests.helpers.consumer import MAX_BYTES, as_records, dump
from tests.helpers.scenario import EPOCH, batch_life


def stream(seed: int) -> list[Record]:
    rng = random.Random(seed)
    return as_records([m for i in range(4) for m in batch_life(rng, "gen2", f"teacher-{i}", 5, 0.0, EPOCH)])


async def deliver(engine: AsyncEngine, records: list[Record]) -> Applied:
    async with engine.begin() as conn:
        return await apply_fetch(conn, decode_fetch(records, MAX_BYTES), positions=Positions.LEAVE_OUT_APPLIED)


def handled(applied: Applied) -> int:
    return sum(applied.applied.values()) + sum(applied.ignored.values()) + sum(applied.quarantined.values())


async def test_a_batch_delivered_again_is_left_out(engine: AsyncEngine) -> None:
    records = stream(seed=1)
    first = await deliver(engine, records)
    tables = await dump(engine)
    again = await deliver(engine, records)
    assert handled(first) == len(records) and first.batch_ids
    assert again == Applied(), "nothing counted, evicted or announced"
    assert await dump(engine) == tables


async def test_an_overlapping_batch_applies_only_what_is_new(engine: AsyncEngine) -> None:
    records = stream(seed=2)
    half = len(records) // 2
    await deliver(engine, records[:half])
    # A batch fetched before a rebalance sought the partitions back: its first half was applied meanwhile.
    overlapping = await deliver(engine, records)
    assert handled(overlapping) == len(records) - half
    assert {(t, p): o for t, p, o in overlapping.positions} == next_offsets(records)


async def test_concurrent_transactions_over_one_partition_apply_each_record_once(engine: AsyncEngine) -> None:
    # Two consumers of a group during a rebalance may both hold the same records: the position lock makes the
    # second wait for the first and then leave them out.
    records = stream(seed=3)
    results = await asyncio.gather(deliver(engine, records), deliver(engine, records))
    assert sorted(handled(r) for r in results) == [0, len(records)]
