"""Reads of the consumer's stored positions (written by db.writes.store_positions)."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection


async def load_positions(conn: AsyncConnection, partitions: Iterable[tuple[str, int]]) -> dict[tuple[str, int], int]:
    """Next offset to read for each of `partitions` that has one stored."""
    pairs = sorted(set(partitions))
    if not pairs:
        return {}
    result = await conn.execute(
        text(
            "SELECT topic, partition, next_offset FROM consumer_positions "
            "WHERE (topic, partition) IN (SELECT * FROM unnest(CAST(:topics AS text[]), CAST(:parts AS int4[])))"
        ),
        {"topics": [t for t, _ in pairs], "parts": [p for _, p in pairs]},
    )
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
