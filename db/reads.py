"""Every query the read APIs run, each set-based: one statement answers any number of ids.

Results come back as the rows of db/rows.py. JSON columns are parsed here into typed parts (error details, phase
outcomes, the prompt reference) and also kept raw for callers that return them as stored. The filters a list view
passes in (`BatchQuery`, `StatusMatch`, `PhaseFilter`, `BatchCursor`) are defined here, beside the conditions they
become.

Id lists travel as one array parameter (`= ANY(:ids)`), so the statement text and its parameter count stay the same
whatever the number of ids.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ARRAY,
    ColumnElement,
    Row,
    Select,
    Text,
    and_,
    any_,
    bindparam,
    false,
    func,
    or_,
    select,
    true,
    tuple_,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from db.rows import (
    BatchRow,
    ErrorDetail,
    EssayRow,
    Json,
    Page,
    PhaseOutcome,
    PhaseProgress,
    PhaseResultRow,
    PositionRow,
    PositionsView,
    StorageRef,
)
from db.tables import Base

_BATCHES = Base.metadata.tables["batches"]
_ESSAYS = Base.metadata.tables["essays"]
_RESULTS = Base.metadata.tables["phase_results"]
_POSITIONS = Base.metadata.tables["consumer_positions"]
_QUARANTINE = Base.metadata.tables["quarantine"]

TERMINAL_STAGES = ("completed", "failed", "cancelled")


# --- filters --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StatusMatch:
    """Stored status values to match: `values`, plus (with `unknown`) every value outside `known`."""

    values: frozenset[str]
    unknown: bool = False
    known: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class BatchQuery:
    """Which batches a list view shows: None means "no condition"; a batch must match every status match."""

    user_id: str | None = None
    statuses: tuple[StatusMatch, ...] = ()
    assignment_id: str | None = None


@dataclass(frozen=True, slots=True)
class BatchCursor:
    created_at: datetime
    batch_id: str


@dataclass(frozen=True, slots=True)
class PhaseFilter:
    """Essays whose result for `phase` matches `statuses`, or that have no result yet when `missing`."""

    phase: str
    statuses: StatusMatch
    missing: bool = False


# --- parsing of JSON columns ------------------------------------------------------------------------------------------


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _instant(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    try:
        return datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None


def error_detail(raw: Json | None) -> ErrorDetail | None:
    if not isinstance(raw, dict):
        return None
    return ErrorDetail(
        error_code=_text(raw.get("error_code")),
        message=_text(raw.get("message")),
        correlation_id=_text(raw.get("correlation_id")),
        timestamp=_instant(raw.get("timestamp")),
        service=_text(raw.get("service")),
        operation=_text(raw.get("operation")),
        details=raw.get("details"),
        stack_trace=_text(raw.get("stack_trace")),
        trace_id=_text(raw.get("trace_id")),
        span_id=_text(raw.get("span_id")),
    )


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def phase_outcomes(phase_stats: Json | None) -> tuple[PhaseOutcome, ...]:
    outcomes = []
    for phase, stats in (phase_stats or {}).items():
        if isinstance(stats, dict):
            outcomes.append(
                PhaseOutcome(
                    phase=phase,
                    status=str(stats.get("status", "")),
                    completed_count=_count(stats.get("completed_count")),
                    failed_count=_count(stats.get("failed_count")),
                    completed_at=_instant(stats.get("completed_at")),
                )
            )
    return tuple(sorted(outcomes, key=lambda o: (o.completed_at is None, o.completed_at or datetime.min, o.phase)))


def prompt_reference(raw: Json | None) -> StorageRef | None:
    """The student prompt's storage reference: the `student_prompt_text` entry, else the first one."""
    references = raw.get("references") if isinstance(raw, dict) else None
    if not isinstance(references, dict) or not references:
        return None
    content_type = "student_prompt_text" if "student_prompt_text" in references else next(iter(references))
    entry = references[content_type]
    if not isinstance(entry, dict) or not entry:
        return None
    # Like the consumer's `first_id`: the helper writes storage_id first, gen 1 writes {"default": id}.
    storage_id = entry.get("storage_id", next(iter(entry.values())))
    return StorageRef(content_type, str(storage_id), _text(entry.get("path")) or None)


# --- statements -----------------------------------------------------------------------------------------------------


def _ids(name: str) -> Any:
    return any_(bindparam(name, type_=ARRAY(Text)))


def _columns(table: Any, row_type: type) -> list[Any]:
    """The table's columns in the row dataclass's field order, so rows can be built positionally (fast)."""
    return [table.c[f.name] for f in fields(row_type) if f.name in table.c]


_BATCH_COLUMNS = _columns(_BATCHES, BatchRow)
_ESSAY_COLUMNS = _columns(_ESSAYS, EssayRow)
_RESULT_COLUMNS = _columns(_RESULTS, PhaseResultRow)
_POSITION_COLUMNS = _columns(_POSITIONS, PositionRow)

