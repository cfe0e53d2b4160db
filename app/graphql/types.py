"""The GraphQL object types. They describe the schema only: at run time each field reads the plain row its parent
returned (db/rows.py), by attribute for plain fields and through app/graphql/resolvers.py for the rest, so no per-row
GraphQL object is ever built.

Enum-valued fields come in pairs: `status` (the enum, UNKNOWN for text the schema does not list) and `statusCode`
(the stored text), likewise `phase`/`phaseCode`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

import strawberry
from strawberry.scalars import JSON

from app.graphql import connections, resolvers
from app.graphql.entities import KEY
from app.graphql.enums import BatchClientStatus, BatchStatus, Long, PhaseName, ProcessingStage
from app.graphql.execution import ignores_info
from app.reads import status
from db.rows import BatchRow, EssayRow, PhaseResultRow

BatchRef = Annotated["Batch", strawberry.lazy("app.graphql.types")]


def resolved(resolver: Callable[..., Any], graphql_type: Any, description: str, name: str | None = None) -> Any:
    """A field computed from the parent's row by `resolver`, whose return type (a row) differs from the field's
    GraphQL type, hence `Any`; the annotation of the attribute names the GraphQL type for readers."""
    return strawberry.field(resolver=resolver, graphql_type=graphql_type, description=description, name=name)


@strawberry.type(description="Where a piece of content lives in the platform's content service.")
class StorageReference:
    content_type: str = strawberry.field(description="The ContentType of the content, e.g. student_prompt_text.")
    storage_id: str = strawberry.field(description="The content service's storage id.")
    path: str | None = strawberry.field(description="A path hint, when the producer gave one.")


@strawberry.type(description="An error as the platform reports it (its ErrorDetail). Fields left out are null.")
class ErrorDetail:
    error_code: str | None = strawberry.field(
        description="Machine-readable code, e.g. SPELLCHECK_SERVICE_ERROR or PROCESSING_ERROR."
    )
    message: str | None = strawberry.field(description="Human-readable message.")
    correlation_id: str | None = strawberry.field(description="Correlation id of the event that reported the error.")
    timestamp: datetime | None = strawberry.field(description="When the error was reported.")
    service: str | None = strawberry.field(description="The service that reported the error.")
    operation: str | None = strawberry.field(description="The operation that failed.")
    details: JSON | None = strawberry.field(description="Structured details, as reported.")
    stack_trace: str | None = strawberry.field(description="Stack trace, when the reporter included one.")
    trace_id: str | None = strawberry.field(description="Tracing trace id, when known.")
    span_id: str | None = strawberry.field(description="Tracing span id, when known.")


@strawberry.type(description="How one phase ended for a whole batch, as the essay lifecycle service reported it.")
class PhaseOutcome:
    phase_value: PhaseName = resolved(
        name="phase", resolver=resolvers.result_phase, graphql_type=PhaseName, description="The phase."
    )
    phase: str = strawberry.field(name="phaseCode", description="The phase name as reported.")
    status_value: BatchStatus = resolved(
        name="status",
        resolver=resolvers.outcome_status,
        graphql_type=BatchStatus,
        description="The phase's outcome: completed_successfully, completed_with_failures or failed_critically.",
    )
    status: str = strawberry.field(name="statusCode", description="The outcome as reported.")
    completed_count: int = strawberry.field(description="Essays that completed the phase.")
    failed_count: int = strawberry.field(description="Essays that failed the phase.")
    completed_at: datetime | None = strawberry.field(description="When the outcome was reported.")


@strawberry.interface(description="The newest result of one processing phase for one essay.")
class PhaseResult:
    phase_value: PhaseName = resolved(
        name="phase", resolver=resolvers.result_phase, graphql_type=PhaseName, description="The phase."
    )
    phase: str = strawberry.field(name="phaseCode", description="The phase name as stored.")
    status_value: ProcessingStage = resolved(
        name="status",
        resolver=resolvers.result_status,
        graphql_type=ProcessingStage,
        description="The essay's stage in this phase.",
    )
    status: str = strawberry.field(name="statusCode", description="The stage as stored.")
    source_status: str | None = strawberry.field(
        name="reportedStatus",
        description="The status the producing service reported (an EssayStatus such as spellchecked_success, or "
        "a BatchStatus), from which the stage was derived.",
    )
    essay_id: strawberry.ID = strawberry.field(description="The essay the result is for.")
    batch_id: str | None = strawberry.field(description="The batch the producing service named.")
    started_at: datetime | None = strawberry.field(description="When the phase started on this essay, if reported.")
    completed_at: datetime | None = strawberry.field(description="When the phase finished on this essay, if reported.")
    fact_at: datetime = strawberry.field(
        name="recordedAt",
        description="The time the producing service stamped on the result; the newest result per phase is kept.",
    )
    error: ErrorDetail | None = strawberry.field(description="Why the phase failed, when it did and said so.")
    details: JSON | None = strawberry.field(description="Reported fields of the result that have no typed field.")


def _phase_is(phase: str) -> Any:
    @ignores_info
    def is_type_of(cls: type, obj: Any, info: Any) -> bool:
        return isinstance(obj, PhaseResultRow) and obj.phase == phase

    return classmethod(is_type_of)


@strawberry.type(description="An essay's spellcheck result.")
class SpellcheckResult(PhaseResult):
    is_type_of = _phase_is(status.SPELLCHECK)

    correction_count: int | None = strawberry.field(description="Corrections made (gen 1: null when not reported).")
    corrected_text_storage_id: str | None = strawberry.field(description="Storage id of the corrected text.")
    total_corrections: int | None = strawberry.field(description="Gen 2 metrics: all corrections.")
    l2_dictionary_corrections: int | None = strawberry.field(
        description="Gen 2 metrics: corrections from the L2 learner dictionary."
    )
    spellchecker_corrections: int | None = strawberry.field(
        description="Gen 2 metrics: corrections from the spellchecker."
    )
    word_count: int | None = strawberry.field(description="Gen 2 metrics: words in the essay.")
    correction_density: float | None = strawberry.field(description="Gen 2 metrics: corrections per 100 words.")
    processing_duration_ms: int | None = strawberry.field(description="Gen 2: how long the spellcheck took.")
    processor_version: str | None = strawberry.field(description="Gen 2: the spellchecker's version.")


@strawberry.type(description="An essay's comparative-judgement (CJ) assessment result.")
class CJAssessmentResult(PhaseResult):
    is_type_of = _phase_is(status.CJ_ASSESSMENT)

    rank: int | None = strawberry.field(
        description="1 is best. Gen 2 ranks include the anchor essays, which are not listed, so ranks can skip."
    )
    score: float | None = strawberry.field(description="Gen 2: the Bradley-Terry score; gen 1: the CJ score.")
    normalized_score: float | None = strawberry.field(description="Gen 2: score normalised to 0–1.")
    letter_grade: str | None = strawberry.field(description="Gen 2: grade A–F or U, with + or -.")
    confidence_score: float | None = strawberry.field(description="Gen 2: confidence in the grade, 0–1.")
    confidence_label: str | None = strawberry.field(description="Gen 2: HIGH, MID or LOW.")
    comparison_count: int | None = strawberry.field(description="Gen 2: pairwise comparisons made for the batch.")
    job_id: str | None = strawberry.field(resolver=resolvers.cj_job_id, description="The CJ service's job id.")
    assessment_method: str | None = strawberry.field(
        resolver=resolvers.cj_assessment_method, description="Gen 2: the assessment method."
    )
    model_used: str | None = strawberry.field(resolver=resolvers.cj_model_used, description="Gen 2: the LLM used.")
    feedback_uri: str | None = strawberry.field(resolver=resolvers.cj_feedback_uri, description="Gen 2: feedback.")
    metrics_uri: str | None = strawberry.field(resolver=resolvers.cj_metrics_uri, description="Gen 2: metrics.")


@strawberry.type(
    description="A result of a phase this schema has no typed result for yet; `details` holds its reported fields."
)
class OtherPhaseResult(PhaseResult):
    @classmethod
    @ignores_info
    def is_type_of(cls, obj: Any, info: Any) -> bool:
        return isinstance(obj, PhaseResultRow) and obj.phase not in (status.SPELLCHECK, status.CJ_ASSESSMENT)


@strawberry.type(description="Where a page of a connection sits in the whole list.")
class PageInfo:
    has_next_page: bool = strawberry.field(description="More items follow; ask again with `after: endCursor`.")
    has_previous_page: bool = strawberry.field(description="Items precede this page (it was asked `after` one).")
    start_cursor: str | None = strawberry.field(description="Cursor of the first item; null on an empty page.")
    end_cursor: str | None = strawberry.field(description="Cursor of the last item; null on an empty page.")


def _row_is(row_type: type) -> Any:
    """A federation entity's `is_type_of`: `_entities` returns rows, and the row's class tells the type."""

    @ignores_info
    def is_type_of(cls: type, obj: Any, info: Any) -> bool:
        return isinstance(obj, row_type)

    return classmethod(is_type_of)


@strawberry.federation.type(keys=[KEY], description="An essay slot of a batch, with the results of each phase.")
class Essay:
    is_type_of = _row_is(EssayRow)
    resolve_reference = staticmethod(resolvers.essay_reference)

    essay_id: strawberry.ID = strawberry.field(name="id", description="The essay id (assigned by the platform).")
    batch_id: str | None = strawberry.field(
        description="The batch the essay belongs to; null until an event links it to one."
    )
    batch: BatchRef | None = resolved(
        resolver=resolvers.essay_batch,
        graphql_type=BatchRef | None,
        description="The essay's batch; null when unknown or not visible to the X-User-ID user.",
    )
    filename: str | None = strawberry.field(description="The uploaded file's name (gen 2; null for gen 1).")
    file_upload_id: str | None = strawberry.field(description="The upload id of the essay's file.")
    original_text_storage_id: str | None = strawberry.field(description="Storage id of the extracted original text.")
    slot_fact_at: datetime | None = strawberry.field(
        name="slotAssignedAt", description="When the essay was assigned its slot in the batch."
    )
    phase_results: list[PhaseResult] = resolved(
        resolver=resolvers.essay_phase_results,
        graphql_type=list[PhaseResult],
        description="The newest result of every phase that reported one, in pipeline order.",
    )
    # Plain attribute reads (EssayRow properties): these are on every row of a batch screen.
    spellcheck: SpellcheckResult | None = strawberry.field(description="The spellcheck result; null until one arrives.")
    cj_assessment: CJAssessmentResult | None = strawberry.field(
        description="The CJ assessment result; null until one arrives."
    )


@strawberry.type(description="An essay in a connection, with its cursor.")
class EssayEdge:
    cursor: str = strawberry.field(description="Pass as `after` to continue after this essay.")
    node: Essay = strawberry.field(description="The essay.")


@strawberry.type(description="A page of a batch's essays, ordered by essay id.")
class EssayConnection:
    edges: list[EssayEdge] = resolved(
        resolver=connections.essay_edges, graphql_type=list[EssayEdge], description="The essays, with cursors."
    )
    nodes: list[Essay] = resolved(
        resolver=connections.essay_nodes, graphql_type=list[Essay], description="The essays, without cursors."
    )
    page_info: PageInfo = resolved(
        resolver=connections.essay_page_info, graphql_type=PageInfo, description="Position of this page."
    )
    total_count: int = strawberry.field(
        resolver=connections.essay_total, description="Essays that pass the filter, on all pages."
    )


@strawberry.federation.type(keys=[KEY], description="A teacher's batch of essays and where its processing stands.")
class Batch:
    is_type_of = _row_is(BatchRow)
    resolve_reference = staticmethod(resolvers.batch_reference)

    batch_id: strawberry.ID = strawberry.field(name="id", description="The batch id.")
    user_id: str = strawberry.field(description="The teacher who registered the batch.")
    assignment_id: str | None = strawberry.field(description="The assignment, once the CJ assessment named it.")
    course_code: str | None = strawberry.field(description="The course code (CourseCode), e.g. ENG5 or SV1.")
    class_id: str | None = strawberry.field(description="Gen 2: the class.")
    org_id: str | None = strawberry.field(description="Gen 2: the organisation.")
    status_value: BatchStatus = resolved(
        name="status",
        resolver=resolvers.batch_status,
        graphql_type=BatchStatus,
        description="The internal status; UNKNOWN for a status this service does not know.",
    )
    status: str = strawberry.field(name="statusCode", description="The internal status as stored (wire text).")
    client_status: BatchClientStatus = resolved(
        resolver=resolvers.batch_client_status,
        graphql_type=BatchClientStatus,
        description="The status the gateway shows (EVENTS.md §8 mapping; unknown internal statuses: PROCESSING).",
    )
    current_phase: PhaseName | None = resolved(
        resolver=resolvers.batch_current_phase,
        graphql_type=PhaseName | None,
        description="While the status is PROCESSING_PIPELINES: SPELLCHECK while any essay lacks a finished "
        "spellcheck, else CJ_ASSESSMENT while any lacks a finished CJ result; otherwise null.",
    )
    essay_count: int = strawberry.field(description="Essays the batch was registered with.")
    completed_essay_count: int = strawberry.field(description="Essays that completed processing.")
    failed_essay_count: int = strawberry.field(description="Essays that failed processing.")
    essay_ids: list[str] = strawberry.field(
        name="registeredEssayIds", description="The essay ids announced at registration."
    )
    requested_pipelines: list[str] | None = strawberry.field(
        description="The pipelines requested for the batch; null while no consumed event names them."
    )
    completed_phases: list[str] | None = strawberry.field(
        description="Phases the pipeline reported complete when it finished (gen 2)."
    )
    phase_outcomes: list[PhaseOutcome] = strawberry.field(
        description="Each phase's batch-level outcome, in the order they were reported."
    )
    created_at: datetime = strawberry.field(description="When the batch was registered.")
    last_updated: datetime = strawberry.field(description="The newest event time that changed the batch.")
    processing_started_at: datetime | None = strawberry.field(description="When the first phase began.")
    processing_completed_at: datetime | None = strawberry.field(description="When the batch reached its end status.")
    error: ErrorDetail | None = strawberry.field(description="Why the batch failed, when a phase failed critically.")
    student_prompt: StorageReference | None = strawberry.field(description="Gen 2: the student prompt's storage.")
    essays: EssayConnection = resolved(
        resolver=resolvers.batch_essays,
        graphql_type=EssayConnection,
        description="The batch's essays, a page at a time, optionally filtered by a phase's result status.",
    )


@strawberry.type(description="A batch in a connection, with its cursor.")
class BatchEdge:
    cursor: str = strawberry.field(description="Pass as `after` to continue after this batch.")
    node: Batch = strawberry.field(description="The batch.")


@strawberry.type(description="A page of batches, newest first.")
class BatchConnection:
    edges: list[BatchEdge] = resolved(
        resolver=connections.batch_edges, graphql_type=list[BatchEdge], description="The batches, with cursors."
    )
    nodes: list[Batch] = resolved(
        resolver=connections.batch_nodes, graphql_type=list[Batch], description="The batches, without cursors."
    )
    page_info: PageInfo = resolved(
        resolver=connections.batch_page_info, graphql_type=PageInfo, description="Position of this page."
    )
    total_count: int = strawberry.field(
        resolver=connections.batch_total, description="Batches that pass the filters, on all pages."
    )


@strawberry.type(description="The consumer's position in one Kafka partition.")
class PartitionPosition:
    topic: str = strawberry.field(description="The topic.")
    partition: int = strawberry.field(description="The partition.")
    next_offset: Long = strawberry.field(description="The next offset to apply; everything before it is applied.")
    high_watermark: Long | None = strawberry.field(
        description="The broker's high watermark at the last fetch; null until the consumer recorded one."
    )
    lag: Long | None = strawberry.field(description="Records not yet applied (highWatermark − nextOffset).")
    last_event_at: datetime | None = strawberry.field(description="Newest event time applied from this partition.")
    updated_at: datetime = strawberry.field(description="When the consumer last stored this position.")


@strawberry.type(description="How fresh the read model is: the consumer's progress, for developers and monitoring.")
class Projection:
    partitions: list[PartitionPosition] = resolved(
        resolver=resolvers.partitions,
        graphql_type=list[PartitionPosition],
        description="Every partition the consumer has applied records from.",
    )
    total_lag: Long | None = resolved(
        resolvers.total_lag, Long | None, "Sum of the known lags; null when no lag is known."
    )
    newest_event_at: datetime | None = strawberry.field(
        resolver=resolvers.newest_event_at, description="The newest event time applied, over all partitions."
    )
    last_applied_at: datetime | None = strawberry.field(
        resolver=resolvers.last_applied_at, description="When the consumer last committed a transaction."
    )
    quarantined: int = strawberry.field(
        name="quarantinedCount", description="Records set aside as unreadable and not yet replayed."
    )
    wait_for: bool = strawberry.field(
        resolver=resolvers.wait_for,
        description="Read-your-writes probe: waits until the record at `offset` of `topic`/`partition` is applied "
        "(the stored position is past it) and returns true, or false once `timeoutMs` passed. The wait happens "
        "before any field of the request is read; to fail the whole query when the record is not applied in time, "
        "use @consistent instead.",
    )


PHASE_RESULT_TYPES = (SpellcheckResult, CJAssessmentResult, OtherPhaseResult)
