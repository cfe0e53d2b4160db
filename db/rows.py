"""The rows the read queries return (db/reads.py): plain dataclasses, no GraphQL and no HTTP, so the GraphQL
types and the REST shim read the same ones. They are read-only by convention: BatchRow, EssayRow and PhaseResultRow,
built once per row a statement returns, are not declared frozen, since a frozen dataclass's `__init__` sets each field
through `object.__setattr__` and cost six to eight times as much (a 1,000-essay answer builds 3,000 of them).

The fields of BatchRow, EssayRow, PhaseResultRow and PositionRow named like a column of their table are selected in
field order and filled positionally (db/reads.py, `_columns`); what is derived (parsed JSON, attached results) comes
after them, with a default.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

Json = dict[str, Any]
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ErrorDetail:
    """The platform's ErrorDetail JSON (REST.md), as stored; fields the producer left out are None."""

    error_code: str | None
    message: str | None
    correlation_id: str | None
    timestamp: datetime | None
    service: str | None
    operation: str | None
    details: Any
    stack_trace: str | None
    trace_id: str | None
    span_id: str | None


@dataclass(frozen=True, slots=True)
class PhaseOutcome:
    """A batch-level phase outcome from ELS (`batches.phase_stats[phase]`)."""

    phase: str
    status: str
    completed_count: int
    failed_count: int
    completed_at: datetime | None


@dataclass(frozen=True, slots=True)
class StorageRef:
    """One entry of a StorageReferenceMetadata: where a piece of content lives in the content service."""

    content_type: str
    storage_id: str
    path: str | None


@dataclass(slots=True)
class BatchRow:
    batch_id: str
    user_id: str
    course_code: str | None
    class_id: str | None
    org_id: str | None
    essay_count: int
    essay_ids: list[str]
    requested_pipelines: list[str] | None
    student_prompt_ref: Json | None
    created_at: datetime
    status: str
    completed_essay_count: int
    failed_essay_count: int
    phase_stats: Json
    completed_phases: list[str] | None
    error_detail: Json | None
    assignment_id: str | None
    processing_started_at: datetime | None
    processing_completed_at: datetime | None
    last_updated: datetime
    # Parsed from the JSON columns above.
    error: ErrorDetail | None = None
    phase_outcomes: tuple[PhaseOutcome, ...] = ()
    student_prompt: StorageRef | None = None


@dataclass(slots=True)
class PhaseResultRow:
    essay_id: str
    phase: str
    batch_id: str | None
    status: str
    source_status: str | None
    started_at: datetime | None
    completed_at: datetime | None
    fact_at: datetime
    error_detail: Json | None
    details: Json | None
    correction_count: int | None
    corrected_text_storage_id: str | None
    total_corrections: int | None
    l2_dictionary_corrections: int | None
    spellchecker_corrections: int | None
    word_count: int | None
    correction_density: float | None
    processing_duration_ms: int | None
    processor_version: str | None
    rank: int | None
    score: float | None
    normalized_score: float | None
    letter_grade: str | None
    confidence_score: float | None
    confidence_label: str | None
    comparison_count: int | None
    error: ErrorDetail | None = None


@dataclass(slots=True)
class EssayRow:
    essay_id: str
    batch_id: str | None
    filename: str | None
    file_upload_id: str | None
    original_text_storage_id: str | None
    slot_fact_at: datetime | None
    # Phase name → newest result; filled from phase_results in the same read.
    results: dict[str, PhaseResultRow] = field(default_factory=dict)

    @property
    def spellcheck(self) -> PhaseResultRow | None:
        return self.results.get("spellcheck")

    @property
    def cj_assessment(self) -> PhaseResultRow | None:
        return self.results.get("cj_assessment")


@dataclass(frozen=True, slots=True)
class PositionRow:
    topic: str
    partition: int
    next_offset: int
    high_watermark: int | None
    last_event_at: datetime | None
    updated_at: datetime

    @property
    def lag(self) -> int | None:
        """Records the broker holds that the projection has not applied, when the high watermark is known."""
        return None if self.high_watermark is None else max(self.high_watermark - self.next_offset, 0)


@dataclass(frozen=True, slots=True)
class PositionsView:
    """How far the projection has got: the stored position of every partition and the records awaiting replay."""

    positions: list[PositionRow]
    quarantined: int


@dataclass(frozen=True, slots=True)
class PhaseProgress:
    """Per batch: its essays, and how many lack a terminal spellcheck / CJ result (EVENTS.md §8 current_phase)."""

    essays: int
    spellcheck_open: int
    cj_assessment_open: int


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    rows: list[T]
    has_next: bool