# Rows are built positionally from those columns plus keyword-only parsed parts; typed loosely for that reason.
_new_batch: Callable[..., BatchRow] = BatchRow
_new_essay: Callable[..., EssayRow] = EssayRow
_new_result: Callable[..., PhaseResultRow] = PhaseResultRow


def _batch(row: Row[Any]) -> BatchRow:
    # Parsed parts are derived once per row here rather than on every field access.
    return _new_batch(
        *row,
        error=error_detail(row.error_detail),
        phase_outcomes=phase_outcomes(row.phase_stats),
        student_prompt=prompt_reference(row.student_prompt_ref),
    )


def _status_condition(column: Any, match: StatusMatch) -> ColumnElement[bool]:
    condition: ColumnElement[bool] = column.in_(sorted(match.values)) if match.values else false()
    if match.unknown:
        # With nothing known, "unknown" means any value; still not NULL, which is "no row" after an outer join.
        condition = or_(condition, column.not_in(sorted(match.known)) if match.known else column.is_not(None))
    return condition


def _batch_conditions(query: BatchQuery) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if query.user_id is not None:
        conditions.append(_BATCHES.c.user_id == query.user_id)
    conditions.extend(_status_condition(_BATCHES.c.status, match) for match in query.statuses)
    if query.assignment_id is not None:
        conditions.append(_BATCHES.c.assignment_id == query.assignment_id)
    return conditions


async def batches_by_id(conn: AsyncConnection, batch_ids: Sequence[str], user_id: str | None) -> dict[str, BatchRow]:
    """The batches with the given ids; with `user_id`, only those that user owns."""
    stmt = select(*_BATCH_COLUMNS).where(_BATCHES.c.batch_id == _ids("ids"))
    if user_id is not None:
        stmt = stmt.where(_BATCHES.c.user_id == user_id)
    result = await conn.execute(stmt, {"ids": list(batch_ids)})
    return {row.batch_id: _batch(row) for row in result}


async def batch_page(conn: AsyncConnection, query: BatchQuery, first: int, after: BatchCursor | None) -> Page[BatchRow]:
    """Up to `first` batches matching `query`, newest first, strictly after the `after` cursor."""
    order = (_BATCHES.c.created_at, _BATCHES.c.batch_id)
    stmt = select(*_BATCH_COLUMNS).where(*_batch_conditions(query))
    if after is not None:
        stmt = stmt.where(tuple_(*order) < tuple_(after.created_at, after.batch_id))
    stmt = stmt.order_by(*(c.desc() for c in order)).limit(first + 1)
    rows = [_batch(row) for row in await conn.execute(stmt)]
    return Page(rows[:first], len(rows) > first)


async def batch_slice(conn: AsyncConnection, query: BatchQuery, limit: int, offset: int) -> list[BatchRow]:
    """Up to `limit` batches matching `query`, newest first, after skipping `offset` of them.

    The REST shim's offset pagination (its callers send `limit`/`offset`); same order as `batch_page`.
    """
    order = (_BATCHES.c.created_at.desc(), _BATCHES.c.batch_id.desc())
    stmt = select(*_BATCH_COLUMNS).where(*_batch_conditions(query)).order_by(*order).limit(limit).offset(offset)
    return [_batch(row) for row in await conn.execute(stmt)]


async def count_batches(conn: AsyncConnection, query: BatchQuery) -> int:
    stmt = select(func.count()).select_from(_BATCHES).where(*_batch_conditions(query))
    return int((await conn.execute(stmt)).scalar_one())


def _essay_source(phase_filter: PhaseFilter | None) -> tuple[Any, list[ColumnElement[bool]]]:
    """The essays table, joined to the filtered phase's results when there is a filter, and the filter's condition."""
    if phase_filter is None:
        return _ESSAYS, []
    found = _RESULTS.alias("filtered")
    joined = _ESSAYS.outerjoin(found, and_(found.c.essay_id == _ESSAYS.c.essay_id, found.c.phase == phase_filter.phase))
    condition = _status_condition(found.c.status, phase_filter.statuses)
    if phase_filter.missing:
        condition = or_(condition, found.c.essay_id.is_(None))
    return joined, [condition]


async def _attach_results(conn: AsyncConnection, rows: Iterable[Row[Any]]) -> list[EssayRow]:
    """Essay rows with their phase results, read in one more statement for all of them."""
    essays = [_new_essay(*row, results={}) for row in rows]
    if essays:
        stmt = select(*_RESULT_COLUMNS).where(_RESULTS.c.essay_id == _ids("ids"))
        by_id = {essay.essay_id: essay.results for essay in essays}
        for row in await conn.execute(stmt, {"ids": list(by_id)}):
            detail = row.error_detail
            result = _new_result(*row) if detail is None else _new_result(*row, error=error_detail(detail))
            by_id[result.essay_id][result.phase] = result
    return essays


