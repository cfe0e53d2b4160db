"""One consumed batch of records → one database transaction.

The transaction holds the projection's rows, the quarantined records and the next offset of every partition the
batch came from, so after a crash at any instant the stored positions say exactly which records the tables
already reflect. Records are decoded into rows first (`project`, no I/O), so the transaction holds its locks only
for the database work. Nothing here talks to Kafka: the runner hands records in and the tests do the same.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection

from consumer.pure.batch_state import BatchState, Fact, derive
from consumer.pure.decode import PoisonMessage, Record, decode
from consumer.pure.mapping import Rows, rows_for
from db import writes
from db.positions import lock_positions

log = structlog.get_logger(__name__)


@dataclass
class Applied:
    """What one transaction did: the caller evicts caches for the changed batches and users' list views."""

    batch_ids: set[str] = field(default_factory=set)
    user_ids: set[str] = field(default_factory=set)
    applied: Counter[str] = field(default_factory=Counter)
    ignored: Counter[str] = field(default_factory=Counter)
    quarantined: Counter[str] = field(default_factory=Counter)
    newest_event_at: datetime | None = None
    # (topic, partition, next offset) the transaction committed: read-your-writes waits are answered from these.
    positions: list[tuple[str, int, int]] = field(default_factory=list)


def next_offsets(records: Sequence[Record]) -> dict[tuple[str, int], int]:
    """The offset after the last of `records` in each partition they came from."""
    offsets: dict[tuple[str, int], int] = {}
    for r in records:
        tp = (r.topic, r.partition)
        if r.offset >= offsets.get(tp, 0):
            offsets[tp] = r.offset + 1
    return offsets


def _positions(
    next_offsets: dict[tuple[str, int], int],
    event_times: dict[tuple[str, int], datetime],
    high_watermarks: dict[tuple[str, int], int],
) -> list[dict[str, Any]]:
    return [
        {
            "topic": t,
            "partition": p,
            "next_offset": o,
            "last_event_at": event_times.get((t, p)),
            "high_watermark": high_watermarks.get((t, p)),
        }
        for (t, p), o in next_offsets.items()
    ]


def _quarantine_row(record: Record, reason: str) -> dict[str, Any]:
    return {
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "key": record.key,
        "value": record.value,
        "error": reason,
    }


def _batch_ids(rows: Rows) -> set[str]:
    ids = {r["batch_id"] for group in (rows.registrations, rows.batch_facts) for r in group}
    for group in (rows.essay_slots, rows.essay_links, rows.phase_results):
        ids |= {r["batch_id"] for r in group}
    ids.discard(None)
    return ids


async def _rederive(conn: AsyncConnection, batch_ids: set[str]) -> set[str]:
    """Recompute derived columns of the given batches from their facts; returns their owners' user ids."""
    batches, facts, activity = await writes.load_derivation_inputs(conn, sorted(batch_ids))
    facts_by_batch: dict[str, list[Fact]] = {}
    for f in facts:
        facts_by_batch.setdefault(f["batch_id"], []).append(Fact(f["kind"], f["fact_at"], f["digest"], f["body"]))
    spans = {a["batch_id"]: (a["first_at"], a["last_at"]) for a in activity}
    states = []
    for batch in batches:
        first_at, last_at = spans.get(batch["batch_id"], (None, None))
        state = derive(
            batch["batch_id"],
            batch["essay_count"],
            batch["created_at"],
            facts_by_batch.get(batch["batch_id"], []),
            first_at,
            last_at,
        )
        states.append({"batch_id": batch["batch_id"], **state.as_row()})
    await writes.update_derived(conn, states)
    return {b["user_id"] for b in batches}


@dataclass
class Projection:
    """Records read and turned into rows, before any database work (see `project`)."""

    records: Sequence[Record]
    max_bytes: int
    # Per partition, the offset after its last record: the position the transaction stores.
    next_offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    rows: Rows = field(default_factory=Rows)
    poison: list[dict[str, Any]] = field(default_factory=list)
    counts: Applied = field(default_factory=Applied)
    event_times: dict[tuple[str, int], datetime] = field(default_factory=dict)


def project(records: Sequence[Record], max_bytes: int) -> Projection:
    """Decode `records` and build their rows; no I/O. A record that cannot be applied is set aside for quarantine."""
    out = Projection(records, max_bytes, next_offsets(records))
    for record in records:
        event = None
        try:
            event = decode(record, max_bytes)
            if event is None:
                out.counts.ignored[record.topic] += 1
                continue
            out.rows.extend(rows_for(event))
        except PoisonMessage as exc:
            correlation_id = exc.correlation_id or (event.envelope.correlation_id if event is not None else None)
            out.poison.append(_quarantine_row(record, str(exc)))
            out.counts.quarantined[record.topic] += 1
            # Logged when set aside; the row commits with the batch (a retried batch logs it again).
            log.warning(
                "record quarantined",
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
                correlation_id=correlation_id,
                reason=str(exc)[:300],
            )
            continue
        out.counts.applied[record.topic] += 1
        stamp = event.envelope.event_timestamp or event.record_time
        if stamp is not None:
            tp = (record.topic, record.partition)
            out.event_times[tp] = max(out.event_times.get(tp, stamp), stamp)
            out.counts.newest_event_at = max(out.counts.newest_event_at or stamp, stamp)
    return out


