"""Set-based writes of the projection: each table gets one statement per transaction, whatever the batch size.

Rows travel as one JSON array per statement, read back by `json_populate_recordset` with the table's own row type
(absent keys are NULL), so a statement has one parameter whatever its row count (asyncpg caps a statement at
32,767) and the encoding is one `orjson.dumps` call rather than a per-value encoder. Upserts only replace a row
with a newer fact (a registration: with an earlier one) — `(fact_at, digest)` compared as a pair, so ties resolve
the same way in every order — and report through `RETURNING` which batches they actually changed: an event that
changes nothing evicts nothing. The essay-level upserts also report, per batch, the span of essay activity they
wrote (`Activity`), so the batch's derived times can be advanced without reading its rows back (consumer/apply.py
says when that is exact).

SQL text is assembled from this module's own table and column names only; every value is a bound parameter.

One module (about 400 lines): every statement of the consumer's transaction, each short, sharing the row encoding
and the upsert rule above; the rule is checked in one place.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from operator import itemgetter
from typing import Any

import orjson
from sqlalchemy import Double, Table, text
from sqlalchemy.ext.asyncio import AsyncConnection

from db.tables import Base

TABLES = Base.metadata.tables

Row = dict[str, Any]


def _q(name: str) -> str:
    return f'"{name}"'


# Columns of PostgreSQL type float8, by table: see _non_finite_as_text.
_FLOAT_COLUMNS = {t.name: [c.name for c in t.columns if isinstance(c.type, Double)] for t in TABLES.values()}


def _non_finite_as_text(table: Table, rows: Sequence[Row]) -> Sequence[Row]:
    """orjson writes NaN and ±Infinity as null; a float8 column reads them from their names instead."""
    columns = _FLOAT_COLUMNS[table.name]
    if not columns:
        return rows
    out = list(rows)
    for i, row in enumerate(out):
        for c in columns:
            value = row.get(c)
            # Checked per value on every row written, so the common case (finite or absent) is kept cheap.
            if value.__class__ is float and not math.isfinite(value):
                out[i] = row = {**row, c: str(value)}
    return out


def _bytea(value: object) -> str:
    """orjson's fallback for bytes: PostgreSQL's hex input format of bytea."""
    if isinstance(value, bytes):
        return "\\x" + value.hex()
    raise TypeError(f"cannot send {type(value).__name__} to the database")


def _rows_param(rows: Sequence[Row]) -> str:
    # Integers reach here from orjson's parser, so they fit the 64 bits its writer handles.
    return orjson.dumps(rows, default=_bytea).decode()


def _from_rows(table: Table) -> str:
    """A row source of `table`'s row type from the JSON array bound as :rows; absent keys read as NULL."""
    return f"json_populate_recordset(NULL::{table.name}, CAST(:rows AS json))"


async def _upsert(
    conn: AsyncConnection,
    table: Table,
    rows: Sequence[Row],
    columns: Sequence[str],
    conflict: str,
    returning: str | None = None,
    where: str = "TRUE",
) -> set[Any]:
    """Insert those of `rows` that pass `where` (about source row `r`), setting their `columns` (other columns take
    their defaults); the distinct `returning` values of the rows actually inserted or updated."""
    if not rows:
        return set()
    rows = _non_finite_as_text(table, rows)
    names = ", ".join(map(_q, columns))
    sql = f"INSERT INTO {table.name} ({names}) SELECT {names} FROM {_from_rows(table)} AS r WHERE {where} {conflict}"
    if returning is not None:
        sql = f"WITH changed AS ({sql} RETURNING {returning}) SELECT DISTINCT {returning} FROM changed"
    result = await conn.execute(text(sql), {"rows": _rows_param(rows)})
    return set(result.scalars()) if returning is not None else set()


# Per batch: the earliest and latest essay activity a statement wrote (either may be None), and whether it replaced
# an earlier phase result (then the batch's earliest activity may have moved later: see consumer.apply).
Activity = dict[str, tuple[datetime | None, datetime | None, bool]]


async def _upsert_activity(
    conn: AsyncConnection,
    table: Table,
    rows: Sequence[Row],
    columns: Sequence[str],
    conflict: str,
    first_at: str,
    last_at: str,
    where: str = "TRUE",
) -> Activity:
    """Like `_upsert`, but reports the activity (SQL expressions over the written row) it wrote, per batch."""
    if not rows:
        return {}
    rows = _non_finite_as_text(table, rows)
    names = ", ".join(map(_q, columns))
    # xmax is set only on a row ON CONFLICT updated (it holds the row lock), never on one it inserted.
    sql = (
        f"WITH changed AS (INSERT INTO {table.name} ({names}) SELECT {names} FROM {_from_rows(table)} AS r"
        f" WHERE {where} {conflict} RETURNING batch_id, {first_at} AS first_at, {last_at} AS last_at,"
        f" xmax <> 0 AS replaced)"
        " SELECT batch_id, min(first_at) AS first_at, max(last_at) AS last_at, bool_or(replaced) AS replaced"
        " FROM changed WHERE batch_id IS NOT NULL GROUP BY batch_id"
    )
    result = await conn.execute(text(sql), {"rows": _rows_param(rows)})
    return {r.batch_id: (r.first_at, r.last_at, r.replaced) for r in result}