async def essays_by_id(conn: AsyncConnection, essay_ids: Sequence[str], user_id: str | None) -> dict[str, EssayRow]:
    """The essays with the given ids, with their phase results; with `user_id`, only essays of that user's batches."""
    stmt = select(*_ESSAY_COLUMNS).where(_ESSAYS.c.essay_id == _ids("ids"))
    if user_id is not None:
        stmt = stmt.join(_BATCHES, _BATCHES.c.batch_id == _ESSAYS.c.batch_id).where(_BATCHES.c.user_id == user_id)
    essays = await _attach_results(conn, await conn.execute(stmt, {"ids": list(essay_ids)}))
    return {essay.essay_id: essay for essay in essays}


async def essay_pages(
    conn: AsyncConnection,
    batch_ids: Sequence[str],
    first: int,
    after: str | None,
    phase_filter: PhaseFilter | None,
) -> dict[str, Page[EssayRow]]:
    """For each batch, up to `first` of its essays (by essay id, after `after`) that pass the filter."""
    wanted = func.unnest(bindparam("ids", type_=ARRAY(Text))).table_valued("batch_id").render_derived(name="wanted")
    source, conditions = _essay_source(phase_filter)
    if after is not None:
        conditions.append(_ESSAYS.c.essay_id > after)
    # One LATERAL subquery per wanted batch walks the (batch_id, essay_id) index and stops after first + 1 rows.
    page = (
        select(*_ESSAY_COLUMNS)
        .select_from(source)
        .where(_ESSAYS.c.batch_id == wanted.c.batch_id, *conditions)
        .order_by(_ESSAYS.c.essay_id)
        .limit(first + 1)
        .lateral("page")
    )
    stmt: Select[Any] = select(page).select_from(wanted).join(page, true()).order_by(page.c.batch_id, page.c.essay_id)
    essays = await _attach_results(conn, await conn.execute(stmt, {"ids": list(batch_ids)}))
    grouped: dict[str, list[EssayRow]] = {batch_id: [] for batch_id in batch_ids}
    for essay in essays:
        grouped[str(essay.batch_id)].append(essay)
    return {batch_id: Page(rows[:first], len(rows) > first) for batch_id, rows in grouped.items()}


async def count_essays(
    conn: AsyncConnection, batch_ids: Sequence[str], phase_filter: PhaseFilter | None
) -> dict[str, int]:
    source, conditions = _essay_source(phase_filter)
    stmt = (
        select(_ESSAYS.c.batch_id, func.count())
        .select_from(source)
        .where(_ESSAYS.c.batch_id == _ids("ids"), *conditions)
        .group_by(_ESSAYS.c.batch_id)
    )
    counts: dict[str, int] = {row[0]: int(row[1]) for row in await conn.execute(stmt, {"ids": list(batch_ids)})}
    return {batch_id: counts.get(batch_id, 0) for batch_id in batch_ids}


def _phase_progress_statement() -> Select[Any]:
    spellcheck = _RESULTS.alias("spellcheck")
    cj = _RESULTS.alias("cj")

    def is_open(result: Any) -> ColumnElement[bool]:
        return or_(result.c.status.is_(None), result.c.status.not_in(TERMINAL_STAGES))

    return (
        select(
            _ESSAYS.c.batch_id,
            func.count(),
            func.count().filter(is_open(spellcheck)),
            func.count().filter(is_open(cj)),
        )
        .select_from(
            _ESSAYS.outerjoin(
                spellcheck, and_(spellcheck.c.essay_id == _ESSAYS.c.essay_id, spellcheck.c.phase == "spellcheck")
            ).outerjoin(cj, and_(cj.c.essay_id == _ESSAYS.c.essay_id, cj.c.phase == "cj_assessment"))
        )
        .where(_ESSAYS.c.batch_id == _ids("ids"))
        .group_by(_ESSAYS.c.batch_id)
    )


# Built once: constructing this statement (two aliases, filters) cost more than running it for a page of batches.
_PHASE_PROGRESS = _phase_progress_statement()


async def phase_progress(conn: AsyncConnection, batch_ids: Sequence[str]) -> dict[str, PhaseProgress]:
    """Per batch: essays linked to it, and those whose spellcheck / CJ result is missing or not terminal."""
    found = {
        row[0]: PhaseProgress(int(row[1]), int(row[2]), int(row[3]))
        for row in await conn.execute(_PHASE_PROGRESS, {"ids": list(batch_ids)})
    }
    return {batch_id: found.get(batch_id, PhaseProgress(0, 0, 0)) for batch_id in batch_ids}


async def positions_view(conn: AsyncConnection) -> PositionsView:
    """The consumer's stored positions per partition and the number of records awaiting replay in quarantine."""
    positions = await conn.execute(select(*_POSITION_COLUMNS).order_by(_POSITIONS.c.topic, _POSITIONS.c.partition))
    rows = [PositionRow(*row) for row in positions]
    waiting = select(func.count()).select_from(_QUARANTINE).where(_QUARANTINE.c.replayed_at.is_(None))
    return PositionsView(rows, int((await conn.execute(waiting)).scalar_one()))
