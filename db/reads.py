"""Every query the read APIs run, each set-based: one statement answers any number of ids.

Results come back as the rows of db/rows.py, their JSON columns parsed into typed parts (db/json_columns.py) and
also kept raw for callers that return them as stored. The filters a list view passes in (`BatchQuery`,
`StatusMatch`, `PhaseFilter`, `BatchCursor`) are defined here, beside the conditions they become.

Statements are built once per filter shape (which conditions a view has, never their values) and compiled once
(db/prepared.py): a request binds parameters and builds nothing. Id lists travel as one array parameter
(`= ANY(:ids)`), so the statement text stays the same whatever the number of ids. Reads a level of a GraphQL query
would send separately are fused where they read the same rows: an essay page comes with its essays' results.

One module of ~550 lines rather than several: every statement shares the column lists, the filter conditions and
the positional row builders below, which would otherwise become a second, private interface between modules.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import (
    ARRAY,
    ColumnElement,
    FromClause,
    Integer,
    Select,
    Text,
    all_,
    and_,
    any_,
    bindparam,
    cast,
    false,
    func,
    literal,
    null,
    or_,
    select,
    true,
    tuple_,
    union_all,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from db.json_columns import error_detail, phase_outcomes, prompt_reference
from db.prepared import Prepared
from db.rows import (
    BatchRow,
    EssayRow,
    Page,
    PhaseProgress,
    PhaseResultRow,
    PositionRow,
    PositionsView,
)
from db.tables import Base, Timestamp

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


# --- statements -----------------------------------------------------------------------------------------------------
#
# Every statement is built once (per filter shape: which conditions a list view has, never their values) and
# compiled once (db/prepared.py); a request only binds parameters.


def _ids(name: str) -> Any:
    return any_(bindparam(name, type_=ARRAY(Text)))


def _columns(table: Any, row_type: type) -> list[Any]:
    """The table's columns in the row dataclass's field order, so rows can be built positionally (fast)."""
    return [table.c[f.name] for f in fields(row_type) if f.name in table.c]


_BATCH_COLUMNS = _columns(_BATCHES, BatchRow)
_ESSAY_COLUMNS = _columns(_ESSAYS, EssayRow)
_RESULT_COLUMNS = _columns(_RESULTS, PhaseResultRow)
_POSITION_COLUMNS = _columns(_POSITIONS, PositionRow)
_BATCH_WIDTH = len(_BATCH_COLUMNS)
_ESSAY_WIDTH = len(_ESSAY_COLUMNS)
_RESULT_WIDTH = len(_RESULT_COLUMNS)
_BATCH_NAMES = [c.name for c in _BATCH_COLUMNS]
_BATCH_ERROR = _BATCH_NAMES.index("error_detail")
_PHASE_STATS = _BATCH_NAMES.index("phase_stats")
_PROMPT_REF = _BATCH_NAMES.index("student_prompt_ref")
_RESULT_ERROR = [c.name for c in _RESULT_COLUMNS].index("error_detail")

# Rows are built positionally from those columns plus keyword-only parsed parts; typed loosely for that reason.
_new_batch: Callable[..., BatchRow] = BatchRow
_new_essay: Callable[..., EssayRow] = EssayRow
_new_result: Callable[..., PhaseResultRow] = PhaseResultRow


def _batch(row: Sequence[Any]) -> BatchRow:
    """A batch from its columns (the first of `row`, in BatchRow's field order)."""
    # Parsed parts are derived once per row here rather than on every field access.
    return _new_batch(
        *row[:_BATCH_WIDTH],
        error=error_detail(row[_BATCH_ERROR]),
        phase_outcomes=phase_outcomes(row[_PHASE_STATS]),
        student_prompt=prompt_reference(row[_PROMPT_REF]),
    )


def _essays_with_results(rows: Iterable[Sequence[Any]], at: int = 0) -> list[EssayRow]:
    """Essays from rows holding, from position `at`, the essay columns then the result columns (NULL for an essay
    without results); an essay's rows are adjacent."""
    essays: list[EssayRow] = []
    current: EssayRow | None = None
    results_at = at + _ESSAY_WIDTH
    for row in rows:
        if current is None or row[at] != current.essay_id:
            current = _new_essay(*row[at:results_at], results={})
            essays.append(current)
        if row[results_at] is not None:
            _add_result(current, row[results_at : results_at + _RESULT_WIDTH])
    return essays


def _add_result(essay: EssayRow, parts: Sequence[Any]) -> None:
    detail = parts[_RESULT_ERROR]
    result = _new_result(*parts) if detail is None else _new_result(*parts, error=error_detail(detail))
    essay.results[result.phase] = result


# --- filters as conditions over bind parameters --------------------------------------------------------------------

# A filter's shape: which conditions it has. Statements are built per shape; values are bound per request.
# A status match's shape: whether it lists values, and what "unknown" adds: nothing, any value, or any unlisted one.
_MatchShape = tuple[bool, str]
_QueryShape = tuple[bool, tuple[_MatchShape, ...], bool]
_FilterShape = tuple[_MatchShape, bool]


def _match_shape(match: StatusMatch) -> _MatchShape:
    unknown = "" if not match.unknown else "unlisted" if match.known else "any"
    return bool(match.values), unknown


def _status_condition(column: Any, shape: _MatchShape, name: str) -> ColumnElement[bool]:
    """`column` in the match's values (`:{name}_values`), plus what its "unknown" adds (`:{name}_known`)."""
    has_values, unknown = shape
    condition: ColumnElement[bool] = column == _ids(f"{name}_values") if has_values else false()
    if unknown == "unlisted":
        condition = or_(condition, column != all_(bindparam(f"{name}_known", type_=ARRAY(Text))))
    elif unknown == "any":
        # With nothing known, "unknown" means any value; still not NULL, which is "no row" after an outer join.
        condition = or_(condition, column.is_not(None))
    return condition


def _status_params(match: StatusMatch, name: str) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if match.values:
        params[f"{name}_values"] = sorted(match.values)
    if match.unknown and match.known:
        params[f"{name}_known"] = sorted(match.known)
    return params


def _query_shape(query: BatchQuery) -> _QueryShape:
    return query.user_id is not None, tuple(map(_match_shape, query.statuses)), query.assignment_id is not None


def _query_params(query: BatchQuery) -> dict[str, Any]:
    params: dict[str, Any] = {"user_id": query.user_id, "assignment_id": query.assignment_id}
    for i, match in enumerate(query.statuses):
        params |= _status_params(match, f"status{i}")
    return params


def _batch_conditions(shape: _QueryShape) -> list[ColumnElement[bool]]:
    has_user, statuses, has_assignment = shape
    conditions: list[ColumnElement[bool]] = []
    if has_user:
        conditions.append(_BATCHES.c.user_id == bindparam("user_id", type_=Text))
    conditions.extend(_status_condition(_BATCHES.c.status, match, f"status{i}") for i, match in enumerate(statuses))
    if has_assignment:
        conditions.append(_BATCHES.c.assignment_id == bindparam("assignment_id", type_=Text))
    return conditions


def _filter_shape(phase_filter: PhaseFilter | None) -> _FilterShape | None:
    return None if phase_filter is None else (_match_shape(phase_filter.statuses), phase_filter.missing)


def _filter_params(phase_filter: PhaseFilter | None) -> dict[str, Any]:
    if phase_filter is None:
        return {}
    return {"phase": phase_filter.phase} | _status_params(phase_filter.statuses, "stage")


def _essay_source(shape: _FilterShape | None) -> tuple[Any, list[ColumnElement[bool]]]:
    """The essays table, joined to the filtered phase's results when there is a filter, and the filter's condition."""
    if shape is None:
        return _ESSAYS, []
    statuses, missing = shape
    found = _RESULTS.alias("filtered")
    phase = bindparam("phase", type_=Text)
    joined = _ESSAYS.outerjoin(found, and_(found.c.essay_id == _ESSAYS.c.essay_id, found.c.phase == phase))
    condition = _status_condition(found.c.status, statuses, "stage")
    if missing:
        condition = or_(condition, found.c.essay_id.is_(None))
    return joined, [condition]


_LIMIT = bindparam("limit", type_=Integer)
_OFFSET = bindparam("offset", type_=Integer)
_ORDER = (_BATCHES.c.created_at.desc(), _BATCHES.c.batch_id.desc())


# --- batches --------------------------------------------------------------------------------------------------------

_BATCH_BY_ID = select(*_BATCH_COLUMNS).where(_BATCHES.c.batch_id == _ids("ids"))
_BATCHES_BY_ID = Prepared(_BATCH_BY_ID)
_USER_BATCHES_BY_ID = Prepared(_BATCH_BY_ID.where(_BATCHES.c.user_id == bindparam("user_id", type_=Text)))


async def batches_by_id(conn: AsyncConnection, batch_ids: Sequence[str], user_id: str | None) -> dict[str, BatchRow]:
    """The batches with the given ids; with `user_id`, only those that user owns."""
    prepared = _BATCHES_BY_ID if user_id is None else _USER_BATCHES_BY_ID
    result = await prepared.run(conn, {"ids": list(batch_ids), "user_id": user_id})
    return {row[0]: _batch(row) for row in result}


@lru_cache(maxsize=128)
def _batch_page_statement(shape: _QueryShape, after: bool) -> Prepared:
    stmt = select(*_BATCH_COLUMNS).where(*_batch_conditions(shape))
    if after:
        cursor = (bindparam("after_at", type_=Timestamp), bindparam("after_id", type_=Text))
        stmt = stmt.where(tuple_(_BATCHES.c.created_at, _BATCHES.c.batch_id) < tuple_(*cursor))
    return Prepared(stmt.order_by(*_ORDER).limit(_LIMIT))


async def batch_page(conn: AsyncConnection, query: BatchQuery, first: int, after: BatchCursor | None) -> Page[BatchRow]:
    """Up to `first` batches matching `query`, newest first, strictly after the `after` cursor."""
    params = _query_params(query) | {"limit": first + 1}
    if after is not None:
        params |= {"after_at": after.created_at, "after_id": after.batch_id}
    result = await _batch_page_statement(_query_shape(query), after is not None).run(conn, params)
    rows = [_batch(row) for row in result]
    return Page(rows[:first], len(rows) > first)


@lru_cache(maxsize=128)
def _batch_page_and_total_statement(shape: _QueryShape, after: bool) -> Prepared:
    page = _batch_page_statement(shape, after).statement.subquery("page")
    total = select(func.count().label("total")).select_from(_BATCHES).where(*_batch_conditions(shape)).subquery("total")
    # The total's one row, joined to the page's rows (or alone when the page is empty).
    stmt = select(total.c.total, *page.c).select_from(total.outerjoin(page, true()))
    return Prepared(stmt.order_by(page.c.created_at.desc(), page.c.batch_id.desc()))


async def batch_page_and_total(
    conn: AsyncConnection, query: BatchQuery, first: int, after: BatchCursor | None
) -> tuple[Page[BatchRow], int]:
    """`batch_page` and `count_batches` of the same query in one statement."""
    params = _query_params(query) | {"limit": first + 1}
    if after is not None:
        params |= {"after_at": after.created_at, "after_id": after.batch_id}
    result = await _batch_page_and_total_statement(_query_shape(query), after is not None).run(conn, params)
    rows = [_batch(row[1:]) for row in result if row[1] is not None]
    return Page(rows[:first], len(rows) > first), int(result[0][0])


@lru_cache(maxsize=128)
def _count_batches_statement(shape: _QueryShape) -> Prepared:
    return Prepared(select(func.count()).select_from(_BATCHES).where(*_batch_conditions(shape)))


async def count_batches(conn: AsyncConnection, query: BatchQuery) -> int:
    [(count,)] = await _count_batches_statement(_query_shape(query)).run(conn, _query_params(query))
    return int(count)


# --- essays ---------------------------------------------------------------------------------------------------------


def _and_results(essays: Any, source: Any) -> Select[Any]:
    """The essay columns of `essays` (in `source`), then the columns of their phase results: one row per result, or
    one with NULL result columns for an essay without any."""
    results = _RESULTS.alias("result")
    joined = source.outerjoin(results, results.c.essay_id == essays.c.essay_id)
    return select(*(essays.c[c.name] for c in _ESSAY_COLUMNS), *_columns(results, PhaseResultRow)).select_from(joined)


def _essays_by_id_statement(for_user: bool) -> Prepared:
    essays = select(*_ESSAY_COLUMNS).where(_ESSAYS.c.essay_id == _ids("ids"))
    if for_user:
        owner = _BATCHES.c.user_id == bindparam("user_id", type_=Text)
        essays = essays.join(_BATCHES, _BATCHES.c.batch_id == _ESSAYS.c.batch_id).where(owner)
    found = essays.subquery("essay")
    return Prepared(_and_results(found, found).order_by(found.c.essay_id))


_ESSAYS_BY_ID = _essays_by_id_statement(for_user=False)
_USER_ESSAYS_BY_ID = _essays_by_id_statement(for_user=True)


async def essays_by_id(conn: AsyncConnection, essay_ids: Sequence[str], user_id: str | None) -> dict[str, EssayRow]:
    """The essays with the given ids, with their phase results; with `user_id`, only essays of that user's batches."""
    prepared = _ESSAYS_BY_ID if user_id is None else _USER_ESSAYS_BY_ID
    result = await prepared.run(conn, {"ids": list(essay_ids), "user_id": user_id})
    return {essay.essay_id: essay for essay in _essays_with_results(result)}


@lru_cache(maxsize=128)
def _essay_pages_statement(shape: _FilterShape | None, after: bool) -> Prepared:
    wanted = func.unnest(bindparam("ids", type_=ARRAY(Text))).table_valued("batch_id").render_derived(name="wanted")
    source, conditions = _essay_source(shape)
    if after:
        conditions.append(_ESSAYS.c.essay_id > bindparam("after", type_=Text))
    # One LATERAL subquery per wanted batch walks the (batch_id, essay_id) index and stops after first + 1 rows.
    page = (
        select(*_ESSAY_COLUMNS)
        .select_from(source)
        .where(_ESSAYS.c.batch_id == wanted.c.batch_id, *conditions)
        .order_by(_ESSAYS.c.essay_id)
        .limit(_LIMIT)
        .lateral("page")
    )
    stmt = _and_results(page, wanted.join(page, true())).order_by(page.c.batch_id, page.c.essay_id)
    return Prepared(stmt)


async def essay_pages(
    conn: AsyncConnection,
    batch_ids: Sequence[str],
    first: int,
    after: str | None,
    phase_filter: PhaseFilter | None,
) -> dict[str, Page[EssayRow]]:
    """For each batch, up to `first` of its essays (by essay id, after `after`) that pass the filter, each with its
    phase results, in one statement."""
    params = {"ids": list(batch_ids), "limit": first + 1, "after": after} | _filter_params(phase_filter)
    result = await _essay_pages_statement(_filter_shape(phase_filter), after is not None).run(conn, params)
    grouped: dict[str, list[EssayRow]] = {batch_id: [] for batch_id in batch_ids}
    for essay in _essays_with_results(result):
        grouped[str(essay.batch_id)].append(essay)
    return {batch_id: Page(rows[:first], len(rows) > first) for batch_id, rows in grouped.items()}


Tally = PhaseProgress | int
"""A batch's essays passing a filter (counted), or, unfiltered, its phase progress (which counts them all too)."""


def _open(result: Any, terminal: Any) -> ColumnElement[bool]:
    """`result` (an outer-joined phase result) is missing or not terminal."""
    return or_(result.c.status.is_(None), result.c.status != all_(terminal))


def _progress_source() -> tuple[FromClause, list[Any]]:
    """The essays with their spellcheck and CJ results, and the counts of `phase_progress` over them."""
    spellcheck = _RESULTS.alias("spellcheck")
    cj = _RESULTS.alias("cj")
    terminal = bindparam("terminal", sorted(TERMINAL_STAGES), type_=ARRAY(Text))
    source = _ESSAYS.outerjoin(
        spellcheck, and_(spellcheck.c.essay_id == _ESSAYS.c.essay_id, spellcheck.c.phase == "spellcheck")
    ).outerjoin(cj, and_(cj.c.essay_id == _ESSAYS.c.essay_id, cj.c.phase == "cj_assessment"))
    counts = [func.count(), func.count().filter(_open(spellcheck, terminal)), func.count().filter(_open(cj, terminal))]
    return source, counts


@lru_cache(maxsize=128)
def _pages_and_tallies_statement(shape: _FilterShape | None, after: bool, progress: bool) -> Prepared:
    wanted = func.unnest(bindparam("all_ids", type_=ARRAY(Text))).table_valued("batch_id").render_derived(name="wanted")
    # The tally of each wanted batch in :tally_ids (an aggregate: always one row), beside its page when in :ids.
    if progress:
        tally_source, counts = _progress_source()
        tally_conditions: list[ColumnElement[bool]] = []
    else:
        tally_source, tally_conditions = _essay_source(shape)
        counts = [func.count()]
    tally = (
        select(*counts)
        .select_from(tally_source)
        .where(_ESSAYS.c.batch_id == wanted.c.batch_id, wanted.c.batch_id == _ids("tally_ids"), *tally_conditions)
        .lateral("tally")
    )
    source, conditions = _essay_source(shape)
    if after:
        conditions.append(_ESSAYS.c.essay_id > bindparam("after", type_=Text))
    page = (
        select(*_ESSAY_COLUMNS)
        .select_from(source)
        .where(_ESSAYS.c.batch_id == wanted.c.batch_id, wanted.c.batch_id == _ids("ids"), *conditions)
        .order_by(_ESSAYS.c.essay_id)
        .limit(_LIMIT)
        .lateral("page")
    )
    results = _RESULTS.alias("result")
    joined = (
        wanted.join(tally, true()).outerjoin(page, true()).outerjoin(results, results.c.essay_id == page.c.essay_id)
    )
    stmt = select(
        wanted.c.batch_id, *tally.c, *(page.c[c.name] for c in _ESSAY_COLUMNS), *_columns(results, PhaseResultRow)
    ).select_from(joined)
    return Prepared(stmt.order_by(wanted.c.batch_id, page.c.essay_id))


async def essay_pages_and_tallies(
    conn: AsyncConnection,
    batch_ids: Sequence[str],
    first: int,
    after: str | None,
    phase_filter: PhaseFilter | None,
    tally_ids: Sequence[str],
    progress: bool,
) -> tuple[dict[str, Page[EssayRow]], dict[str, Tally]]:
    """`essay_pages` of `batch_ids`, and in the same statement the tally of each of `tally_ids`: with `progress`
    (only unfiltered), `phase_progress`; otherwise `count_essays` under the same filter."""
    assert not (progress and phase_filter is not None), "phase progress counts every essay"
    all_ids = list(dict.fromkeys([*batch_ids, *tally_ids]))
    params = {
        "all_ids": all_ids,
        "ids": list(batch_ids),
        "tally_ids": list(tally_ids),
        "limit": first + 1,
        "after": after,
    } | _filter_params(phase_filter)
    shape = _filter_shape(phase_filter)
    result = await _pages_and_tallies_statement(shape, after is not None, progress).run(conn, params)
    width = 3 if progress else 1
    at = 1 + width
    counted: set[str] = set(tally_ids)
    tallies: dict[str, Tally] = {}
    for row in result:
        if row[0] in counted and row[0] not in tallies:
            tallies[row[0]] = PhaseProgress(int(row[1]), int(row[2]), int(row[3])) if progress else int(row[1])
    grouped: dict[str, list[EssayRow]] = {batch_id: [] for batch_id in batch_ids}
    for essay in _essays_with_results((row for row in result if row[at] is not None), at):
        grouped[str(essay.batch_id)].append(essay)
    pages = {batch_id: Page(rows[:first], len(rows) > first) for batch_id, rows in grouped.items()}
    return pages, tallies


# --- whole answers in one statement ----------------------------------------------------------------------------------
#
# The REST shim answers a batch with all of its essays, or a page of a user's batches with theirs and the list's
# total. One statement reads all of it, so such a request needs no snapshot transaction (one statement sees one
# state) and makes one round trip: the chosen batches (a CTE), then, in a UNION ALL, the essays of those batches with
# their results; each part's columns are NULL in the other's rows. The rows come unordered and are put in order
# here: sorting the union's wide rows in PostgreSQL doubled the statement's time.

BatchWithEssays = tuple[BatchRow, list[EssayRow]]
_TOTAL = _BATCH_WIDTH
_PART = _BATCH_WIDTH + 1 + _ESSAY_WIDTH + _RESULT_WIDTH
_PLACE = _PART + 1


def _nulls(columns: Sequence[Any], prefix: str) -> list[Any]:
    return [cast(null(), c.type).label(f"{prefix}{i}") for i, c in enumerate(columns)]


def _labelled(columns: Sequence[Any], prefix: str) -> list[Any]:
    return [c.label(f"{prefix}{i}") for i, c in enumerate(columns)]


def _whole_statement(chosen: Select[Any], total: Select[Any] | None) -> Prepared:
    """`chosen` (the batch columns, then `place`: its position in the answer) with every essay of those batches; with
    `total` (a count), its value on a first row that is there even when nothing was chosen."""
    picked = chosen.cte("chosen")
    results = _RESULTS.alias("result")
    result_columns = _columns(results, PhaseResultRow)
    counted: ColumnElement[Any] = null()
    source: FromClause = picked
    if total is not None:
        counts = total.subquery("total")
        counted, source = counts.c[0], counts.outerjoin(picked, true())
    batches = select(
        *_labelled([picked.c[c.name] for c in _BATCH_COLUMNS], "b"),
        cast(counted, Integer).label("total"),
        *_nulls(_ESSAY_COLUMNS, "e"),
        *_nulls(result_columns, "r"),
        literal(0).label("part"),
        picked.c.place,
    ).select_from(source)
    essays = select(
        *_nulls(_BATCH_COLUMNS, "b"),
        cast(null(), Integer).label("total"),
        *_labelled(_ESSAY_COLUMNS, "e"),
        *_labelled(result_columns, "r"),
        literal(1).label("part"),
        picked.c.place,
    ).select_from(
        picked.join(_ESSAYS, _ESSAYS.c.batch_id == picked.c.batch_id).outerjoin(
            results, results.c.essay_id == _ESSAYS.c.essay_id
        )
    )
    return Prepared(union_all(batches, essays))


def _whole(rows: Iterable[Sequence[Any]]) -> tuple[list[BatchWithEssays], int]:
    """The chosen batches in their places, each with its essays by essay id (code point order), and the total (0
    where none was asked)."""
    placed: list[tuple[int, BatchRow]] = []
    essays: dict[str, EssayRow] = {}
    total = 0
    essay_at = _TOTAL + 1
    results_at = essay_at + _ESSAY_WIDTH
    for row in rows:
        if row[_PART] == 0:
            total = row[_TOTAL] or 0
            if row[0] is not None:
                placed.append((row[_PLACE], _batch(row)))
            continue
        essay = essays.get(row[essay_at])
        if essay is None:
            essay = essays[row[essay_at]] = _new_essay(*row[essay_at:results_at], results={})
        if row[results_at] is not None:
            _add_result(essay, row[results_at : results_at + _RESULT_WIDTH])
    placed.sort(key=lambda place: place[0])
    chosen: dict[str, BatchWithEssays] = {batch.batch_id: (batch, []) for _, batch in placed}
    for essay_id in sorted(essays):
        essay = essays[essay_id]
        chosen[str(essay.batch_id)][1].append(essay)
    return list(chosen.values()), total


def _whole_batch_statement(for_user: bool) -> Prepared:
    place = literal(0).label("place")
    chosen = select(*_BATCH_COLUMNS, place).where(_BATCHES.c.batch_id == bindparam("batch_id", type_=Text))
    if for_user:
        chosen = chosen.where(_BATCHES.c.user_id == bindparam("user_id", type_=Text))
    return _whole_statement(chosen, None)


_WHOLE_BATCH = _whole_batch_statement(for_user=False)
_WHOLE_USER_BATCH = _whole_batch_statement(for_user=True)


async def batch_with_essays(conn: AsyncConnection, batch_id: str, user_id: str | None) -> BatchWithEssays | None:
    """The batch (with `user_id`, only if that user owns it) with every one of its essays, by essay id (code point
    order), each with its phase results."""
    prepared = _WHOLE_BATCH if user_id is None else _WHOLE_USER_BATCH
    found, _ = _whole(await prepared.run(conn, {"batch_id": batch_id, "user_id": user_id}))
    return found[0] if found else None


@lru_cache(maxsize=128)
def _whole_slice_statement(shape: _QueryShape) -> Prepared:
    conditions = _batch_conditions(shape)
    place = func.row_number().over(order_by=_ORDER).label("place")
    chosen = select(*_BATCH_COLUMNS, place).where(*conditions).order_by(*_ORDER).limit(_LIMIT).offset(_OFFSET)
    return _whole_statement(chosen, select(func.count()).select_from(_BATCHES).where(*conditions))


async def batch_slice_with_essays(
    conn: AsyncConnection, query: BatchQuery, limit: int, offset: int
) -> tuple[list[BatchWithEssays], int]:
    """Up to `limit` batches matching `query`, newest first, after skipping `offset` of them, each with every one of
    its essays; and how many batches match in all. The REST shim's offset pagination (its callers send
    `limit`/`offset`); the order of `batch_page`."""
    params = _query_params(query) | {"limit": limit, "offset": offset}
    return _whole(await _whole_slice_statement(_query_shape(query)).run(conn, params))


@lru_cache(maxsize=128)
def _count_essays_statement(shape: _FilterShape | None) -> Prepared:
    source, conditions = _essay_source(shape)
    stmt = (
        select(_ESSAYS.c.batch_id, func.count())
        .select_from(source)
        .where(_ESSAYS.c.batch_id == _ids("ids"), *conditions)
        .group_by(_ESSAYS.c.batch_id)
    )
    return Prepared(stmt)


async def count_essays(
    conn: AsyncConnection, batch_ids: Sequence[str], phase_filter: PhaseFilter | None
) -> dict[str, int]:
    params = {"ids": list(batch_ids)} | _filter_params(phase_filter)
    result = await _count_essays_statement(_filter_shape(phase_filter)).run(conn, params)
    counts: dict[str, int] = {row[0]: int(row[1]) for row in result}
    return {batch_id: counts.get(batch_id, 0) for batch_id in batch_ids}


def _phase_progress_statement() -> Prepared:
    source, counts = _progress_source()
    stmt = (
        select(_ESSAYS.c.batch_id, *counts)
        .select_from(source)
        .where(_ESSAYS.c.batch_id == _ids("ids"))
        .group_by(_ESSAYS.c.batch_id)
    )
    return Prepared(stmt)


_PHASE_PROGRESS = _phase_progress_statement()


async def phase_progress(conn: AsyncConnection, batch_ids: Sequence[str]) -> dict[str, PhaseProgress]:
    """Per batch: essays linked to it, and those whose spellcheck / CJ result is missing or not terminal."""
    found = {
        row[0]: PhaseProgress(int(row[1]), int(row[2]), int(row[3]))
        for row in await _PHASE_PROGRESS.run(conn, {"ids": list(batch_ids)})
    }
    return {batch_id: found.get(batch_id, PhaseProgress(0, 0, 0)) for batch_id in batch_ids}


# --- the projection's positions -------------------------------------------------------------------------------------

_POSITIONS_IN_ORDER = Prepared(select(*_POSITION_COLUMNS).order_by(_POSITIONS.c.topic, _POSITIONS.c.partition))
_AWAITING_REPLAY = Prepared(select(func.count()).select_from(_QUARANTINE).where(_QUARANTINE.c.replayed_at.is_(None)))


async def positions_view(conn: AsyncConnection) -> PositionsView:
    """The consumer's stored positions per partition and the number of records awaiting replay in quarantine."""
    rows = [PositionRow(*row) for row in await _POSITIONS_IN_ORDER.run(conn, {})]
    [(waiting,)] = await _AWAITING_REPLAY.run(conn, {})
    return PositionsView(rows, int(waiting))
