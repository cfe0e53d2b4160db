"""Drive the projection directly against PostgreSQL, without a broker, and read back what it wrote."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from consumer.apply import Applied, apply_fetch
from consumer.pure.decode import Record
from consumer.pure.fetch import decode_fetch
from tests.helpers.scenario import Message

MAX_BYTES = 1_048_576
READ_MODEL = ("batches", "batch_facts", "essays", "phase_results")
_ORDER = {
    "batches": "batch_id",
    "batch_facts": "batch_id, kind, digest",
    "essays": "essay_id",
    "phase_results": "essay_id, phase",
    "quarantine": 'topic, partition, "offset"',
}


def as_records(messages: Sequence[Message | Record | tuple[str, bytes, bytes]]) -> list[Record]:
    """Records on partition 0 of each topic, offsets renumbered in the order given."""
    next_offset: dict[str, int] = defaultdict(int)
    records = []
    for m in messages:
        topic, key, value = m if isinstance(m, tuple) else (m.topic, m.key, m.value)
        records.append(Record(topic, 0, next_offset[topic], key, value))
        next_offset[topic] += 1
    return records


async def apply(engine: AsyncEngine, records: Sequence[Record], per_transaction: int | None = None) -> list[Applied]:
    size = per_transaction or max(1, len(records))
    results = []
    for start in range(0, len(records), size):
        async with engine.begin() as conn:
            results.append(await apply_fetch(conn, decode_fetch(records[start : start + size], MAX_BYTES)))
    return results


async def dump(engine: AsyncEngine, tables: Sequence[str] = READ_MODEL) -> dict[str, list[dict[str, Any]]]:
    out = {}
    async with engine.connect() as conn:
        for table in tables:
            rows = await conn.execute(text(f"SELECT * FROM {table} ORDER BY {_ORDER[table]}"))  # noqa: S608
            out[table] = [dict(r._mapping) for r in rows]
    return out


async def truncate(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(text("TRUNCATE batches, batch_facts, essays, phase_results, consumer_positions, quarantine"))


def in_event_order(messages: Sequence[Message]) -> list[Message]:
    """The reference delivery: every event in event-timestamp order."""
    return sorted(messages, key=lambda m: m.at)
