"""Reads of the consumer's stored positions (written by db.writes.store_positions)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

_POSITIONS = text(
    "SELECT topic, partition, next_offset FROM consumer_positions WHERE (topic, partition) IN"
    " (SELECT * FROM unnest(CAST(:topics AS text[]), CAST(:parts AS int4[])))"
)
# One statement locks every partition's row, in one order (so two transactions over overlapping partitions cannot
# deadlock), and reads its position: a partition without a row gets one at offset 0, which the locking transaction
# replaces with its real position before it commits, so that transactions over a partition new to the table
# serialize too. The no-op update is what takes the lock on an existing row.
_LOCK = text(
    "INSERT INTO consumer_positions (topic, partition, next_offset)"
    " SELECT topic, partition, 0 FROM unnest(CAST(:topics AS text[]), CAST(:parts AS int4[])) AS v(topic, partition)"
    " ORDER BY topic, partition"
    " ON CONFLICT (topic, partition) DO UPDATE SET next_offset = consumer_positions.next_offset"
    " RETURNING topic, partition, next_offset"
)


def _pairs(partitions: Iterable[tuple[str, int]]) -> dict[str, list[Any]]:
    pairs = sorted(set(partitions))
    return {"topics": [t for t, _ in pairs], "parts": [p for _, p in pairs]}


async def load_positions(conn: AsyncConnection, partitions: Iterable[tuple[str, int]]) -> dict[tuple[str, int], int]:
    """Next offset to read for each of `partitions` that has one stored."""
    pairs = _pairs(partitions)
    if not pairs["topics"]:
        return {}
    result = await conn.execute(_POSITIONS, pairs)
    return {(row.topic, row.partition): row.next_offset for row in result}


async def lock_positions(conn: AsyncConnection, partitions: Iterable[tuple[str, int]]) -> dict[tuple[str, int], int]:
    """Like `load_positions`, with the partitions' rows locked until the transaction ends; a partition without a
    stored position reads as offset 0."""
    pairs = _pairs(partitions)
    if not pairs["topics"]:
        return {}
    result = await conn.execute(_LOCK, pairs)
    return {(row.topic, row.partition): row.next_offset for row in result}


async def rewind_positions(conn: AsyncConnection, positions: dict[tuple[str, int], tuple[int, int]]) -> None:
    """Set each partition's next offset and high watermark, even backwards: for a log the broker lost and began
    anew (consumer.offsets). Everything else only advances positions (db.writes.store_positions)."""
    if not positions:
        return
    keys = sorted(positions)
    await conn.execute(
        text(
            "UPDATE consumer_positions p SET next_offset = v.next_offset, high_watermark = v.high_watermark,"
            " updated_at = now()"
            " FROM unnest(CAST(:topics AS text[]), CAST(:parts AS int4[]), CAST(:offsets AS int8[]),"
            " CAST(:marks AS int8[])) AS v(topic, partition, next_offset, high_watermark)"
            " WHERE p.topic = v.topic AND p.partition = v.partition"
        ),
        {
            "topics": [t for t, _ in keys],
            "parts": [p for _, p in keys],
            "offsets": [positions[k][0] for k in keys],
            "marks": [positions[k][1] for k in keys],
        },
    )