async def write_rows(conn: AsyncConnection, projection: Projection) -> Applied:
    """Write a projection's rows and quarantined records within the caller's open transaction, without positions."""
    rows = projection.rows
    await writes.lock_batches(conn, _batch_ids(rows))
    initial = {**BatchState().as_row(), "phase_stats": {}}
    refold = await writes.upsert_registrations(conn, rows.registrations, initial)
    refold |= await writes.insert_batch_facts(conn, rows.batch_facts)
    activity = _merge(
        await writes.upsert_essay_slots(conn, rows.essay_slots),
        await writes.link_essays(conn, rows.essay_links),
        await writes.upsert_phase_results(conn, rows.phase_results),
    )
    # A replaced result may have started later than the one it replaces, so the batch's earliest activity cannot
    # be advanced from what was written: it is folded again from all its rows, like a batch with new facts.
    refold |= {b for b, (_, _, replaced) in activity.items() if replaced}
    user_ids = await _rederive(conn, refold) if refold else set()
    user_ids |= await writes.advance_activity(conn, {b: a for b, a in activity.items() if b not in refold})
    await writes.quarantine(conn, projection.poison)
    return replace(projection.counts, batch_ids=refold | activity.keys(), user_ids=user_ids)


def _merge(*parts: writes.Activity) -> writes.Activity:
    """Several statements' activity as one, per batch: the earliest start, the latest time, any replacement."""
    merged: writes.Activity = {}
    for part in parts:
        for batch_id, (first, last, replaced) in part.items():
            if batch_id in merged:
                was_first, was_last, was_replaced = merged[batch_id]
                first = min((t for t in (first, was_first) if t is not None), default=None)
                last = max((t for t in (last, was_last) if t is not None), default=None)
                replaced |= was_replaced
            merged[batch_id] = (first, last, replaced)
    return merged


async def apply_projection(
    conn: AsyncConnection, projection: Projection, high_watermarks: dict[tuple[str, int], int] | None = None
) -> Applied:
    """Write a projection and store the positions after its records, within the caller's open transaction.

    `high_watermarks` (from the broker's fetch responses) is stored beside each position for lag reporting.
    """
    result = await write_rows(conn, projection)
    result.positions = await _store_positions(
        conn, projection.next_offsets, projection.event_times, high_watermarks or {}
    )
    return result


async def apply_delivered(
    conn: AsyncConnection, projection: Projection, high_watermarks: dict[tuple[str, int], int]
) -> Applied:
    """`apply_projection` for records as the broker delivered them, leaving out those an earlier transaction
    applied: offsets below their partition's stored position.

    Those come from a batch fetched before a rebalance sought its partitions back to the stored positions (the
    records are then delivered again), or from another consumer of the group during a rebalance. Their rows would
    be written again unchanged, but they would be counted, evicted and announced twice. The stored positions are
    locked first, so a concurrent transaction over the same partitions waits and then sees this one's positions.
    """
    stored = await lock_positions(conn, projection.next_offsets)
    if any(r.offset < stored.get((r.topic, r.partition), 0) for r in projection.records):
        new = [r for r in projection.records if r.offset >= stored.get((r.topic, r.partition), 0)]
        log.info("records applied before left out", records=len(projection.records) - len(new))
        if not new:
            return Applied()
        projection = project(new, projection.max_bytes)
    return await apply_projection(conn, projection, high_watermarks)


async def apply_records(
    conn: AsyncConnection,
    records: Sequence[Record],
    max_bytes: int,
    high_watermarks: dict[tuple[str, int], int] | None = None,
) -> Applied:
    """Project `records` and store the positions after them, within the caller's open transaction on `conn`."""
    return await apply_projection(conn, project(records, max_bytes), high_watermarks)


async def quarantine_records(
    conn: AsyncConnection, records: Sequence[Record], reason: str, high_watermarks: dict[tuple[str, int], int]
) -> Applied:
    """Quarantine `records` outright (the database refused them) and move past them."""
    await writes.quarantine(conn, [_quarantine_row(r, reason) for r in records])
    positions = await _store_positions(conn, next_offsets(records), {}, high_watermarks)
    return Applied(quarantined=Counter(r.topic for r in records), positions=positions)


async def _store_positions(
    conn: AsyncConnection,
    offsets: dict[tuple[str, int], int],
    event_times: dict[tuple[str, int], datetime],
    high_watermarks: dict[tuple[str, int], int],
) -> list[tuple[str, int, int]]:
    positions = _positions(offsets, event_times, high_watermarks)
    await writes.store_positions(conn, positions)
    return [(p["topic"], p["partition"], p["next_offset"]) for p in positions]