def newest_per_key(rows: Iterable[Row], key: Sequence[str], order: Sequence[str]) -> list[Row]:
    """One row per key, the greatest by `order` (the first seen if `order` is empty): a multi-row upsert may not
    touch the same row twice."""
    key_of = itemgetter(*key)
    order_of = itemgetter(*order) if order else None
    best: dict[Any, Row] = {}
    for row in rows:
        k = key_of(row)
        current = best.get(k)
        if current is None or (order_of is not None and order_of(row) > order_of(current)):
            best[k] = row
    return list(best.values())


def _assignments(columns: Iterable[str], skip: Iterable[str]) -> str:
    skipped = set(skip)
    return ", ".join(f"{_q(c)} = EXCLUDED.{_q(c)}" for c in columns if c not in skipped)


async def lock_batches(conn: AsyncConnection, batch_ids: Iterable[str]) -> None:
    """Serialise transactions that touch the same batch, so each recomputes aggregates over every committed fact.

    Locks are taken in one sorted pass, so two consumers never wait on each other in opposite orders.
    """
    keys = sorted(set(batch_ids))
    if keys:
        await conn.execute(
            text(
                "SELECT count(pg_advisory_xact_lock(k)) FROM "
                "(SELECT hashtextextended(b, 0) AS k FROM unnest(CAST(:ids AS text[])) AS b ORDER BY 1) AS s"
            ),
            {"ids": keys},
        )


@dataclass(frozen=True, slots=True)
class Registered:
    """What `upsert_registrations` did."""

    # Batches whose registration row was inserted or replaced.
    changed: set[str] = field(default_factory=set)
    # Registration digest → why it was refused: it names another owner than the batch's earliest registration.
    refused: dict[str, str] = field(default_factory=dict)
    # Batch id → the owner it was taken from: an earlier registration of another user arrived after a later one.
    taken_from: dict[str, str] = field(default_factory=dict)


def _registration_order(row: Row) -> tuple[datetime, str]:
    return row["created_at"], row["registration_digest"]


async def upsert_registrations(conn: AsyncConnection, rows: Sequence[Row], initial: Row) -> Registered:
    """Insert registrations; new rows start with the `initial` derived columns. The caller holds the batches'
    locks (`lock_batches`), so the stored registrations read here stay as read until the transaction ends.

    The earliest registration of a batch, by (producer time, digest), is the batch's: it decides the owner and the
    registered fields, and a later one changes nothing. So the rows are those of in-order delivery whatever the
    order: an earlier registration arriving late replaces a later one. A registration that loses to one naming
    another user is an owner change and is refused (the caller quarantines it with the reason): otherwise whoever
    produces a second registration for a batch would own it, essays and results included.
    """
    if not rows:
        return Registered()
    ids = sorted({row["batch_id"] for row in rows})
    stored = await conn.execute(
        text(
            "SELECT batch_id, user_id, created_at, registration_digest FROM batches"
            " WHERE batch_id = ANY(CAST(:ids AS text[]))"
        ),
        {"ids": ids},
    )
    current = {r.batch_id: dict(r._mapping) for r in stored}
    arriving: dict[str, list[Row]] = {}
    for row in rows:
        arriving.setdefault(row["batch_id"], []).append(row)
    out = Registered()
    winners = []
    for batch_id, candidates in arriving.items():
        first = min(candidates, key=_registration_order)
        held = current.get(batch_id)
        if held is None or _registration_order(first) < _registration_order(held):
            winners.append(first)
            if held is not None and held["user_id"] != first["user_id"]:
                out.taken_from[batch_id] = held["user_id"]
            held = first
        for row in candidates:
            if row["user_id"] != held["user_id"]:
                out.refused[row["registration_digest"]] = (
                    f"owner change refused: batch {batch_id} is registered to user {held['user_id']!r} by an earlier"
                    f" registration ({held['created_at'].isoformat()}); this one names user {row['user_id']!r}"
                )
    full = [{**initial, **row, "last_updated": row["created_at"]} for row in winners]
    updates = _assignments(winners[0] if winners else [], ["batch_id"])
    conflict = (
        f"ON CONFLICT (batch_id) DO UPDATE SET {updates} "
        "WHERE (batches.created_at, batches.registration_digest) > (EXCLUDED.created_at, EXCLUDED.registration_digest)"
    )
    columns = list(full[0]) if full else []
    out.changed.update(await _upsert(conn, TABLES["batches"], full, columns, conflict, "batch_id"))
    return out


