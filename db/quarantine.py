"""Reads and bookkeeping of quarantined records (written by db.writes.quarantine)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection


@dataclass(frozen=True, slots=True)
class QuarantinedRecord:
    id: int
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    error: str
    quarantined_at: datetime
    replayed_at: datetime | None


async def list_quarantined(
    conn: AsyncConnection, *, include_replayed: bool = False, topic: str | None = None, limit: int = 100
) -> list[QuarantinedRecord]:
    result = await conn.execute(
        text(
            'SELECT id, topic, partition, "offset", key, value, error, quarantined_at, replayed_at FROM quarantine '
            "WHERE (CAST(:all AS boolean) OR replayed_at IS NULL) AND (CAST(:topic AS text) IS NULL OR topic = :topic) "
            "ORDER BY id LIMIT :limit"
        ),
        {"all": include_replayed, "topic": topic, "limit": limit},
    )
    return [QuarantinedRecord(*row) for row in result]


async def mark_replayed(conn: AsyncConnection, ids: Sequence[int]) -> None:
    await conn.execute(
        text("UPDATE quarantine SET replayed_at = now() WHERE id = ANY(CAST(:ids AS int8[]))"), {"ids": list(ids)}
    )


async def record_failure(conn: AsyncConnection, record_id: int, error: str) -> None:
    await conn.execute(text("UPDATE quarantine SET error = :error WHERE id = :id"), {"error": error, "id": record_id})
