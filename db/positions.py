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
