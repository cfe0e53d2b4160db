"""Re-apply quarantined records, e.g. after a contract fix: `ras quarantine replay`.

Each record goes through the same decode → rows path as live traffic, in its own transaction, so one that
still fails does not hold back the others. It keeps its quarantine row either way (an audit trail): a record that
now applies is stamped `replayed_at`; one that still fails gets its new reason. Stored positions are untouched —
they only move forward and are already past every quarantined offset.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from consumer.apply import Applied, Positions, apply_fetch
from consumer.pure.decode import Record
from consumer.pure.fetch import decode_fetch
from db.errors import is_data_error
from db.quarantine import list_quarantined, mark_replayed, record_failure


@dataclass
class ReplayReport:
    replayed: list[int] = field(default_factory=list)
    still_failing: dict[int, str] = field(default_factory=dict)
    batch_ids: set[str] = field(default_factory=set)
    user_ids: set[str] = field(default_factory=set)


async def replay(engine: AsyncEngine, max_bytes: int, topic: str | None = None, limit: int = 1_000) -> ReplayReport:
    report = ReplayReport()
    async with engine.connect() as conn:
        pending = await list_quarantined(conn, topic=topic, limit=limit)
    for q in pending:
        fetch = decode_fetch([Record(q.topic, q.partition, q.offset, q.key, q.value)], max_bytes)
        async with engine.begin() as conn:
            if fetch.poison:
                [poison] = fetch.poison
                await record_failure(conn, q.id, poison.reason)
                report.still_failing[q.id] = poison.reason
                continue
            try:
                async with conn.begin_nested() as attempt:
                    applied: Applied = await apply_fetch(conn, fetch, positions=Positions.UNTOUCHED)
                    if applied.quarantined:
                        # Refused as it was written (a registration naming another owner than the batch's).
                        await attempt.rollback()
            except DBAPIError as exc:
                if not is_data_error(exc):
                    raise
                report.still_failing[q.id] = f"database rejected the record: {exc.orig}"
                await record_failure(conn, q.id, report.still_failing[q.id])
                continue
            if applied.quarantined:
                report.still_failing[q.id] = q.error
                continue
            await mark_replayed(conn, [q.id])
        report.replayed.append(q.id)
        report.batch_ids |= applied.batch_ids
        report.user_ids |= applied.user_ids
    return report
