"""Field resolvers. Each takes the row a parent field returned (`root`) and stays cheap: attribute reads, a dict
lookup, or one loader call. Fields that read a row attribute unchanged need no resolver at all (see
app/graphql/types.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from datetime import datetime
from typing import Annotated, Any

import strawberry

from app.auth import Caller
from app.errors import ApiError, Forbidden
from app.graphql.connections import BatchList, EssayList, Info
from app.graphql.cursors import parse_batch_cursor, parse_essay_cursor
from app.graphql.enums import (
    BATCH_STATUSES,
    PHASES,
    PROCESSING_STAGES,
    BatchClientStatus,
    BatchStatus,
    Long,
    known,
    wire,
)
from app.graphql.inputs import EssayPhaseFilter
from app.limits import check_page_size
from app.reads import status
from app.reads.loaders import PROJECTION, BatchPageKey, EssayPageKey
from db.reads import BatchQuery, PhaseFilter, StatusMatch
from db.rows import BatchRow, EssayRow, PhaseOutcome, PhaseResultRow, PositionRow, PositionsView

FirstArg = Annotated[
    int | None,
    strawberry.argument(
        description="Page size. Omitted: the server's default. Above the server's maximum: LIMIT_EXCEEDED."
    ),
]
AfterArg = Annotated[
    str | None, strawberry.argument(description="Start after this cursor (an `endCursor` or edge `cursor`).")
]


# --- Query ------------------------------------------------------------------------------------------------------


async def batch(info: Info, id: Annotated[strawberry.ID, strawberry.argument(description="The batch id.")]) -> Any:
    return await info.context.loaders.batch.load(str(id))


def _list_owner(caller: Caller, user_id: str | None) -> str | None:
    """Whose batches a list shows. A caller acting for a user (X-User-ID) sees only that user's list."""
    if caller.user_id is None:
        return user_id
    if user_id is not None and user_id != caller.user_id:
        raise Forbidden("userId must match the X-User-ID header: a user can list only their own batches.")
    return caller.user_id


def _status_matches(
    statuses: Sequence[BatchStatus] | None, client_statuses: Sequence[BatchClientStatus] | None
) -> tuple[StatusMatch, ...]:
    matches = []
    if statuses is not None:
        matches.append(status.matching(map(wire, statuses), status.BATCH_STATUSES))
    if client_statuses is not None:
        matches.append(status.internal_statuses(map(wire, client_statuses)))
    return tuple(matches)


def batches(
    info: Info,
    user_id: Annotated[
        str | None,
        strawberry.argument(
            description="Only this user's batches. Requests carrying X-User-ID may pass only that user's id "
            "(or omit it); without X-User-ID, omitting it lists every user's batches."
        ),
    ] = None,
    status: Annotated[
        list[BatchStatus] | None,
        strawberry.argument(description="Only batches with one of these internal statuses (UNKNOWN: any unlisted)."),
    ] = None,
    client_status: Annotated[
        list[BatchClientStatus] | None,
        strawberry.argument(description="Only batches whose client status is one of these."),
    ] = None,
    assignment_id: Annotated[str | None, strawberry.argument(description="Only batches of this assignment.")] = None,
    first: FirstArg = None,
    after: AfterArg = None,
) -> BatchList:
    limits = info.context.limits
    size = limits.batches_page_default if first is None else first
    check_page_size(size, limits.batches_page_max, "batches")
    query = BatchQuery(
        user_id=_list_owner(info.context.caller, user_id),
        statuses=_status_matches(status, client_status),
        assignment_id=assignment_id,
    )
    return BatchList(BatchPageKey(query, size, parse_batch_cursor(after) if after is not None else None))


async def essay(info: Info, id: Annotated[strawberry.ID, strawberry.argument(description="The essay id.")]) -> Any:
    return await info.context.loaders.essay.load(str(id))


async def projection(info: Info) -> PositionsView:
    return await info.context.loaders.projection.load(PROJECTION)


# --- federation entities (app/graphql/entities.py) -----------------------------------------------------------------
# Strawberry calls these once per representation; the loads of one `_entities` field are answered together.


def batch_reference(info: Info, id: str) -> Awaitable[BatchRow | None]:
    return info.context.loaders.batch.load(id)


def essay_reference(info: Info, id: str) -> Awaitable[EssayRow | None]:
    return info.context.loaders.essay.load(id)


# --- Batch ------------------------------------------------------------------------------------------------------


def batch_status(root: BatchRow) -> str:
    return known(root.status, BATCH_STATUSES)


def batch_client_status(root: BatchRow) -> str:
    return status.client_status(root.status)


