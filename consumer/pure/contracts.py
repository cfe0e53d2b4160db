"""Pydantic models of the platform's events exactly as they are on the wire (contracts/EVENTS.md).

One model per payload and contract generation. Like the producers' own models they ignore unknown keys, and they
keep every enum-valued field (BatchStatus, PhaseName, EssayStatus, CourseCode…) as plain text: a value a newer
platform release adds must be stored, not crash the consumer. Types and required fields are checked as the
producers' models check them.

Values no producer can send are refused too, so the record is quarantined with the reason instead of stored: a
negative count or duration, and a timestamp outside EARLIEST_STAMP..LATEST_STAMP (a stamp decides the order facts
are folded in, so a year-0001 one would sort before everything the batch ever did).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

EARLIEST_STAMP = datetime(2000, 1, 1, tzinfo=UTC)
"""Earlier than anything the platform stamped: no stamp before it is real."""
LATEST_STAMP = datetime(2100, 1, 1, tzinfo=UTC)
"""Absurdly far ahead for a stamp; fixed rather than "now + slack", so a record validates the same on every replay."""


def _as_utc(value: datetime) -> datetime:
    # Producers stamp UTC; a naive stamp is read as UTC rather than as the consumer's local time.
    try:
        utc = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError:
        # Say 0001-01-01T00:00+01:00: valid ISO 8601, but before year 1 in UTC. Pydantic turns only ValueError
        # into a validation error (and so a quarantine reason); an OverflowError would stop the consumer.
        raise ValueError("timestamp is outside the representable range once converted to UTC") from None
    if not EARLIEST_STAMP <= utc < LATEST_STAMP:
        raise ValueError(f"timestamp {utc.isoformat()} is not between {EARLIEST_STAMP.year} and {LATEST_STAMP.year}")
    return utc


UtcDatetime = Annotated[datetime, AfterValidator(_as_utc)]
Count = Annotated[int, Field(ge=0)]
"""A number of things (essays, corrections, words) or a duration: never negative."""


class WireModel(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True)


class Envelope(WireModel):
    """`EventEnvelope`, identical in both generations. `data` is validated separately, per topic."""

    event_id: str | None = None
    event_type: str
    event_timestamp: UtcDatetime | None = None
    source_service: str
    schema_version: int = 1
    correlation_id: str | None = None
    data: dict[str, Any]
    metadata: dict[str, Any] | None = None


# --- shared building blocks (EVENTS.md §3) ---


class SystemProcessingMetadata(WireModel):
    entity_id: str
    entity_type: str
    parent_id: str | None = None
    timestamp: UtcDatetime | None = None
    processing_stage: str | None = None
    started_at: UtcDatetime | None = None
    completed_at: UtcDatetime | None = None
    event: str | None = None
    error_info: dict[str, Any] = Field(default_factory=dict)


class StorageReferenceMetadata(WireModel):
    references: dict[str, dict[str, str]] = Field(default_factory=dict)

    def first_id(self, content_type: str) -> str | None:
        """The first value of one content type's entry: gen 1's spellchecker writes `{"default": id}`, the
        helper writes `{"storage_id": id, "path": …}`; both give the id first."""
        entry = self.references.get(content_type)
        return next(iter(entry.values()), None) if entry else None


class SpellcheckMetrics(WireModel):
    total_corrections: Count
    l2_dictionary_corrections: Count
    spellchecker_corrections: Count
    word_count: Count
    correction_density: float


class EssayProcessingInputRef(WireModel):
    essay_id: str
    text_storage_id: str
    spellcheck_metrics: SpellcheckMetrics | None = None


class ProcessingUpdate(WireModel):
    """Base of the spellcheck and CJ payloads (`BaseEventData` + status and system metadata)."""

    event_name: str | None = None
    entity_id: str | None = None
    entity_type: str | None = None
    parent_id: str | None = None
    timestamp: UtcDatetime | None = None
    status: str
    system_metadata: SystemProcessingMetadata


# --- topic 1: huleedu.batch.essays.registered.v1 ---


class BatchEssaysRegisteredGen1(WireModel):
    entity_id: str
    expected_essay_count: Count
    essay_ids: list[str]
    metadata: SystemProcessingMetadata
    course_code: str
    essay_instructions: str
    user_id: str


class BatchEssaysRegisteredGen2(WireModel):
    entity_id: str
    expected_essay_count: Count
    essay_ids: list[str]
    metadata: SystemProcessingMetadata
    course_code: str
    user_id: str
    student_prompt_ref: StorageReferenceMetadata | None = None
    org_id: str | None = None
    class_id: str | None = None


# --- topic 2: huleedu.els.essay.slot.assigned.v1 ---


class EssaySlotAssignedGen1(WireModel):
    batch_id: str
    essay_id: str
    file_upload_id: str
    text_storage_id: str
    correlation_id: str | None = None
    timestamp: UtcDatetime | None = None


class EssaySlotAssignedGen2(EssaySlotAssignedGen1):
    original_file_name: str


# --- topic 3: huleedu.els.batch.phase.outcome.v1 (same in both generations) ---


class ELSBatchPhaseOutcome(WireModel):
    batch_id: str
    phase_name: str
    phase_status: str
    processed_essays: list[EssayProcessingInputRef]
    failed_essay_ids: list[str]
    correlation_id: str | None = None


# --- topic 4: huleedu.essay.spellcheck.completed.v1 (gen 1 only) ---


class SpellcheckResultDataGen1(ProcessingUpdate):
    original_text_storage_id: str
    storage_metadata: StorageReferenceMetadata | None = None
    corrections_made: Count | None = None


# --- topic 5: huleedu.cj_assessment.completed.v1 (gen 1 rich with rankings; gen 2 thin, ignored) ---


class CJRanking(WireModel):
    rank: int | None = None
    els_essay_id: str | None = None
    score: float | None = None


class CJAssessmentCompletedGen1(ProcessingUpdate):
    cj_assessment_job_id: str
    rankings: list[CJRanking]


# --- topic 6: huleedu.essay.spellcheck.results.v1 (gen 2) ---


class SpellcheckResultGen2(ProcessingUpdate):
    batch_id: str
    correlation_id: str
    user_id: str | None = None
    corrections_made: Count
    correction_metrics: SpellcheckMetrics
    original_text_storage_id: str
    corrected_text_storage_id: str | None = None
    processing_duration_ms: Count
    processor_version: str = "pyspellchecker_1.0_L2_swedish"


# --- topic 7: huleedu.assessment.result.published.v1 (gen 2) ---


class EssayResult(WireModel):
    essay_id: str
    normalized_score: float
    letter_grade: str
    confidence_score: float
    confidence_label: str
    bt_score: float
    rank: int
    is_anchor: bool = False
    feedback_uri: str | None = None
    metrics_uri: str | None = None
    display_name: str | None = None


class AssessmentResultGen2(WireModel):
    event_name: str | None = None
    entity_id: str | None = None
    timestamp: UtcDatetime | None = None
    batch_id: str
    cj_assessment_job_id: str
    assignment_id: str | None = Field(default=None, max_length=100)
    assessment_method: str
    model_used: str
    model_provider: str
    model_version: str | None = None
    essay_results: list[EssayResult]
    assessment_metadata: dict[str, Any] = Field(default_factory=dict)
    assessed_at: UtcDatetime | None = None


# --- topic 8: huleedu.batch.pipeline.completed.v1 (gen 2) ---


class BatchPipelineCompletedGen2(WireModel):
    batch_id: str
    completed_phases: list[str]
    final_status: str
    processing_duration_seconds: float
    successful_essay_count: Count
    failed_essay_count: Count
    correlation_id: str
    metadata: SystemProcessingMetadata