async def insert_batch_facts(conn: AsyncConnection, rows: Sequence[Row]) -> set[str]:
    """Store batch facts once per payload; a re-send only moves `fact_at` back to the earliest copy."""
    key = ["batch_id", "kind", "digest"]
    reduced = newest_per_key(rows, key, [])
    earliest = {tuple(r[c] for c in key): r["fact_at"] for r in reduced}
    for row in rows:
        k = tuple(row[c] for c in key)
        earliest[k] = min(earliest[k], row["fact_at"])
    reduced = [{**r, "fact_at": earliest[tuple(r[c] for c in key)]} for r in reduced]
    conflict = (
        "ON CONFLICT (batch_id, kind, digest) DO UPDATE SET fact_at = EXCLUDED.fact_at "
        "WHERE EXCLUDED.fact_at < batch_facts.fact_at"
    )
    columns = ["batch_id", "kind", "digest", "fact_at", "body"]
    return await _upsert(conn, TABLES["batch_facts"], reduced, columns, conflict, "batch_id")


async def upsert_essay_slots(conn: AsyncConnection, rows: Sequence[Row]) -> Activity:
    """Insert or replace slot facts (newest wins); a replacement only moves `slot_fact_at` later."""
    rows = newest_per_key(rows, ["essay_id"], ["slot_fact_at", "slot_digest"])
    updates = _assignments(rows[0] if rows else [], ["essay_id"])
    conflict = (
        f"ON CONFLICT (essay_id) DO UPDATE SET {updates} WHERE essays.slot_fact_at IS NULL "
        "OR (essays.slot_fact_at, essays.slot_digest) < (EXCLUDED.slot_fact_at, EXCLUDED.slot_digest)"
    )
    columns = list(rows[0]) if rows else []
    activity = await _upsert_activity(
        conn, TABLES["essays"], rows, columns, conflict, "NULL::timestamptz", "slot_fact_at"
    )
    return {b: (first, last, False) for b, (first, last, _) in activity.items()}


async def link_essays(conn: AsyncConnection, rows: Sequence[Row]) -> Activity:
    """Create the essay row a result names, if no slot event has yet; fill in a missing batch id (the essay's slot
    time, if it has one, then joins its batch's activity)."""
    rows = newest_per_key(rows, ["essay_id"], ["batch_id"])
    conflict = (
        "ON CONFLICT (essay_id) DO UPDATE SET batch_id = EXCLUDED.batch_id "
        "WHERE essays.batch_id IS NULL AND EXCLUDED.batch_id IS NOT NULL"
    )
    # Most results name an essay that already has its batch: skip those before the upsert, which would lock each
    # (a WAL record per row) only to change nothing. A scalar subquery rather than NOT EXISTS: it is always one
    # primary-key probe per row, where an anti-join planned on a young table's statistics scanned all essays.
    known = "(SELECT e.batch_id FROM essays AS e WHERE e.essay_id = r.essay_id) IS NULL"
    activity = await _upsert_activity(
        conn, TABLES["essays"], rows, ["essay_id", "batch_id"], conflict, "NULL::timestamptz", "slot_fact_at", known
    )
    return {b: (first, last, False) for b, (first, last, _) in activity.items()}


PHASE_RESULT_COLUMNS = [c.name for c in TABLES["phase_results"].columns]


async def upsert_phase_results(conn: AsyncConnection, rows: Sequence[Row]) -> Activity:
    """Insert or replace results (newest wins). Activity: a result's start (else its time) and its time."""
    newest = newest_per_key(rows, ["essay_id", "phase"], ["fact_at", "digest"])
    updates = _assignments(PHASE_RESULT_COLUMNS, ["essay_id", "phase"])
    conflict = (
        f"ON CONFLICT (essay_id, phase) DO UPDATE SET {updates} "
        "WHERE (phase_results.fact_at, phase_results.digest) < (EXCLUDED.fact_at, EXCLUDED.digest)"
    )
    table = TABLES["phase_results"]
    return await _upsert_activity(
        conn, table, newest, PHASE_RESULT_COLUMNS, conflict, "coalesce(started_at, fact_at)", "fact_at"
    )


