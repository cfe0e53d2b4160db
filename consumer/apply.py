"""Applying a decoded fetch: one database transaction holds its rows, its quarantined records and positions.

The transaction holds the rows, the quarantined records and the next offset of every partition the records came
from, so after a crash at any instant the stored positions say exactly which records the tables already reflect.
Records are decoded into rows first (consumer.pure.fetch, no I/O), so the transaction holds its locks only for
the database work. Nothing here talks to Kafka: the runner hands decoded fetches in, and so do the tools and tests.

`apply_fetch` is the one way in. `isolate_refused` wraps the caller's transactions around it for a fetch the
database refuses for the data in it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any, TypeVar

import structlog
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from consumer import metrics
from consumer.pure import topics
from consumer.pure.batch_state import BatchState, Fact, derive
from consumer.pure.fetch import DecodedFetch, Partition, Poison, refused_fetch
from consumer.pure.mapping import Rows
from db import writes
from db.errors import is_data_error
from db.positions import lock_positions

log = structlog.get_logger(__name__)
T = TypeVar("T")


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


OnApplied = Callable[[Applied], Awaitable[None]]


class Positions(Enum):
    """What applying a fetch does with the stored positions of the partitions its records came from."""

    # Records as the broker delivered them to a member of the group: a rebalance or another member may deliver
    # again what a transaction applied. Those records (below their partition's stored position) are left out, under
    # a lock on the positions, so a concurrent transaction over the same partitions waits and then sees this one's.
    LEAVE_OUT_APPLIED = "leave out applied"
    # Records applied as given (a rebuild's own replay, tests), positions advanced past them.
    ADVANCE = "advance"
    # Records behind the positions (a replay from quarantine), or a baseline that keeps its offsets elsewhere.
    UNTOUCHED = "untouched"


async def apply_fetch(
    conn: AsyncConnection,
    fetch: DecodedFetch,
    high_watermarks: dict[Partition, int] | None = None,
    positions: Positions = Positions.ADVANCE,
) -> Applied:
    """Write `fetch` (rows, quarantined records, positions as `positions` says) within the caller's open
    transaction on `conn`. `high_watermarks` (from the broker's fetch responses) is stored beside each position
    for lag reporting."""
    if positions is Positions.LEAVE_OUT_APPLIED:
        stored = await lock_positions(conn, fetch.next_offsets)
        new = [r for r in fetch.records if r.offset >= stored.get((r.topic, r.partition), 0)]
        if len(new) < len(fetch.records):
            log.info("records applied before left out", records=len(fetch.records) - len(new))
            if not new:
                return Applied()
            fetch = fetch.part(new)
    applied = await _write(conn, fetch)
    if positions is not Positions.UNTOUCHED:
        applied.positions = await _store_positions(conn, fetch, high_watermarks or {})
    return applied


async def isolate_refused(fetch: DecodedFetch, write: Callable[[DecodedFetch], Awaitable[T]]) -> list[T]:
    """`write(fetch)`, where `write` applies a fetch in a transaction of its own. If the database refuses the fetch
    for the data in it (a value beyond a column's range, say), it is halved until the one record is found, which
    is quarantined outright; every other record is applied. Returns each transaction's result, in order."""
    try:
        return [await write(fetch)]
    except DBAPIError as exc:
        if not is_data_error(exc):
            raise
        records = fetch.records
        if len(records) == 1:
            return [await write(refused_fetch(records, f"database rejected the record: {exc.orig}"))]
        middle = len(records) // 2
        first = await isolate_refused(fetch.part(records[:middle]), write)
        return first + await isolate_refused(fetch.part(records[middle:]), write)


async def _write(conn: AsyncConnection, fetch: DecodedFetch) -> Applied:
    """Write the rows and the quarantined records of `fetch`, without positions."""
    rows = fetch.rows
    await writes.lock_batches(conn, _batch_ids(rows))
    initial = {**BatchState().as_row(), "phase_stats": {}}
    registered = await writes.upsert_registrations(conn, rows.registrations, initial)
    refold = registered.changed | await writes.insert_batch_facts(conn, rows.batch_facts)
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
    user_ids |= set(registered.taken_from.values())  # their list views lost the batch
    refused = _owner_changes(fetch, registered)
    await _quarantine(conn, [*fetch.poison, *refused])
    counts = fetch.counts
    moved = Counter(p.record.topic for p in refused)
    return Applied(
        batch_ids=refold | activity.keys(),
        user_ids=user_ids,
        applied=counts.applied - moved,
        ignored=counts.ignored,
        quarantined=counts.quarantined + moved,
        newest_event_at=counts.newest_event_at,
    )


def _owner_changes(fetch: DecodedFetch, registered: writes.Registered) -> list[Poison]:
    """The records of the registrations refused as owner changes (db.writes.upsert_registrations says when), to be
    quarantined; logs the batches an earlier registration, arrived late, took from another user."""
    for batch_id, user_id in registered.taken_from.items():
        log.warning("batch taken from its owner by an earlier registration", batch_id=batch_id, from_user=user_id)
    metrics.OWNER_CHANGES.labels("taken_over").inc(len(registered.taken_from))
    if not registered.refused:
        return []
    refused = [
        Poison(record, registered.refused[row["registration_digest"]])
        for record in fetch.records
        if record.topic == topics.BATCH_ESSAYS_REGISTERED
        for row in fetch.part([record]).rows.registrations  # decoded again: only when a registration was refused
        if row["registration_digest"] in registered.refused
    ]
    metrics.OWNER_CHANGES.labels("refused").inc(len(refused))
    return refused


async def _quarantine(conn: AsyncConnection, poison: list[Poison]) -> None:
    for p in poison:
        # Logged as the row is written; a retried transaction logs it again.
        log.warning(
            "record quarantined",
            topic=p.record.topic,
            partition=p.record.partition,
            offset=p.record.offset,
            correlation_id=p.correlation_id,
            reason=p.reason[:300],
        )
    await writes.quarantine(conn, [_quarantine_row(p) for p in poison])


def _quarantine_row(poison: Poison) -> dict[str, Any]:
    record = poison.record
    return {
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "key": record.key,
        "value": record.value,
        "error": poison.reason,
    }


async def _store_positions(
    conn: AsyncConnection, fetch: DecodedFetch, high_watermarks: dict[Partition, int]
) -> list[tuple[str, int, int]]:
    rows = [
        {
            "topic": topic,
            "partition": partition,
            "next_offset": offset,
            "last_event_at": fetch.event_times.get((topic, partition)),
            "high_watermark": high_watermarks.get((topic, partition)),
        }
        for (topic, partition), offset in fetch.next_offsets.items()
    ]
    await writes.store_positions(conn, rows)
    return [(topic, partition, offset) for (topic, partition), offset in fetch.next_offsets.items()]


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
