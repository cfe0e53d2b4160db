"""Set-based writes of the projection: each table gets one statement per transaction, whatever the batch size.

Rows travel as one array per column through `unnest`, so a statement's parameter count does not grow with its
row count (asyncpg caps a statement at 32,767 parameters). Upserts only replace a row with a newer fact —
`(fact_at, digest)` compared as a pair, so ties resolve the same way in every order — and report through
`RETURNING` which rows they actually changed: an event that changes nothing evicts nothing.

SQL text is assembled from this module's own table and column names only; every value is a bound parameter.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import orjson
from sqlalchemy import BigInteger, DateTime, Double, Integer, LargeBinary, Table, Text, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncConnection

from db.tables import Base

TABLES = Base.metadata.tables

Row = dict[str, Any]

_ARRAY_TYPES: list[tuple[type, str]] = [
    (JSONB, "text"),  # sent as JSON text, cast back in the select list
    (BigInteger, "int8"),
    (Integer, "int4"),
    (Double, "float8"),
    (DateTime, "timestamptz"),
    (LargeBinary, "bytea"),
    (Text, "text"),
]


def _pg_type(table: Table, column: str) -> str:
    sql_type = table.c[column].type
    for python_type, name in _ARRAY_TYPES:
        if isinstance(sql_type, python_type):
            return name
    raise TypeError(f"no array type for {table.name}.{column}")


def _q(name: str) -> str:
    return f'"{name}"'


def _select_from_arrays(table: Table, columns: Sequence[str]) -> str:
    arrays = ", ".join(f"CAST(:{col} AS {_pg_type(table, col)}[])" for col in columns)
    outputs = ", ".join(
        f"u.{_q(col)}::jsonb" if isinstance(table.c[col].type, JSONB) else f"u.{_q(col)}" for col in columns
    )
    return f"SELECT {outputs} FROM unnest({arrays}) AS u({', '.join(map(_q, columns))})"


def _arrays(table: Table, columns: Sequence[str], rows: Sequence[Row]) -> dict[str, list[Any]]:
    params: dict[str, list[Any]] = {}
    for col in columns:
        values = [row.get(col) for row in rows]
        if isinstance(table.c[col].type, JSONB):
            values = [None if v is None else orjson.dumps(v).decode() for v in values]
        params[col] = values
    return params


async def _upsert(conn: AsyncConnection, table: Table, rows: Sequence[Row], conflict: str, returning: str) -> list[Any]:
    if not rows:
        return []
    columns = list(rows[0])
    sql = f"INSERT INTO {table.name} ({', '.join(map(_q, columns))}) {_select_from_arrays(table, columns)} {conflict}"
    result = await conn.execute(text(f"{sql} RETURNING {returning}"), _arrays(table, columns, rows))
    return list(result.all())


def newest_per_key(rows: Iterable[Row], key: Sequence[str], order: Sequence[str]) -> list[Row]:
    """One row per key, the greatest by `order`: a multi-row upsert may not touch the same row twice."""
    best: dict[tuple[Any, ...], Row] = {}
    for row in rows:
        k = tuple(row[c] for c in key)
        current = best.get(k)
        if current is None or tuple(row[c] for c in order) > tuple(current[c] for c in order):
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


async def upsert_registrations(conn: AsyncConnection, rows: Sequence[Row], initial: Row) -> set[str]:
    """Insert or replace registrations (newest fact wins); new rows start with the `initial` derived columns."""
    table = TABLES["batches"]
    rows = newest_per_key(rows, ["batch_id"], ["created_at", "registration_digest"])
    full = [{**initial, **row, "last_updated": row["created_at"]} for row in rows]
    updates = _assignments(rows[0] if rows else [], ["batch_id"])
    conflict = (
        f"ON CONFLICT (batch_id) DO UPDATE SET {updates} "
        "WHERE (batches.created_at, batches.registration_digest) < (EXCLUDED.created_at, EXCLUDED.registration_digest)"
    )
    return {r[0] for r in await _upsert(conn, table, full, conflict, "batch_id")}


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
    return {r[0] for r in await _upsert(conn, TABLES["batch_facts"], reduced, conflict, "batch_id")}


async def upsert_essay_slots(conn: AsyncConnection, rows: Sequence[Row]) -> set[str]:
    rows = newest_per_key(rows, ["essay_id"], ["slot_fact_at", "slot_digest"])
    updates = _assignments(rows[0] if rows else [], ["essay_id"])
    conflict = (
        f"ON CONFLICT (essay_id) DO UPDATE SET {updates} WHERE essays.slot_fact_at IS NULL "
        "OR (essays.slot_fact_at, essays.slot_digest) < (EXCLUDED.slot_fact_at, EXCLUDED.slot_digest)"
    )
    return {r[0] for r in await _upsert(conn, TABLES["essays"], rows, conflict, "batch_id")}


async def link_essays(conn: AsyncConnection, rows: Sequence[Row]) -> set[str]:
    """Create the essay row a result names, if no slot event has yet; fill in a missing batch id."""
    rows = newest_per_key(rows, ["essay_id"], ["batch_id"])
    conflict = (
        "ON CONFLICT (essay_id) DO UPDATE SET batch_id = EXCLUDED.batch_id "
        "WHERE essays.batch_id IS NULL AND EXCLUDED.batch_id IS NOT NULL"
    )
    return {r[0] for r in await _upsert(conn, TABLES["essays"], rows, conflict, "batch_id")}


PHASE_RESULT_COLUMNS = [c.name for c in TABLES["phase_results"].columns]


async def upsert_phase_results(conn: AsyncConnection, rows: Sequence[Row]) -> set[str]:
    full = [{col: row.get(col) for col in PHASE_RESULT_COLUMNS} for row in rows]
    full = newest_per_key(full, ["essay_id", "phase"], ["fact_at", "digest"])
    updates = _assignments(PHASE_RESULT_COLUMNS, ["essay_id", "phase"])
    conflict = (
        f"ON CONFLICT (essay_id, phase) DO UPDATE SET {updates} "
        "WHERE (phase_results.fact_at, phase_results.digest) < (EXCLUDED.fact_at, EXCLUDED.digest)"
    )
    return {r[0] for r in await _upsert(conn, TABLES["phase_results"], full, conflict, "batch_id")}


async def load_derivation_inputs(
    conn: AsyncConnection, batch_ids: Sequence[str]
) -> tuple[list[Row], list[Row], list[Row]]:
    """Registrations (with current derived columns), facts and per-batch essay activity of the given batches."""
    ids = {"ids": list(batch_ids)}
    batches = await conn.execute(text("SELECT * FROM batches WHERE batch_id = ANY(CAST(:ids AS text[]))"), ids)
    facts = await conn.execute(
        text(
            "SELECT batch_id, kind, fact_at, digest, body FROM batch_facts WHERE batch_id = ANY(CAST(:ids AS text[]))"
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
        [dict(r._mapping) for r in facts],
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
    """Write recomputed derived columns of the batches in `rows` (each has `batch_id` + DERIVED_COLUMNS)."""
    if not rows:
        return
    table = TABLES["batches"]
    columns = ["batch_id", *DERIVED_COLUMNS]
    sets = ", ".join(f"{c} = d.{c}" for c in DERIVED_COLUMNS)
    source = _select_from_arrays(table, columns)
    sql = f"UPDATE batches SET {sets} FROM ({source}) AS d WHERE batches.batch_id = d.batch_id"
    await conn.execute(text(sql), _arrays(table, columns, rows))


async def store_positions(conn: AsyncConnection, rows: Sequence[Row]) -> None:
    """Advance stored positions; never move one backwards (a revoked partition's late commit cannot rewind)."""
    conflict = (
        "ON CONFLICT (topic, partition) DO UPDATE SET next_offset = GREATEST(consumer_positions.next_offset,"
        " EXCLUDED.next_offset), last_event_at = GREATEST(consumer_positions.last_event_at, EXCLUDED.last_event_at),"
        " high_watermark = GREATEST(consumer_positions.high_watermark, EXCLUDED.high_watermark),"
        " updated_at = now()"
    )
    await _upsert(conn, TABLES["consumer_positions"], rows, conflict, "topic")


async def quarantine(conn: AsyncConnection, rows: Sequence[Row]) -> None:
    conflict = 'ON CONFLICT (topic, partition, "offset") DO NOTHING'
    await _upsert(conn, TABLES["quarantine"], rows, conflict, "id")