def batch_current_phase(root: BatchRow, info: Info) -> Awaitable[str | None] | None:
    # Synchronous where the status decides, without reading the essays: most batches of a list are not running,
    # and an awaitable per batch cost more than the rest of its fields together.
    if root.status != status.PROCESSING_PIPELINES:
        return None
    return _running_phase(root, info)


async def _running_phase(root: BatchRow, info: Info) -> str | None:
    progress = await info.context.loaders.phase_progress(root.batch_id)
    return status.current_phase(root.status, progress)


def _phase_filter(given: EssayPhaseFilter | None) -> PhaseFilter | None:
    if given is None:
        return None
    if given.statuses is None:
        statuses = StatusMatch(frozenset(), unknown=True)  # any result
    else:
        statuses = status.matching(map(wire, given.statuses), status.PROCESSING_STAGES)
    return PhaseFilter(wire(given.phase), statuses, missing=given.without_result)


def batch_essays(
    root: BatchRow,
    info: Info,
    first: FirstArg = None,
    after: AfterArg = None,
    phase_status: Annotated[
        EssayPhaseFilter | None, strawberry.argument(description="Only essays whose phase result matches.")
    ] = None,
) -> EssayList:
    limits = info.context.limits
    size = limits.essays_page_default if first is None else first
    check_page_size(size, limits.essays_page_max, "essays")
    cursor = parse_essay_cursor(after) if after is not None else None
    return EssayList(EssayPageKey(root.batch_id, size, cursor, _phase_filter(phase_status)))


# --- Essay ------------------------------------------------------------------------------------------------------

_PHASE_ORDER = {phase: i for i, phase in enumerate(status.PHASES)}


async def essay_batch(root: EssayRow, info: Info) -> BatchRow | None:
    if root.batch_id is None:
        return None
    return await info.context.loaders.batch.load(root.batch_id)


def essay_phase_results(root: EssayRow) -> list[PhaseResultRow]:
    return sorted(root.results.values(), key=lambda r: (_PHASE_ORDER.get(r.phase, len(_PHASE_ORDER)), r.phase))


# --- phase results and outcomes ------------------------------------------------------------------------------------


def result_phase(root: PhaseResultRow | PhaseOutcome) -> str:
    return known(root.phase, PHASES)


def result_status(root: PhaseResultRow) -> str:
    return known(root.status, PROCESSING_STAGES)


def outcome_status(root: PhaseOutcome) -> str:
    return known(root.status, BATCH_STATUSES)


def _detail(root: PhaseResultRow, name: str) -> str | None:
    value = (root.details or {}).get(name)
    return None if value is None else str(value)


def cj_job_id(root: PhaseResultRow) -> str | None:
    return _detail(root, "cj_assessment_job_id")


def cj_assessment_method(root: PhaseResultRow) -> str | None:
    return _detail(root, "assessment_method")


def cj_model_used(root: PhaseResultRow) -> str | None:
    return _detail(root, "model_used")


def cj_feedback_uri(root: PhaseResultRow) -> str | None:
    return _detail(root, "feedback_uri")


def cj_metrics_uri(root: PhaseResultRow) -> str | None:
    return _detail(root, "metrics_uri")


# --- Projection ---------------------------------------------------------------------------------------------------


def total_lag(root: PositionsView) -> int | None:
    lags = [p.lag for p in root.positions if p.lag is not None]
    return sum(lags) if lags else None


def _newest(stamps: Sequence[datetime | None]) -> datetime | None:
    return max((s for s in stamps if s is not None), default=None)


def newest_event_at(root: PositionsView) -> datetime | None:
    return _newest([p.last_event_at for p in root.positions])


def last_applied_at(root: PositionsView) -> datetime | None:
    return _newest([p.updated_at for p in root.positions])


def partitions(root: PositionsView) -> list[PositionRow]:
    return root.positions


def wait_for(
    root: PositionsView,
    info: Info,
    topic: Annotated[str, strawberry.argument(description="The topic the awaited record was produced to.")],
    partition: Annotated[int, strawberry.argument(description="Its partition.")],
    offset: Annotated[Long, strawberry.argument(description="Its offset (from the producer's acknowledgement).")],
    timeout_ms: Annotated[
        int | None,
        strawberry.argument(description="How long to wait: default 5000, at most RAS_CONSISTENCY_MAX_WAIT_MS."),
    ] = None,
) -> bool:
    # Waited for before execution, with no connection held (ConsistencyGate, app/graphql/consistency.py).
    outcome = info.context.waited[(topic, partition, offset, timeout_ms)]
    if isinstance(outcome, ApiError):
        raise outcome
    return outcome