async def load_derivation_inputs(
    conn: AsyncConnection, batch_ids: Sequence[str]
) -> tuple[list[Row], list[Row], list[Row]]:
    """What the fold of the given batches needs: their registration fields, facts and per-batch essay activity."""
    ids = {"ids": list(batch_ids)}
    batches = await conn.execute(
        text(
            "SELECT batch_id, user_id, essay_count, created_at FROM batches WHERE batch_id = ANY(CAST(:ids AS text[]))"
        ),
        ids,
    )
    # Bodies come as text and are parsed with orjson, several times faster than the driver's stdlib decoder.
    facts = await conn.execute(
        text(
            "SELECT batch_id, kind, fact_at, digest, body::text AS body FROM batch_facts"
            " WHERE batch_id = ANY(CAST(:ids AS text[]))"
        ),
        ids,
    )
    activity = await conn.execute(
        text(
            "SELECT batch_id, min(first_at) AS first_at, max(last_at) AS last_at FROM ("
            " SELECT batch_id, min(coalesce(started_at, fact_at)) AS first_at, max(fact_at) AS last_at"
            " FROM phase_results WHERE batch_id = ANY(CAST(:ids AS text[])) GROUP BY batch_id"
            " UNION ALL"
            " SELECT batch_id, NULL, max(slot_fact_at) FROM essays"
            " WHERE batch_id = ANY(CAST(:ids AS text[])) GROUP BY batch_id"
            ") AS a GROUP BY batch_id"
        ),
        ids,
    )
    return (
        [dict(r._mapping) for r in batches],
        [{**r._mapping, "body": orjson.loads(r.body)} for r in facts],
        [dict(r._mapping) for r in activity],
    )


DERIVED_COLUMNS = [
    "status",
    "completed_essay_count",
    "failed_essay_count",
    "phase_stats",
    "completed_phases",
    "error_detail",
    "assignment_id",
    "processing_started_at",
    "processing_completed_at",
    "last_updated",
]


async def update_derived(conn: AsyncConnection, rows: Sequence[Row]) -> None:
    """Write recomputed derived columns of the batches in `rows` (each has `batch_id` + DERIVED_COLUMNS).

    A batch whose derived columns already hold these values is left alone (no new row version).
    """
    if not rows:
        return
    sets = ", ".join(f"{c} = d.{c}" for c in DERIVED_COLUMNS)
    current = ", ".join(f"batches.{c}" for c in DERIVED_COLUMNS)
    derived = ", ".join(f"d.{c}" for c in DERIVED_COLUMNS)
    sql = (
        f"UPDATE batches SET {sets} FROM {_from_rows(TABLES['batches'])} AS d"
        f" WHERE batches.batch_id = d.batch_id AND ({current}) IS DISTINCT FROM ({derived})"
    )
    await conn.execute(text(sql), {"rows": _rows_param(rows)})


async def advance_activity(conn: AsyncConnection, activity: Activity) -> set[str]:
    """Fold new essay activity into the derived times of existing batches; returns their owners' user ids.

    Only for activity that can move `processing_started_at` earlier and `last_updated` later, never the other way
    (rows added, times moved later): then the running minimum and maximum equal a fold over all the batch's rows.
    """
    if not activity:
        return set()
    rows = [
        {"batch_id": b, "processing_started_at": first, "last_updated": last}
        for b, (first, last, _) in activity.items()
    ]
    started = "LEAST(batches.processing_started_at, d.processing_started_at)"
    updated = "GREATEST(batches.last_updated, d.last_updated)"
    sql = (
        f"WITH d AS (SELECT batch_id, processing_started_at, last_updated FROM {_from_rows(TABLES['batches'])}),"
        f" advanced AS (UPDATE batches SET processing_started_at = {started}, last_updated = {updated} FROM d"
        " WHERE batches.batch_id = d.batch_id"
        f" AND (batches.processing_started_at, batches.last_updated) IS DISTINCT FROM ({started}, {updated}))"
        " SELECT DISTINCT user_id FROM batches JOIN d USING (batch_id)"
    )
    result = await conn.execute(text(sql), {"rows": _rows_param(rows)})
    return set(result.scalars())


async def store_positions(conn: AsyncConnection, rows: Sequence[Row]) -> None:
    """Advance stored positions; never move one backwards (a revoked partition's late commit cannot rewind)."""
    conflict = (
        "ON CONFLICT (topic, partition) DO UPDATE SET next_offset = GREATEST(consumer_positions.next_offset,"
        " EXCLUDED.next_offset), last_event_at = GREATEST(consumer_positions.last_event_at, EXCLUDED.last_event_at),"
        " high_watermark = GREATEST(consumer_positions.high_watermark, EXCLUDED.high_watermark),"
        " updated_at = now()"
    )
    columns = ["topic", "partition", "next_offset", "last_event_at", "high_watermark"]
    await _upsert(conn, TABLES["consumer_positions"], rows, columns, conflict)


async def quarantine(conn: AsyncConnection, rows: Sequence[Row]) -> None:
    conflict = 'ON CONFLICT (topic, partition, "offset") DO NOTHING'
    columns = ["topic", "partition", "offset", "key", "value", "error"]
    await _upsert(conn, TABLES["quarantine"], rows, columns, conflict)
